/**
 * `npm run docs:config`: writes the configuration reference into
 * docs/configuration.md (between the config-reference markers), generated from
 * the zod schema in src/config/schema.ts: one row per leaf option with its
 * environment variable (as src/config/load.ts applies them), its default, what
 * values it accepts and its `.describe()` text, then the cross-field rules,
 * worded by the rules' own messages. test/unit/config-docs.test.ts fails when
 * the file and the schema disagree.
 *
 * Usage: node --import tsx scripts/gen-config-docs.ts [--check]
 *   --check: write nothing; exit 1 when docs/configuration.md is out of date.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { environmentOverrides } from '../src/config/load.js';
import { ConfigSchema, crossFieldRules } from '../src/config/schema.js';

export const CONFIG_DOC_PATH = fileURLToPath(new URL('../docs/configuration.md', import.meta.url));
export const START_MARKER = '<!-- config-reference:start -->';
export const END_MARKER = '<!-- config-reference:end -->';

/** One leaf option of the schema, as the reference shows it. */
export interface ConfigOption {
  /** Dotted path, e.g. `input.maxNoteBytes`. */
  path: string;
  /** `BIONER_...`, or undefined for a record map (file only). */
  env: string | undefined;
  /** A map of user-chosen keys (`routing.topicBudgets`): set in the file only. */
  fileOnly: boolean;
  /** The value a config without this option gets; undefined when there is none. */
  defaultValue: unknown;
  /** Required inside its (optional) parent object, e.g. kafka.sasl.mechanism. */
  required: boolean;
  /** Accepted values and bounds, in words. */
  allowed: string;
  description: string | undefined;
}

type AnyZod = z.ZodType;

/** The schema under default/prefault/optional/nullable/readonly wrappers, and the first description met on the way in (outermost wins). */
function unwrap(schema: AnyZod): { inner: AnyZod; description: string | undefined; optional: boolean; hasDefault: boolean } {
  let node: AnyZod = schema;
  let description = schema.description;
  let optional = false;
  let hasDefault = false;
  for (;;) {
    if (node instanceof z.ZodDefault || node instanceof z.ZodPrefault) hasDefault = true;
    else if (node instanceof z.ZodOptional || node instanceof z.ZodNullable) optional = true;
    else if (!(node instanceof z.ZodReadonly)) break;
    node = (node as unknown as { unwrap(): AnyZod }).unwrap();
    description ??= node.description;
  }
  return { inner: node, description, optional, hasDefault };
}

type JsonSchema = {
  type?: string;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  minItems?: number;
  maxItems?: number;
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
};

const code = (v: unknown): string => `\`${JSON.stringify(v)}\``;

/** Accepted values in words, read from the leaf's JSON Schema (enums, literals and numeric bounds; patterns are left to the description). */
function describeAllowed(js: JsonSchema): string {
  if (js.enum !== undefined) return js.enum.map(code).join(', ');
  if (js.const !== undefined) return code(js.const);
  if (js.anyOf !== undefined) {
    if (js.anyOf.every((a) => a.const !== undefined)) return js.anyOf.map((a) => code(a.const)).join(', ');
    return js.anyOf.map(describeAllowed).join(' or ');
  }
  switch (js.type) {
    case 'boolean':
      return '`true`, `false`';
    case 'integer':
    case 'number': {
      // Zod writes the safe-integer range for .int(); it is no bound worth a word.
      const max = js.maximum === Number.MAX_SAFE_INTEGER || js.maximum === -Number.MAX_SAFE_INTEGER ? undefined : js.maximum;
      const min = js.minimum === -Number.MAX_SAFE_INTEGER ? undefined : js.minimum;
      let lo = js.exclusiveMinimum ?? min;
      let hi = js.exclusiveMaximum ?? max;
      let loOpen = js.exclusiveMinimum !== undefined;
      let hiOpen = js.exclusiveMaximum !== undefined;
      // An integer range reads better closed: (0, 10] is 1..10.
      if (js.type === 'integer' && lo !== undefined && hi !== undefined) {
        if (loOpen) [lo, loOpen] = [lo + 1, false];
        if (hiOpen) [hi, hiOpen] = [hi - 1, false];
      }
      const bounds =
        lo !== undefined && hi !== undefined
          ? !loOpen && !hiOpen
            ? ` ${lo}..${hi}`
            : ` in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'}`
          : lo !== undefined
            ? ` ${loOpen ? '>' : '≥'} ${lo}`
            : hi !== undefined
              ? ` ${hiOpen ? '<' : '≤'} ${hi}`
              : '';
      return `${js.type}${bounds}`;
    }
    case 'string':
      return js.minLength === 1 ? 'non-empty string' : 'string';
    case 'array': {
      const items = js.items === undefined ? 'values' : describeAllowed(js.items);
      const count = js.minItems !== undefined ? `, at least ${js.minItems}` : '';
      return `list of ${items}${count} (env: comma-separated)`;
    }
    case 'object':
      if (typeof js.additionalProperties === 'object') return `map of name to ${describeAllowed(js.additionalProperties)}`;
      return 'object';
    default:
      return '';
  }
}

const at = (value: unknown, path: readonly string[]): unknown =>
  path.reduce<unknown>((node, key) => (node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined), value);

/** Every leaf option of ConfigSchema, in schema order. */
export function configOptions(): ConfigOption[] {
  const defaults = ConfigSchema.parse({}) as unknown;
  const env = new Map(environmentOverrides().map((o) => [o.path.join('.'), o.variable]));
  const out: ConfigOption[] = [];
  const walk = (schema: AnyZod, path: string[], parentOptional: boolean): void => {
    const { inner, description, optional, hasDefault } = unwrap(schema);
    if (inner instanceof z.ZodObject) {
      for (const [key, child] of Object.entries(inner.shape as Record<string, AnyZod>))
        walk(child, [...path, key], parentOptional || (optional && !hasDefault));
      return;
    }
    const dotted = path.join('.');
    const fileOnly = inner instanceof z.ZodRecord;
    const js = z.toJSONSchema(inner, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
    out.push({
      path: dotted,
      env: fileOnly ? undefined : env.get(dotted),
      fileOnly,
      defaultValue: at(defaults, path),
      required: parentOptional && !optional && !hasDefault,
      allowed: describeAllowed(js),
      description,
    });
  };
  walk(ConfigSchema, [], false);
  return out;
}

/**
 * One config per cross-field rule, each breaking that rule alone from the
 * defaults; the reference words each rule with the message it produces. A
 * rule added to crossFieldRules needs an example here
 * (test/unit/config-docs.test.ts checks every rule of schema.ts is listed).
 * Untyped on purpose: an example gone stale fails here, with its index, not
 * the whole project's typecheck.
 */
const RULE_EXAMPLES: readonly unknown[] = [
  { kafka: { tls: { enabled: true, certFile: 'tls.crt' } } },
  { kafka: { tls: { enabled: true, keyFile: 'tls.key' } } },
  { kafka: { tls: { enabled: false, caFile: 'ca.crt', certFile: 'tls.crt', keyFile: 'tls.key', servername: 'kafka.internal' } } },
  { kafka: { sasl: { mechanism: 'plain', usernameFile: 'username', passwordFile: 'password' } } },
  { input: { heartbeatIntervalMs: 20000 } },
  { input: { maxWaitTimeMs: 30000 } },
  { shutdown: { drainTimeoutMs: 10000 } },
  { shutdown: { drainTimeoutMs: 300000 } },
  { processing: { concurrency: 65 } },
  { routing: { defaultBudgetMs: 30000 } },
  { routing: { topicBudgets: { '<topic>': 30000 } } },
  { routing: { load: { inFlightHigh: 65 } } },
  { routing: { policy: 'cascade', granularity: 'note' } },
  { output: { topic: 'clinical-notes' } },
  { output: { dlqTopic: 'tagged-notes' } },
  { output: { wireFormat: 'confluent' } },
  { output: { subject: 'tagged-notes-value' } },
  { schemaRegistry: { url: 'https://schema-registry:8081', usernameFile: 'username' } },
  { schemaRegistry: { tls: { caFile: 'ca.crt' } } },
  { schemaRegistry: { url: 'http://schema-registry:8081', tls: { caFile: 'ca.crt' } } },
  { llm: { timeoutMs: 20000 } },
  { llm: { adapter: 'openai' } },
  { llm: { baseUrl: 'http://vllm:8000/v1' } },
];

/** The cross-field rules as [fields, message], from crossFieldRules itself; fields sharing one message are listed together. */
export function crossFieldRuleList(): Array<{ fields: string[]; message: string }> {
  const out: Array<{ fields: string[]; message: string }> = [];
  for (const [i, example] of RULE_EXAMPLES.entries()) {
    const parsed = ConfigSchema.safeParse(example);
    if (!parsed.success)
      throw new Error(
        `RULE_EXAMPLES[${i}] in scripts/gen-config-docs.ts no longer fits the schema: update it (${JSON.stringify(example)}: ${parsed.error.issues.map((x) => `${x.path.join('.')}: ${x.message}`).join('; ')})`,
      );
    const problems = crossFieldRules(parsed.data);
    if (problems.length === 0)
      throw new Error(`RULE_EXAMPLES[${i}] in scripts/gen-config-docs.ts breaks no cross-field rule any more: update it (${JSON.stringify(example)})`);
    for (const [field, message] of problems) {
      const same = out.find((r) => r.message === message);
      if (same === undefined) out.push({ fields: [field], message });
      else if (!same.fields.includes(field)) same.fields.push(field);
    }
  }
  return out;
}

/**
 * Text for one table cell: one line, pipes escaped, and outside code spans `<`
 * and `>` escaped (GitHub would take `<domain>` for an HTML tag and hide it).
 */
function cell(text: string): string {
  return text
    .replace(/\r?\n/g, ' ')
    .split(/(`[^`]*`)/)
    .map((part) => (part.startsWith('`') ? part : part.replace(/</g, '&lt;').replace(/>/g, '&gt;')))
    .join('')
    .replace(/\|/g, '\\|');
}

function defaultCell(o: ConfigOption): string {
  if (o.required) return `(required in \`${o.path.slice(0, o.path.lastIndexOf('.'))}\`)`;
  if (o.defaultValue === undefined) return '(none)';
  return code(o.defaultValue);
}

/** The reference as it stands between the markers (without them). */
export function renderConfigReference(): string {
  const options = configOptions();
  const lines: string[] = [];
  const sections = [...new Set(options.map((o) => o.path.split('.')[0]))];
  for (const section of sections) {
    lines.push(`### \`${section}\``, '', '| option | environment | default | accepts | description |', '|---|---|---|---|---|');
    for (const o of options.filter((x) => x.path.split('.')[0] === section)) {
      const env = o.fileOnly ? '(file only)' : o.env === undefined ? '(none)' : `\`${o.env}\``;
      lines.push(`| \`${o.path}\` | ${env} | ${cell(defaultCell(o))} | ${cell(o.allowed)} | ${cell(o.description ?? '')} |`);
    }
    lines.push('');
  }
  lines.push(
    '### Cross-field rules',
    '',
    'Checked after the schema, over the whole config; each line is the message `run` prints (values in parentheses are the ones in effect, here the defaults).',
    '',
  );
  for (const rule of crossFieldRuleList()) lines.push(`- ${rule.fields.map((f) => `\`${f}\``).join(', ')}: ${rule.message}`);
  return lines.join('\n');
}

/** `doc` with the text between the markers replaced by `body`. */
export function replaceBetweenMarkers(doc: string, body: string): string {
  const start = doc.indexOf(START_MARKER);
  const end = doc.indexOf(END_MARKER);
  if (start < 0 || end < start) throw new Error(`${CONFIG_DOC_PATH} needs the markers ${START_MARKER} and ${END_MARKER}, in that order`);
  return `${doc.slice(0, start + START_MARKER.length)}\n${body}\n${doc.slice(end)}`;
}

/** The text between the markers of `doc`, as renderConfigReference returns it. */
export function betweenMarkers(doc: string): string | undefined {
  const start = doc.indexOf(START_MARKER);
  const end = doc.indexOf(END_MARKER);
  if (start < 0 || end < start) return undefined;
  return doc
    .slice(start + START_MARKER.length, end)
    .replace(/^\n/, '')
    .replace(/\n$/, '');
}

async function main(argv: string[]): Promise<void> {
  const doc = await readFile(CONFIG_DOC_PATH, 'utf8');
  const next = replaceBetweenMarkers(doc, renderConfigReference());
  if (argv.includes('--check')) {
    if (next !== doc) {
      process.stderr.write('docs/configuration.md is out of date with src/config/schema.ts: run `npm run docs:config`\n');
      process.exitCode = 1;
    }
    return;
  }
  if (next !== doc) await writeFile(CONFIG_DOC_PATH, next);
  process.stderr.write(`docs/configuration.md ${next === doc ? 'already up to date' : 'updated'} (${configOptions().length} options)\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main(process.argv.slice(2));
