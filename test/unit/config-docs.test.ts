import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CONFIG_DOC_PATH, betweenMarkers, configOptions, crossFieldRuleList, renderConfigReference } from '../../scripts/gen-config-docs.js';
import { ConfigSchema } from '../../src/config/schema.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('docs/configuration.md holds exactly the reference generated from the schema', async () => {
  const held = betweenMarkers(await readFile(CONFIG_DOC_PATH, 'utf8'));
  assert.notEqual(held, undefined, 'docs/configuration.md lost its <!-- config-reference:start/end --> markers');
  assert.equal(held, renderConfigReference(), 'docs/configuration.md is out of date with src/config/schema.ts: run `npm run docs:config`');
});

type JsonNode = { properties?: Record<string, JsonNode>; description?: string };

/** Leaf options read from the schema's JSON Schema: a walk independent of the generator's. */
function jsonSchemaLeaves(node: JsonNode, path: string[] = []): Array<{ path: string; description: string | undefined }> {
  if (node.properties === undefined) return [{ path: path.join('.'), description: node.description }];
  return Object.entries(node.properties).flatMap(([key, child]) => jsonSchemaLeaves(child, [...path, key]));
}

test('every leaf option of the schema has a description and a row in the reference', async () => {
  const leaves = jsonSchemaLeaves(z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as JsonNode);
  assert.ok(leaves.length > 60, `only ${leaves.length} leaves found`);
  const options = configOptions();
  assert.deepEqual(options.map((o) => o.path).sort(), leaves.map((l) => l.path).sort(), 'the generator walks the same leaves as the JSON Schema');
  const undescribed = options.filter((o) => (o.description ?? '').trim() === '').map((o) => o.path);
  assert.deepEqual(undescribed, [], 'give these options a .describe() in src/config/schema.ts');
  assert.deepEqual(
    leaves.filter((l) => (l.description ?? '').trim() === '').map((l) => l.path),
    [],
    'descriptions readable from the schema itself',
  );
  const doc = await readFile(CONFIG_DOC_PATH, 'utf8');
  for (const { path } of leaves) assert.ok(doc.includes(`| \`${path}\` |`), `${path} has no row in docs/configuration.md: run \`npm run docs:config\``);
  // Record maps have keys the user chooses, so no environment variable can name them.
  assert.deepEqual(
    options.filter((o) => o.fileOnly).map((o) => o.path),
    ['routing.topicBudgets', 'routing.domains'],
  );
  assert.ok(doc.includes('| `routing.topicBudgets` | (file only) |'));
  assert.ok(doc.includes('| `routing.domains` | (file only) |'));
});

test('every cross-field rule of schema.ts is listed in the reference, worded by its own message', async () => {
  const source = await readFile(join(root, 'src/config/schema.ts'), 'utf8');
  const body = source.slice(source.indexOf('export function crossFieldRules'));
  const sites = [...body.matchAll(/problems\.push\(\[([\s\S]*?),\s*(['`])((?:(?!\2)[\s\S])*)\2\s*\]\)/g)].map((m) => ({ field: m[1].trim(), message: m[3] }));
  assert.ok(sites.length >= 15, `only ${sites.length} rules found in crossFieldRules: has its shape changed?`);
  const rules = crossFieldRuleList();
  for (const site of sites) {
    const prefix = site.message.split('${')[0];
    // A literal field ('a.b' or `a.${key}`) must match too; a computed one (a ternary) is checked by message only.
    const literal = /^(['`])([^'`]*)\1$/.exec(site.field)?.[2];
    const fieldPattern =
      literal === undefined
        ? undefined
        : new RegExp(
            `^${literal
              .split(/\$\{[^}]*\}/)
              .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
              .join('[^.]+')}$`,
          );
    const listed = rules.some((r) => r.message.startsWith(prefix) && (fieldPattern === undefined || r.fields.some((f) => fieldPattern.test(f))));
    assert.ok(
      listed,
      `rule ${site.field}: "${site.message}" has no example in RULE_EXAMPLES (scripts/gen-config-docs.ts); add one and run \`npm run docs:config\``,
    );
  }
});

/** GitHub's heading anchor: lowercase, punctuation dropped (letters, digits, `_`, `-` and spaces kept), spaces to `-`. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}_\- ]/gu, '')
    .replace(/ /g, '-');
}

/** Lines outside fenced code blocks. */
function proseLines(markdown: string): string[] {
  let fence: string | undefined;
  const out: string[] = [];
  for (const line of markdown.split('\n')) {
    const m = /^\s*(```|~~~)/.exec(line);
    if (m !== null) {
      if (fence === undefined) fence = m[1];
      else if (m[1] === fence) fence = undefined;
      continue;
    }
    if (fence === undefined) out.push(line);
  }
  return out;
}

/** The anchors of a Markdown file's headings, with GitHub's -1, -2 suffixes for repeats. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of proseLines(markdown)) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (m === null) continue;
    const base = slug(m[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Link targets of a Markdown file (inline links and images), code spans left out. */
function linkTargets(markdown: string): string[] {
  return proseLines(markdown).flatMap((line) => [...line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1]));
}

test('GitHub slugs as the link check computes them', () => {
  assert.equal(slug('Kafka security (SASL, TLS)'), 'kafka-security-sasl-tls');
  assert.equal(slug('Output: `schemas/tagged-note.avsc`'), 'output-schemastagged-noteavsc');
  assert.equal(slug('Policies (`routing.policy`), one decision record'), 'policies-routingpolicy-one-decision-record');
  assert.equal(slug('Reference server: `bioner-router serve-llm`'), 'reference-server-bioner-router-serve-llm');
  assert.deepEqual([...anchors('# A\n## A\n```\n# not a heading\n```\n### A')], ['a', 'a-1', 'a-2']);
});

test('every relative link and #anchor in README.md and docs/*.md resolves', async () => {
  const files = [join(root, 'README.md'), ...(await readdir(join(root, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => join(root, 'docs', f))];
  assert.ok(files.length >= 7, files.join(', '));
  const cache = new Map<string, Set<string>>();
  const anchorsOf = async (file: string): Promise<Set<string>> => {
    const known = cache.get(file);
    if (known !== undefined) return known;
    const set = anchors(await readFile(file, 'utf8'));
    cache.set(file, set);
    return set;
  };
  const broken: string[] = [];
  let checked = 0;
  for (const file of files) {
    for (const target of linkTargets(await readFile(file, 'utf8'))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      checked++;
      const hash = target.indexOf('#');
      const path = hash < 0 ? target : target.slice(0, hash);
      const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
      const to = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
      const where = `${relative(root, file)}: ${target}`;
      if (!existsSync(to)) broken.push(`${where} (no such file)`);
      else if (anchor !== undefined && to.endsWith('.md') && !(await anchorsOf(to)).has(anchor)) broken.push(`${where} (no heading with that anchor)`);
    }
  }
  assert.ok(checked > 40, `only ${checked} links checked`);
  assert.deepEqual(broken, []);
});
