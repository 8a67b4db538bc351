import assert from 'node:assert/strict';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { cli, tinyIobFile } from '../helpers/cli.js';

const _ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('tag prints spans whose code-point offsets point at the text', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-tag-'));
  const text = '𝛼 Patient received cisplatin and developed hypertension.\n';
  const file = join(dir, 'note.txt');
  await writeFile(file, text);
  const { stdout, code } = await cli(['tag', file]);
  assert.equal(code, 0);
  const out = JSON.parse(stdout) as { spans: Array<{ start: number; end: number; label: string; text: string }> };
  const cps = Array.from(text);
  assert.ok(out.spans.length >= 2);
  for (const s of out.spans) assert.equal(cps.slice(s.start, s.end).join(''), s.text);
  assert.ok(out.spans.some((s) => s.text === 'cisplatin' && s.label === 'Chemical'));
});

test('eval --json scores IOB and standoff data end to end', async () => {
  // Gold spans the model is expected to get, plus one it may miss: the JSON shape and bounds are what is asserted.
  const iob = await tinyIobFile();
  const r = await cli(['eval', '--data', iob, '--format', 'iob', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as Record<string, unknown> & {
    by_length: Record<string, { f1: number }>;
    by_label: Record<string, unknown>;
  };
  for (const k of ['f1', 'precision', 'recall', 'sentences_per_s']) assert.equal(typeof last[k], 'number', k);
  assert.deepEqual(Object.keys(last.by_length).sort(), ['1', '2', '3+']);
  assert.deepEqual(Object.keys(last.by_label).sort(), ['Chemical', 'Disease']);
  assert.ok((last.f1 as number) > 0.5, `the model tags the easy sentences (f1 ${String(last.f1)})`);

  const standoff = join(dirname(iob), 'standoff');
  await mkdir(standoff);
  const text = 'Cisplatin causes nephrotoxicity. Hypertension was treated with furosemide.';
  await writeFile(join(standoff, 'doc1.txt'), text);
  const ann = [
    ['T1', 'Chemical', 'Cisplatin'],
    ['T2', 'Disease', 'nephrotoxicity'],
    ['T3', 'Disease', 'Hypertension'],
    ['T4', 'Chemical', 'furosemide'],
  ]
    .map(([id, label, s]) => `${id}\t${label} ${text.indexOf(s)} ${text.indexOf(s) + s.length}\t${s}`)
    .join('\n');
  await writeFile(join(standoff, 'doc1.ann'), ann + '\n');
  const s = await cli(['eval', '--data', standoff, '--format', 'standoff', '--json']);
  assert.equal(s.code, 0, s.stderr);
  const sj = JSON.parse(s.stdout.trim().split('\n').at(-1) as string) as { f1: number; sentences: number };
  assert.equal(sj.sentences, 2);
  assert.ok(sj.f1 > 0.5, `character-offset scoring through the text stage works (f1 ${sj.f1})`);
});

test('usage errors exit 2 and config errors name the field', async () => {
  const bad = await cli(['frobnicate']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown command/);
  const dir = await mkdtemp(join(tmpdir(), 'bioner-cfg-'));
  const cfg = join(dir, 'c.yaml');
  await writeFile(cfg, 'input:\n  format: xml\n');
  const r = await cli(['run', '--config', cfg]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /CONFIG_INVALID: config field "input\.format"/);
});
