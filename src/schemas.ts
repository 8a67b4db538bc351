import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';

/** The package root, from src/ (tsx) or dist/ (compiled) alike. */
export const packageRoot = fileURLToPath(new URL('../', import.meta.url));

export function schemaPath(name: 'clinical-note' | 'tagged-note'): string {
  return fileURLToPath(new URL(`../schemas/${name}.avsc`, import.meta.url));
}

const cache = new Map<string, avro.Type>();

/** Parsed Avro type for a schema shipped in schemas/ (loaded once). */
export function avroType(name: 'clinical-note' | 'tagged-note'): avro.Type {
  let type = cache.get(name);
  if (type === undefined) {
    type = avro.Type.forSchema(JSON.parse(readFileSync(schemaPath(name), 'utf8')) as avro.Schema);
    cache.set(name, type);
  }
  return type;
}
