import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { ConfigSchema, crossFieldRules, type RouterConfig } from './schema.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const ENV_PREFIX = 'BIONER_';

function screaming(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** Options that have no default, so the walk over defaults cannot see them. */
const OPTIONAL_WITHOUT_DEFAULT: Array<{ path: string[]; example: Json }> = [
  { path: ['kafka', 'tls', 'caFile'], example: '/etc/bioner-router/kafka-tls/ca.crt' },
  { path: ['kafka', 'tls', 'certFile'], example: '/etc/bioner-router/kafka-tls/tls.crt' },
  { path: ['kafka', 'tls', 'keyFile'], example: '/etc/bioner-router/kafka-tls/tls.key' },
  { path: ['kafka', 'tls', 'servername'], example: 'kafka.example.internal' },
  { path: ['kafka', 'sasl', 'mechanism'], example: 'scram-sha-512' },
  { path: ['kafka', 'sasl', 'usernameFile'], example: '/etc/bioner-router/kafka-sasl/username' },
  { path: ['kafka', 'sasl', 'passwordFile'], example: '/etc/bioner-router/kafka-sasl/password' },
  { path: ['output', 'subject'], example: 'tagged-notes-value' },
  { path: ['schemaRegistry', 'url'], example: 'https://schema-registry:8081' },
  { path: ['schemaRegistry', 'usernameFile'], example: '/etc/bioner-router/schema-registry/username' },
  { path: ['schemaRegistry', 'passwordFile'], example: '/etc/bioner-router/schema-registry/password' },
  { path: ['schemaRegistry', 'tls', 'caFile'], example: '/etc/bioner-router/schema-registry/ca.crt' },
  { path: ['encoder', 'maxSequenceLength'], example: 512 },
  { path: ['llm', 'baseUrl'], example: 'http://127.0.0.1:8000' },
  { path: ['llm', 'model'], example: 'bc5cdr-generative' },
  { path: ['llm', 'apiKeyFile'], example: '/run/secrets/llm-api-key' },
  { path: ['llm', 'labels'], example: ['O', 'B-Chemical', 'I-Chemical'] },
  { path: ['llm', 'promptFile'], example: '/etc/bioner-router/prompt.yaml' },
  { path: ['routing', 'llmCap', 'maxSentenceShare'], example: 0.2 },
  { path: ['routing', 'llmCap', 'maxTokensPerMinute'], example: 20000 },
  { path: ['routing', 'lengthEstimator'], example: 'models/length-estimator/bc5cdr.json' },
  { path: ['routing', 'load', 'inFlightHigh'], example: 32 },
];

/** Every leaf option with the environment variable that overrides it, e.g. input.maxNoteBytes -> BIONER_INPUT_MAX_NOTE_BYTES. */
export function environmentOverrides(): Array<{ path: string[]; variable: string; example: Json }> {
  const defaults = ConfigSchema.parse({}) as unknown as JsonObject;
  const out: Array<{ path: string[]; variable: string; example: Json }> = [];
  const walk = (node: JsonObject, path: string[]): void => {
    for (const [key, value] of Object.entries(node)) {
      const next = [...path, key];
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) walk(value, next);
      else out.push({ path: next, variable: ENV_PREFIX + next.map(screaming).join('_'), example: value });
    }
  };
  walk(defaults, []);
  // Optional options without defaults still get a variable (the example fixes how the value is parsed).
  for (const { path, example } of OPTIONAL_WITHOUT_DEFAULT) {
    out.push({ path, variable: ENV_PREFIX + path.map(screaming).join('_'), example });
  }
  return out;
}

function parseEnvValue(raw: string, example: Json): Json {
  if (Array.isArray(example))
    return raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  if (typeof example === 'number') {
    const n = Number(raw);
    return Number.isFinite(n) && raw.trim() !== '' ? n : raw;
  }
  if (typeof example === 'boolean') {
    if (/^(true|1|yes)$/i.test(raw)) return true;
    if (/^(false|0|no)$/i.test(raw)) return false;
    return raw;
  }
  return raw;
}

export function applyEnvironment(raw: JsonObject, env: NodeJS.ProcessEnv): JsonObject {
  const result: JsonObject = structuredClone(raw);
  for (const { path, variable, example } of environmentOverrides()) {
    const value = env[variable];
    if (value === undefined) continue;
    let node: JsonObject = result;
    for (const key of path.slice(0, -1)) {
      const child = node[key];
      if (child === undefined || child === null || typeof child !== 'object' || Array.isArray(child)) node[key] = {};
      node = node[key] as JsonObject;
    }
    node[path[path.length - 1]] = parseEnvValue(value, example);
  }
  return result;
}

type Problem = [field: string, message: string];

/**
 * Every zod issue as [field, message]; an unknown-keys issue gives one problem
 * per key. Only a field's first issue is kept: later checks on the same value
 * follow from it (a broker without a port also fails the port-range check).
 */
function schemaProblems(issues: readonly z.core.$ZodIssue[]): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) {
    const at = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push([[...at, key].join('.'), 'unknown option; check its spelling against the config reference']);
    } else if (!out.some(([field]) => field === (at.join('.') || '(root)'))) {
      out.push([at.join('.') || '(root)', issue.message.replace(/\s*\n\s*/g, ' ')]);
    }
  }
  return out;
}

const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A copy of `raw` without the options zod refused (an array with a bad
 * element goes whole; a missing required option takes its parent object), so
 * the cross-field rules can still run on the rest, with the dotted paths
 * dropped; undefined when the root itself is wrong.
 */
function withoutRefused(raw: unknown, issues: readonly z.core.$ZodIssue[]): { rest: Record<string, unknown>; dropped: string[] } | undefined {
  if (!isMapping(raw)) return undefined;
  const paths = issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => [...i.path.map(String), k]) : [i.path.map(String)]));
  const dropped = new Set<string>();
  for (const path of paths) {
    if (path.length === 0) return undefined;
    // Decided on the original, so one drop cannot change where the next one lands.
    let node: Record<string, unknown> = raw;
    let i = 0;
    while (i < path.length - 1 && isMapping(node[path[i]])) {
      node = node[path[i]] as Record<string, unknown>;
      i++;
    }
    if (!(path[i] in node) && i > 0) i--;
    dropped.add(path.slice(0, i + 1).join('.'));
  }
  let rest: Record<string, unknown>;
  try {
    rest = structuredClone(raw);
  } catch {
    return undefined;
  }
  for (const d of dropped) {
    const keys = d.split('.');
    let node: unknown = rest;
    for (const k of keys.slice(0, -1)) node = isMapping(node) ? node[k] : undefined;
    if (isMapping(node)) delete node[keys[keys.length - 1]];
  }
  return { rest, dropped: [...dropped] };
}

/** Whether `text` names the option `path` or one below it (kafka.tls names kafka.tls.enabled, not kafka.tlsX). */
function mentions(text: string, path: string): boolean {
  for (let at = text.indexOf(path); at >= 0; at = text.indexOf(path, at + 1)) {
    if (!/[A-Za-z0-9_]/.test(text.charAt(at + path.length)) && !/[A-Za-z0-9_.]/.test(text.charAt(at - 1))) return true;
  }
  return false;
}

/**
 * Validates an already-parsed object (file content after env overrides) into a full config.
 * Every problem is reported at once: all schema issues, then the cross-field
 * rules over the options that passed (a rule that involves a refused option
 * is left out: it would judge the default standing in for it). The error's
 * `field` is the first problem's; its message has one line per problem.
 */
export function validateConfig(raw: unknown): RouterConfig {
  const parsed = ConfigSchema.safeParse(raw);
  let problems: Problem[];
  if (parsed.success) {
    problems = crossFieldRules(parsed.data);
  } else {
    problems = schemaProblems(parsed.error.issues);
    const partial = withoutRefused(raw, parsed.error.issues);
    const reparsed = partial === undefined ? undefined : ConfigSchema.safeParse(partial.rest);
    if (partial !== undefined && reparsed?.success === true) {
      for (const p of crossFieldRules(reparsed.data)) {
        if (!partial.dropped.some((d) => mentions(`${p[0]} ${p[1]}`, d))) problems.push(p);
      }
    }
  }
  if (problems.length === 0 && parsed.success) return parsed.data;
  const unique = problems.filter((p, i) => problems.findIndex((q) => q[0] === p[0] && q[1] === p[1]) === i);
  const [[field, first], ...others] = unique;
  throw new ConfigError(field, first, { more: others.map(([f, m]) => ({ field: f, message: m })) });
}

export function parseConfigText(text: string, fileName: string): JsonObject {
  let doc: unknown;
  try {
    doc = extname(fileName).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError('(file)', `${fileName} is not valid ${extname(fileName) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError('(root)', `${fileName} must hold a mapping of sections (kafka, input, output, ...)`);
  return doc as JsonObject;
}

export async function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<RouterConfig> {
  let raw: JsonObject = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new ConfigError('(file)', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    raw = parseConfigText(text, file);
  }
  return validateConfig(applyEnvironment(raw, env));
}
