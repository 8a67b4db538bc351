import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { cli, tinyIobFile } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const children: Array<ReturnType<typeof spawn>> = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

const iobFile = (): Promise<string> => tinyIobFile('bioner-llm-eval-');

function lastJson(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>;
}

test('serve-llm prints its URL, serves the eval of the remote adapters, and stops on SIGTERM', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve-llm', '--model', 'models/bc5cdr-decoder-classifier', '--port', '0'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  const [url] = (await once(lines, 'line')) as [string];
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((await fetch(`${url}/health`)).status, 200);

  const iob = await iobFile();
  const model = ['--model', 'models/bc5cdr-decoder-classifier'];
  const local = await cli(['eval', '--tagger', 'llm', ...model, '--data', iob, '--format', 'iob', '--json']);
  assert.equal(local.code, 0, local.stderr);
  const lj = lastJson(local.stdout);
  assert.equal(lj.tagger, 'llm');
  assert.equal(lj.adapter, 'onnx');
  assert.equal(lj.model, 'bc5cdr-decoder-classifier');
  assert.equal(typeof lj.ms_per_sentence, 'number');
  assert.equal(lj.sentences, 2);

  for (const adapter of ['openai', 'vllm-pooling']) {
    const r = await cli(['eval', '--tagger', 'llm', ...model, '--llm-adapter', adapter, '--llm-url', url, '--data', iob, '--format', 'iob', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = lastJson(r.stdout);
    assert.equal(j.tagger, 'llm');
    assert.equal(j.adapter, adapter);
    assert.equal(typeof j.ms_per_sentence, 'number');
    // The reference server is the same model: the scores match the in-process run.
    assert.equal(j.f1, lj.f1, adapter);
  }

  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0);
});

test('eval --tagger encoder reports the tagger and ms per sentence; bad flags are usage errors', async () => {
  const iob = await iobFile();
  const r = await cli(['eval', '--data', iob, '--format', 'iob', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = lastJson(r.stdout);
  assert.equal(j.tagger, 'encoder');
  assert.equal(typeof j.ms_per_sentence, 'number');
  assert.equal((await cli(['eval', '--tagger', 'gpt', '--data', iob])).code, 2);
  assert.equal((await cli(['eval', '--tagger', 'llm', '--llm-adapter', 'openai', '--data', iob])).code, 2);
  assert.equal((await cli(['eval', '--llm-url', 'http://x:1', '--data', iob])).code, 2);
});

test("eval --tagger router and frontier: budgets decide the LLM share; the replayed all-encoder / all-LLM points equal the taggers' own scores", async () => {
  // Some real devel sentences when the shared data is there (not copied into the repo), else the tiny fixture.
  const shared = fileURLToPath(new URL('../../../shared/data/BC5CDR-IOB/devel.tsv', import.meta.url));
  let iob = await iobFile();
  try {
    const head = (await readFile(shared, 'utf8')).split('\n\n').slice(0, 40).join('\n\n') + '\n\n';
    iob = join(await mkdtemp(join(tmpdir(), 'bioner-router-eval-')), 'devel.tsv');
    await writeFile(iob, head);
  } catch {
    // no shared data: the fixture above
  }
  const roomy = await cli(['eval', '--tagger', 'router', '--policy', 'llm', '--budget-ms', '100000', '--data', iob, '--format', 'iob', '--json']);
  assert.equal(roomy.code, 0, roomy.stderr);
  const r = lastJson(roomy.stdout);
  assert.equal(r.tagger, 'router');
  assert.equal(r.policy, 'llm');
  assert.equal(r.llm_share, 1);
  assert.ok((r.cost_ms_per_sentence as number) > 0);
  const tight = lastJson(
    (await cli(['eval', '--tagger', 'router', '--policy', 'llm', '--budget-ms', '0.01', '--data', iob, '--format', 'iob', '--json'])).stdout,
  );
  assert.equal(tight.llm_share, 0);
  assert.equal((await cli(['eval', '--tagger', 'router', '--policy', 'greedy', '--data', iob])).code, 1);
  assert.equal((await cli(['eval', '--policy', 'llm', '--data', iob])).code, 2, '--policy needs --tagger router');

  const out = await mkdtemp(join(tmpdir(), 'bioner-frontier-'));
  const f = await cli(['frontier', '--data', iob, '--format', 'iob', '--out', out]);
  assert.equal(f.code, 0, f.stderr);
  const summary = lastJson(f.stdout) as { all_encoder: { f1: number }; all_llm: { f1: number }; domain: string };
  assert.equal(summary.domain, 'bc5cdr');
  const enc = lastJson((await cli(['eval', '--data', iob, '--format', 'iob', '--json'])).stdout);
  const llm = lastJson((await cli(['eval', '--tagger', 'llm', '--data', iob, '--format', 'iob', '--json'])).stdout);
  assert.equal(summary.all_encoder.f1, enc.f1);
  assert.equal(summary.all_llm.f1, llm.f1);
  assert.equal(r.f1, llm.f1, 'the live router with every sentence on the LLM scores as the LLM alone');
  const svg = await readFile(join(out, 'bc5cdr.svg'), 'utf8');
  assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /all LLM/);
  const csv = (await readFile(join(out, 'bc5cdr.csv'), 'utf8')).trim().split('\n');
  assert.equal(csv[0], 'policy,budget_ms,f1,f1_3plus,cost_ms_per_sentence,llm_share,label');
  assert.ok(csv.length > 10);
});

const JNLPBA_DEVEL = fileURLToPath(new URL('../../../shared/data/JNLPBA-standoff/devel', import.meta.url));

test('eval --tagger router and frontier on brat standoff (JNLPBA devel subset): JSON fields, LLM share by budget, plot files', {
  skip: !existsSync(JNLPBA_DEVEL) && 'no ../shared/data/JNLPBA-standoff',
}, async () => {
  // A handful of real devel documents, copied at test time (never into the repo): enough for every length bucket, a few seconds per command.
  const data = await mkdtemp(join(tmpdir(), 'bioner-router-standoff-'));
  const out = await mkdtemp(join(tmpdir(), 'bioner-frontier-standoff-'));
  try {
    const docs = (await readdir(JNLPBA_DEVEL))
      .filter((f) => f.endsWith('.txt'))
      .sort()
      .slice(0, 6);
    assert.equal(docs.length, 6);
    for (const txt of docs) {
      const ann = txt.replace(/\.txt$/, '.ann');
      await copyFile(join(JNLPBA_DEVEL, txt), join(data, txt));
      await copyFile(join(JNLPBA_DEVEL, ann), join(data, ann));
    }
    const models = ['--model', 'models/jnlpba-encoder', '--llm-model', 'models/jnlpba-generative'];
    const router = async (policy: string, budgetMs: string): Promise<Record<string, unknown>> => {
      const r = await cli([
        'eval',
        '--tagger',
        'router',
        ...models,
        '--policy',
        policy,
        '--budget-ms',
        budgetMs,
        '--data',
        data,
        '--format',
        'standoff',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      return lastJson(r.stdout);
    };
    const roomy = await router('llm', '100000');
    assert.equal(roomy.tagger, 'router');
    assert.equal(roomy.policy, 'llm');
    assert.equal(roomy.domain, 'jnlpba', 'the domain follows the encoder bundle');
    // Standoff: one note per document.
    assert.equal(roomy.documents, docs.length);
    assert.ok((roomy.sentences as number) > docs.length);
    assert.equal(roomy.llm_share, 1);
    assert.ok((roomy.cost_ms_per_sentence as number) > 0);
    const f1 = roomy.f1 as number;
    assert.ok(f1 > 0 && f1 <= 1, `f1 ${f1}`);
    const byLength = roomy.by_length as Record<string, { support: number }>;
    assert.ok(byLength['3+'].support > 0, 'JNLPBA documents hold entities of 3+ words');
    const tight = await router('llm', '0.01');
    assert.equal(tight.llm_share, 0, 'no LLM call fits in 0.01 ms');

    const f = await cli(['frontier', ...models, '--data', data, '--format', 'standoff', '--out', out]);
    assert.equal(f.code, 0, f.stderr);
    const summary = lastJson(f.stdout) as { domain: string; notes: number; all_encoder: { f1: number }; all_llm: { f1: number }; llm_gain: number };
    assert.equal(summary.domain, 'jnlpba');
    assert.equal(summary.notes, docs.length);
    // The replayed end points score as the live router did with everything on one route (same notes, same taggers).
    assert.equal(summary.all_llm.f1, roomy.f1);
    assert.equal(summary.all_encoder.f1, tight.f1);
    assert.ok(Math.abs(summary.llm_gain - (summary.all_llm.f1 - summary.all_encoder.f1)) < 1e-3);
    const svg = await readFile(join(out, 'jnlpba.svg'), 'utf8');
    assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /all LLM/);
    assert.match(svg, /all encoder/);
    const csv = (await readFile(join(out, 'jnlpba.csv'), 'utf8')).trim().split('\n');
    assert.equal(csv[0], 'policy,budget_ms,f1,f1_3plus,cost_ms_per_sentence,llm_share,label');
    assert.ok(csv.length > 10, `${csv.length - 1} frontier rows`);
    const written = JSON.parse(await readFile(join(out, 'jnlpba.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(written, summary, 'the JSON file holds the printed summary');
  } finally {
    await rm(data, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});
