import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
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
  { path: ['encoder', 'maxSequenceLength'], example: 512 },
  { path: ['llm', 'baseUrl'], example: 'http://127.0.0.1:8000' },
  { path: ['llm', 'model'], example: 'bc5cdr-llm' },
  { path: ['llm', 'apiKeyFile'], example: '/run/secrets/llm-api-key' },
  { path: ['llm', 'labels'], example: ['O', 'B-Chemical', 'I-Chemical'] },
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
  if (Array.isArray(example)) return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
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

/** Validates an already-parsed object (file content after env overrides) into a full config. */
export function validateConfig(raw: unknown): RouterConfig {
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    let field = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') field = [...issue.path.map(String), issue.keys[0]].filter((s) => s !== '').join('.');
    const more = parsed.error.issues.length > 1 ? ` (and ${parsed.error.issues.length - 1} more problem(s))` : '';
    const message = issue.code === 'unrecognized_keys' ? 'unknown option; check its spelling against the config reference' : issue.message;
    throw new ConfigError(field || '(root)', message + more);
  }
  const problems = crossFieldRules(parsed.data);
  if (problems.length > 0) throw new ConfigError(problems[0][0], problems[0][1]);
  return parsed.data;
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
