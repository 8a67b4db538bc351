import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DataFormatError } from '../../src/errors.js';
import { bootstrapF1, bucketF1, F1_BUCKETS, sumCounts, unitCounts } from '../../src/eval/bootstrap.js';
import { fitLatency, writeCalibrationEntry } from '../../src/eval/calibrate.js';
import { mulberry32 } from '../../src/eval/random.js';
import { StrictScorer, type EvalSpan } from '../../src/eval/scorer.js';
import { loadCalibration } from '../../src/route/calibration.js';

/** Random gold/pred spans over a few positions, with repeats and every length bucket. */
function randomUnit(random: () => number): { gold: EvalSpan[]; pred: EvalSpan[] } {
  const span = (): EvalSpan => {
    const start = Math.floor(random() * 6);
    const words = 1 + Math.floor(random() * 4);
    return { start, end: start + words, label: random() < 0.5 ? 'A' : 'B', words };
  };
  const gold = Array.from({ length: Math.floor(random() * 4) }, span);
  const pred = [...gold.filter(() => random() < 0.6), ...Array.from({ length: Math.floor(random() * 3) }, span)];
  return { gold, pred };
}

test("per-unit counts add up to StrictScorer's figures, bucket by bucket", () => {
  const random = mulberry32(7);
  const scorer = new StrictScorer();
  const units = Array.from({ length: 300 }, () => randomUnit(random));
  const counts = units.map((u) => {
    scorer.add(u.gold, u.pred);
    return unitCounts(u.gold, u.pred);
  });
  const total = sumCounts(counts);
  const r = scorer.result();
  assert.ok(Math.abs((bucketF1(total, 3) ?? -1) - r.f1) < 1e-12);
  for (const [k, b] of (['1', '2', '3+'] as const).entries()) assert.ok(Math.abs((bucketF1(total, k) ?? -1) - r.by_length[b].f1) < 1e-12, b);
  assert.equal(bucketF1(new Float64Array(16), 0), null, 'nothing to score: null');
});

test('the bootstrap is seeded, paired, and its interval holds the point estimate', () => {
  const random = mulberry32(3);
  const a = Array.from({ length: 200 }, () => randomUnit(random));
  const enc = a.map((u) => unitCounts(u.gold, u.pred));
  // A "better" route: every gold span found in three units out of four.
  const llm = a.map((u, i) => unitCounts(u.gold, i % 4 === 0 ? u.pred : u.gold));
  const one = bootstrapF1([enc, llm], 300, 11);
  assert.deepEqual(bootstrapF1([enc, llm], 300, 11), one, 'same seed, same intervals');
  assert.notDeepEqual(bootstrapF1([enc, llm], 300, 12), one);
  for (const [k, b] of F1_BUCKETS.entries()) {
    const point = bucketF1(sumCounts(enc), k) as number;
    const ci = one.f1[0][b];
    assert.ok(ci !== null && ci[0] <= point && point <= ci[1], `${b}: ${point} in ${ci}`);
    const gain = (bucketF1(sumCounts(llm), k) as number) - point;
    const g = one.gain?.[b];
    assert.ok(g !== null && g !== undefined && g[0] <= gain && gain <= g[1] && g[0] > 0, `gain ${b}: ${gain} in ${g}`);
  }
});

test('the latency line is a least-squares fit over calls of different sizes', () => {
  const random = mulberry32(5);
  const calls = Array.from({ length: 400 }, () => {
    const tokens = 5 + Math.floor(random() * 300);
    return { tokens, ms: 12 + 0.25 * tokens + (random() - 0.5) * 2 };
  });
  const fit = fitLatency(calls);
  assert.ok(fit !== undefined);
  assert.ok(Math.abs(fit.overhead_ms - 12) < 0.5, String(fit.overhead_ms));
  assert.ok(Math.abs(fit.ms_per_token - 0.25) < 0.005, String(fit.ms_per_token));
  assert.ok(fit.p50_ms <= fit.p95_ms && fit.calls === 400 && fit.min_tokens >= 5);
  assert.deepEqual(
    fitLatency([
      { tokens: 10, ms: 5 },
      { tokens: 10, ms: 7 },
    ])?.overhead_ms,
    0,
    'one size: all per token',
  );
  assert.equal(fitLatency([]), undefined);
});

test('writing an entry merges it into the file atomically; the router loads it; a foreign file is left alone', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-calib-'));
  const file = join(dir, 'calibration.json');
  await writeFile(file, JSON.stringify({ generated_by: 'npm run eval:table', datasets: { other: { routes: { encoder: { ms_per_token: 0.02 } } } } }));
  const entry = {
    partial: true,
    support_by_length: { '1': 10, '2': 5, '3+': 2 },
    routes: {
      encoder: {
        f1: { '1': 0.8, '2': 0.7, '3+': 0.5, all: 0.75 },
        ms_per_token: 0.03,
        latency: { overhead_ms: 1.5, ms_per_token: 0.04, p50_ms: 3, p95_ms: 6, calls: 9 },
      },
      llm: {
        f1: { '1': 0.7, '2': 0.7, '3+': 0.6, all: 0.7 },
        ms_per_token: 0.5,
        latency: { overhead_ms: 20, ms_per_token: 0.9, p50_ms: 40, p95_ms: 90, calls: 9 },
      },
    },
  };
  await writeCalibrationEntry(file, 'mine', entry);
  const written = JSON.parse(await readFile(file, 'utf8')) as { generated_by: string; datasets: Record<string, unknown> };
  assert.equal(written.generated_by, 'npm run eval:table', 'top-level fields kept');
  assert.deepEqual(Object.keys(written.datasets).sort(), ['mine', 'other']);
  assert.deepEqual(await readdir(dir), ['calibration.json'], 'no temporary file left');
  const c = await loadCalibration(file, 'mine');
  assert.deepEqual(
    c.costs,
    { encoder: { overheadMs: 1.5, msPerToken: 0.04 }, llm: { overheadMs: 20, msPerToken: 0.9 } },
    'the fitted lines, not the batched per-token costs',
  );
  assert.equal(c.partial, true);
  assert.ok(c.gains !== null && Math.abs(c.gains.long - 0.1) < 1e-12);
  await writeFile(file, '{"not": "a calibration"');
  await assert.rejects(writeCalibrationEntry(file, 'mine', entry), (e: unknown) => e instanceof DataFormatError && /not JSON/.test(e.message));
  assert.equal(await readFile(file, 'utf8'), '{"not": "a calibration"', 'left as it was');
  await assert.rejects(
    writeCalibrationEntry(join(dir, 'new.json'), 'bad', { routes: {} }),
    /routes\.encoder/,
    'an entry the router could not read is never written',
  );
  assert.deepEqual((await readdir(dir)).sort(), ['calibration.json']);
});
