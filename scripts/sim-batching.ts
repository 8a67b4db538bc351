/**
 * `node --import tsx scripts/sim-batching.ts [--concurrency N] [--step-rows N] [--notes N]`
 *
 * How much padding the cross-note batcher leaves at a given pool size, with
 * no model: the real `TokenClassifierTagger` (tokenizer, windows, batch cuts)
 * over a backend that answers after a wait set by its own cost model
 * (`cols x (rows + stepRows) + callCells` cells, one batch at a time, one
 * queued ahead, like the ONNX backend), fed by N workers that each tag one
 * note's sentences at a time (processing.concurrency). Prints one JSON line:
 * padding (padded cells over real tokens, minus 1), windows a batch, note
 * latency. Padding is the figure to read; wall times follow timer resolution.
 */
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../src/schemas.js';
import { loadModelBundle } from '../src/taggers/model-bundle.js';
import { TokenClassifierTagger, type LogitsBackend } from '../src/taggers/token-classifier.js';
import { prepareText } from '../src/text/index.js';
import { loadBenchTexts } from './bench-util.js';

const { values: args } = parseArgs({
  options: { concurrency: { type: 'string', default: '8' }, 'step-rows': { type: 'string', default: '8' }, notes: { type: 'string', default: '120' } },
});
/** Cells the pretend model runs per ms: a full batch of mtsamples windows takes about 10 ms, as on the 2-core machine. */
const CELLS_PER_MS = 130;
const concurrency = Number(args.concurrency);
const cost = { stepRows: Number(args['step-rows']), callCells: 24 };

const bundle = await loadModelBundle(resolve(packageRoot, 'models/bc5cdr-encoder'));
const seen = { cells: 0, tokens: 0, batches: 0, rows: 0 };
let busy: Promise<unknown> = Promise.resolve();
const backend: LogitsBackend = {
  kind: 'simulated',
  mayAnswerProbabilities: false,
  batchCost: cost,
  queuesAhead: 1,
  run(rows) {
    const cols = rows.reduce((m, r) => Math.max(m, r.length), 0);
    seen.cells += cols * rows.length;
    seen.tokens += rows.reduce((n, r) => n + r.length, 0);
    seen.batches++;
    seen.rows += rows.length;
    const ms = (cols * (rows.length + cost.stepRows) + cost.callCells) / CELLS_PER_MS;
    // One batch at a time, in order, as on the inference thread.
    const answer = busy.then(
      () => new Promise<Float32Array[]>((done) => setTimeout(() => done(rows.map((r) => new Float32Array(r.length * bundle.labels.length))), ms)),
    );
    busy = answer;
    return answer;
  },
  async close() {},
};
const tagger = new TokenClassifierTagger('encoder', bundle, backend, { maxConcurrentBatches: 1 });
const { texts } = await loadBenchTexts();
const notes = Array.from({ length: Number(args.notes) }, (_, i) => prepareText(texts[i % texts.length]).sentences);
const latencies: number[] = [];
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < notes.length) {
      const sentences = notes[next++];
      const start = performance.now();
      await tagger.tagSentences(sentences);
      latencies.push(performance.now() - start);
    }
  }),
);
const wallMs = performance.now() - t0;
await tagger.close();
latencies.sort((a, b) => a - b);
const at = (q: number): number => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))]);
process.stdout.write(
  `${JSON.stringify({
    concurrency,
    step_rows: cost.stepRows,
    notes: notes.length,
    padding: Number((seen.cells / seen.tokens - 1).toFixed(4)),
    windows_per_batch: Number((seen.rows / seen.batches).toFixed(1)),
    wall_ms: Math.round(wallMs),
    p50_ms: at(0.5),
    p95_ms: at(0.95),
  })}\n`,
);
