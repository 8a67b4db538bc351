/**
 * `bioner-router calibrate` as a user runs it: the CLI in a child process,
 * the LLM behind real HTTP (serve-llm with the reference decoder), the file
 * it writes loaded by the router's own loader and planned with.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { readIob } from '../../src/eval/datasets.js';
import { evaluateIob } from '../../src/eval/evaluate.js';
import { loadCalibration } from '../../src/route/calibration.js';
import { createRouter } from '../../src/route/index.js';
import { loadLengthEstimator } from '../../src/route/length-estimate.js';
import { EncoderTagger } from '../../src/taggers/encoder.js';
import { startLlmServer, type LlmServer } from '../../src/taggers/llm/reference-server.js';
import { prepareText } from '../../src/text/index.js';
import { cli } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEVEL = join(ROOT, '../shared/data/BC5CDR-IOB/devel.tsv');

let server: LlmServer;
let dir = '';
const children: Array<ReturnType<typeof spawn>> = [];

before(async () => {
  server = await startLlmServer({ modelDir: join(ROOT, 'models/bc5cdr-decoder-classifier'), port: 0 });
  dir = await mkdtemp(join(tmpdir(), 'bioner-calibrate-'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

async function configFile(name: string, llm: Record<string, unknown>): Promise<string> {
  const file = join(dir, `${name}.json`);
  await writeFile(file, JSON.stringify({ llm: { modelDir: 'models/bc5cdr-decoder-classifier', ...llm }, logging: { level: 'warn' } }));
  return file;
}

interface RouteEntry {
  f1: Record<string, number | null>;
  f1_ci95: Record<string, [number, number] | null>;
  latency: { overhead_ms: number; ms_per_token: number; p50_ms: number; p95_ms: number; calls: number; min_tokens: number; max_tokens: number };
  realignment?: Record<string, number>;
  scores?: { spans: number; fromLogprobs: number };
}
interface Entry {
  partial: boolean;
  sentences: number;
  tokens: number;
  routes: { encoder: RouteEntry; llm: RouteEntry };
  llm_gain: Record<string, number | null>;
  llm_gain_ci95: Record<string, [number, number] | null>;
  bootstrap: { unit: string; units: number; seed: number };
}

test('calibrate over HTTP (openai and vllm-pooling) writes an entry the router plans with', async (t) => {
  if (!existsSync(DEVEL)) {
    t.skip('no ../shared/data (BC5CDR-IOB devel)');
    return;
  }
  // A few dozen devel sentences, as a file of their own so `eval` can score exactly the same ones.
  const sentences = (await readIob(DEVEL)).slice(0, 40);
  const data = join(dir, 'devel-40.tsv');
  await writeFile(data, sentences.map((s) => `${s.tokens.map((tok, i) => `${tok}\t${s.tags[i]}`).join('\n')}\n\n`).join(''));
  const out = join(dir, 'calibration.json');
  await copyFile(join(ROOT, 'models/calibration.json'), out);
  const shipped = JSON.parse(await readFile(out, 'utf8')) as { datasets: Record<string, unknown> };

  const encoder = await EncoderTagger.load(join(ROOT, 'models/bc5cdr-encoder'));
  const encoderEval = await evaluateIob(encoder, data);
  await encoder.close();

  const entries: Record<string, Entry> = {};
  for (const [domain, llm] of [
    ['served-openai', { adapter: 'openai', baseUrl: server.url, structuredOutputs: 'regex' }],
    ['served-pooling', { adapter: 'vllm-pooling', baseUrl: server.url }],
  ] as const) {
    const before = { ...server.stats.byPath };
    const r = await cli([
      'calibrate',
      '--config',
      await configFile(domain, llm),
      '--data',
      data,
      '--format',
      'iob',
      '--out',
      out,
      '--domain',
      domain,
      '--bootstrap',
      '200',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /calibrate: 40\/40 sentences \(100%\), [\d.]+ sentences\/s/, 'progress on stderr');
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as { domain: string; partial: boolean };
    assert.deepEqual([summary.domain, summary.partial], [domain, false]);
    const path = llm.adapter === 'openai' ? '/v1/chat/completions' : '/pooling';
    assert.equal((server.stats.byPath[path] ?? 0) - (before[path] ?? 0), 40, `one ${path} request per sentence, over HTTP`);
    const file = JSON.parse(await readFile(out, 'utf8')) as { datasets: Record<string, Entry> };
    entries[domain] = file.datasets[domain];
    for (const kept of Object.keys(shipped.datasets)) assert.ok(kept in file.datasets, `${kept} kept`);
  }
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.endsWith('.tmp')),
    [],
    'no temporary file left',
  );

  for (const [domain, e] of Object.entries(entries)) {
    assert.equal(e.partial, false);
    assert.equal(e.sentences, 40);
    assert.deepEqual([e.bootstrap.unit, e.bootstrap.units], ['sentence', 40]);
    // The encoder's strict F1 is exactly what `eval` reports on the same sentences.
    assert.ok(Math.abs((e.routes.encoder.f1.all ?? -1) - encoderEval.f1) < 1e-6, `${domain}: ${e.routes.encoder.f1.all} vs eval ${encoderEval.f1}`);
    for (const b of ['1', '2', '3+'] as const) assert.ok(Math.abs((e.routes.encoder.f1[b] ?? 0) - encoderEval.by_length[b].f1) < 1e-6, `${domain} bucket ${b}`);
    for (const route of ['encoder', 'llm'] as const) {
      const r = e.routes[route];
      const ci = r.f1_ci95.all;
      assert.ok(ci !== null && ci[0] <= (r.f1.all as number) && (r.f1.all as number) <= ci[1], `${domain} ${route}: point estimate inside its interval`);
      assert.ok(r.latency.calls >= 5 && r.latency.min_tokens < r.latency.max_tokens, 'calls of different sizes');
      assert.ok(r.latency.p50_ms > 0 && r.latency.p50_ms <= r.latency.p95_ms);
      assert.ok(r.latency.overhead_ms >= 0 && r.latency.ms_per_token >= 0);
    }
    const gain = (e.routes.llm.f1.all as number) - (e.routes.encoder.f1.all as number);
    assert.ok(Math.abs((e.llm_gain.all as number) - gain) < 1e-5);
    assert.ok(e.llm_gain_ci95.all !== null);
  }
  // Same served model behind both adapters: the same LLM F1.
  assert.equal(entries['served-openai'].routes.llm.f1.all, entries['served-pooling'].routes.llm.f1.all);
  const realign = entries['served-openai'].routes.llm.realignment;
  assert.ok(
    realign !== undefined &&
      realign.tokens === entries['served-openai'].tokens &&
      realign.matched === realign.tokens &&
      realign.changed + realign.dropped === 0,
  );
  const scores = entries['served-openai'].routes.llm.scores;
  assert.ok(scores !== undefined && scores.spans > 0 && scores.fromLogprobs === scores.spans, 'every LLM span scored from logprobs');

  // The router, as `run` builds it, starts from the file: the fitted lines and the measured gains.
  const calibration = await loadCalibration(out, 'served-openai');
  const llmLine = entries['served-openai'].routes.llm.latency;
  assert.deepEqual(calibration.costs.llm, { overheadMs: llmLine.overhead_ms, msPerToken: llmLine.ms_per_token });
  const router = createRouter({ policy: 'length-aware', calibration, estimator: await loadLengthEstimator(join(ROOT, 'models/length-estimator/bc5cdr.json')) });
  const note = prepareText('Cisplatin induced acute renal failure. The patient was given furosemide for hypertension.').sentences;
  const decision = router.plan({ sentences: note, budget: { budgetMs: 60_000, source: 'default', effectiveMs: 60_000, loadFactor: 1 }, elapsedMs: 0 });
  const tokens = note.reduce((n, s) => n + s.tokens.length, 0);
  const llmTokens = note.filter((_, i) => decision.sentenceRoutes[i] === 'llm').reduce((n, s) => n + s.tokens.length, 0);
  const encLine = entries['served-openai'].routes.encoder.latency;
  if (tokens - llmTokens > 0)
    assert.ok(
      Math.abs(decision.predictedEncoderMs - (encLine.overhead_ms + encLine.ms_per_token * (tokens - llmTokens))) < 1e-6,
      'planned with the fitted encoder line',
    );
  if (llmTokens > 0)
    assert.ok(Math.abs(decision.predictedLlmMs - (llmLine.overhead_ms + llmLine.ms_per_token * llmTokens)) < 1e-6, 'planned with the fitted LLM line');
  assert.ok(Math.abs(router.expectedGain(null) - (entries['served-openai'].llm_gain.all as number)) < 1e-5, 'the gain the router expects is the measured one');
  // Whatever the measured gains say, the decision follows them.
  const positive = (calibration.gains?.long ?? 0) > 0 || (calibration.gains?.short ?? 0) > 0;
  if (!positive) assert.ok(decision.reasons.includes('llm_gain_not_positive') && llmTokens === 0, decision.reasons.join());
});

test('SIGINT stops calibrate and writes what was measured, marked partial, never a torn file', async () => {
  // Enough sentences that the run is far from done when interrupted (no corpus needed).
  const lines: string[] = [];
  for (let i = 0; i < 3000; i++) {
    lines.push(`Cisplatin\tB-Chemical\ninduced\tO\nacute\tB-Disease\nrenal\tI-Disease\nfailure\tI-Disease\nin\tO\npatient\tO\nP${i}\tO\n.\tO\n`);
    lines.push(`Essential\tB-Disease\nhypertension\tI-Disease\nwas\tO\ntreated\tO\nwith\tO\nfurosemide\tB-Chemical\n.\tO\n`);
  }
  const data = join(dir, 'big.tsv');
  await writeFile(data, lines.join('\n'));
  const out = join(dir, 'interrupted.json');
  const config = await configFile('interrupt', { adapter: 'openai', baseUrl: server.url });
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'calibrate', '--config', config, '--data', data, '--out', out, '--domain', 'cut', '--bootstrap', '100'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  const stderr = createInterface({ input: child.stderr });
  const exited = once(child, 'exit');
  const deadline = Date.now() + 60_000;
  let progress: string | undefined;
  for await (const line of stderr) {
    if (/^calibrate: \d+\/6000 sentences \(\d+%\), [\d.]+ sentences\/s, about \d+ s left$/.test(line)) {
      progress = line;
      break;
    }
    assert.ok(Date.now() < deadline, 'a progress line within 60 s');
  }
  assert.ok(progress !== undefined, 'progress line seen');
  child.kill('SIGINT');
  const [code] = (await exited) as [number | null];
  assert.equal(code, 130, 'interrupted');
  const file = JSON.parse(await readFile(out, 'utf8')) as { datasets: Record<string, Entry & { interrupted?: boolean }> };
  const entry = file.datasets.cut;
  assert.equal(entry.partial, true);
  assert.equal(entry.interrupted, true);
  assert.ok(entry.sentences > 0 && entry.sentences < 6000, `measured ${entry.sentences} of 6000`);
  assert.ok(entry.routes.llm.latency.calls > 0);
  const summary = JSON.parse(stdout.trim().split('\n').at(-1) as string) as { partial: boolean };
  assert.equal(summary.partial, true);
  const calibration = await loadCalibration(out, 'cut');
  assert.equal(calibration.partial, true);
  assert.ok(calibration.gains !== null, 'a partial entry still gives the router its gains');
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.endsWith('.tmp')),
    [],
  );
});

test('calibrate: a bad command line is a usage error', async () => {
  const r = await cli(['calibrate', '--format', 'iob']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /calibrate needs --data PATH/);
  const bad = await cli(['calibrate', '--data', 'x', '--limit', '0']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--limit must be a positive integer/);
});
