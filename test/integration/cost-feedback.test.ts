/**
 * The processor's observed latencies reach the router's online cost model,
 * and a remote LLM's queueing (here: a proxy holding back every answer) is
 * part of what it observes. Real parts throughout: the bc5cdr encoder, the
 * `openai` adapter over HTTP, the reference `serve-llm` behind a FaultProxy,
 * and the calibrated router as the service builds it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import { startLlmServer, type LlmServer } from '../../src/taggers/llm/reference-server.js';
import { validateConfig } from '../../src/config/load.js';
import type { RouterConfig } from '../../src/config/schema.js';
import { FaultProxy } from '../../src/embedded/fault-proxy.js';
import type { ClinicalNote } from '../../src/ingest/note.js';
import { toTaggedNoteRecord, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { prepareText } from '../../src/text/index.js';
import { fixtureNotes } from '../helpers/pipeline.js';

const LLM_MODEL = new URL('../../models/bc5cdr-decoder-classifier', import.meta.url).pathname;
/**
 * Every answer chunk from the LLM server reaches the client this much later:
 * well above what the CPU-bound reference server takes for a short note, so the
 * two runs separate. At least 1 s, and 6x the calibrated cost of a mean note
 * (100-400 ms on the 2-core dev machine, more when other jobs share it) up to
 * 3 s, measured in `before`, so a slow or loaded machine does not close the gap.
 */
let DELAY_MS = 1000;

let server: LlmServer;
let proxy: FaultProxy;
let encoder: EncoderTagger;
let config: RouterConfig;

/** The shortest fixture notes (13-27 sentences); with one request per sentence and llm.maxConcurrency above that, a note's LLM call waits about one delay. */
const notes: ClinicalNote[] = fixtureNotes()
  .sort((a, b) => a.text.length - b.text.length)
  .slice(0, 6)
  .map((n) => ({ noteId: n.id, text: n.text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }));
/** Word tokens per note, as the router counts them. */
const tokensOf = new Map(notes.map((n) => [n.noteId, prepareText(n.text).sentences.reduce((k, s) => k + s.tokens.length, 0)]));
const meanTokens = Math.round([...tokensOf.values()].reduce((a, b) => a + b, 0) / notes.length);

before(async () => {
  server = await startLlmServer({ modelDir: LLM_MODEL, port: 0 });
  proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: server.port, delayMs: 0 });
  const settings = {
    llm: { adapter: 'openai', baseUrl: proxy.url, modelDir: LLM_MODEL, timeoutMs: 8000, retries: 0, maxConcurrency: 32 },
    // Budgets far above the delay: every sentence goes to the LLM and nothing falls back, so every call is observed.
    routing: { policy: 'llm', defaultBudgetMs: 15_000 },
    processing: { noteTimeoutMs: 20_000 },
    logging: { level: 'silent' },
  };
  config = validateConfig(settings);
  encoder = await loadEncoder(config.encoder);
  // Warm both models (and the HTTP path) so first-call costs land in neither run.
  const warm = await loadLlm(config);
  assert.ok(warm !== undefined);
  const sentences = prepareText(notes[0].text).sentences;
  await warm.tagSentences(sentences);
  await encoder.tagSentences(sentences);
  // Calibrate the LLM route on the model served here, as `calibrate` would: the committed calibration holds the
  // generative decoder's cost, while this test serves the faster decoder classifier.
  // The fastest of three runs: one timed run that meets a burst of load elsewhere on the machine would calibrate the route as slow as the delay.
  let ms = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await warm.tagSentences(sentences);
    ms = Math.min(ms, performance.now() - t0);
  }
  await warm.close();
  const words = sentences.reduce((n, s) => n + s.tokens.length, 0);
  const committed = JSON.parse(await readFile(config.routing.calibrationFile, 'utf8')) as { datasets: Record<string, { routes: Record<string, unknown> }> };
  committed.datasets.bc5cdr.routes.llm = { model: 'bc5cdr-decoder-classifier', ms_per_sentence: ms / sentences.length, ms_per_token: ms / words };
  const file = join(await mkdtemp(join(tmpdir(), 'bioner-cost-feedback-')), 'calibration.json');
  await writeFile(file, JSON.stringify(committed));
  config = validateConfig({ ...settings, routing: { ...settings.routing, calibrationFile: file } });
  // At most 3 s: a note's LLM call waits about one delay, well inside llm.timeoutMs (8 s), so nothing falls back.
  DELAY_MS = Math.min(3000, Math.max(DELAY_MS, Math.ceil(6 * (await loadRouter(config)).costs.predict('llm', meanTokens))));
});

after(async () => {
  await encoder?.close();
  await proxy?.close();
  await server?.close();
});

interface Run {
  /** Predicted ms of one LLM call over a mean note, before and after the notes. */
  before: number;
  after: number;
  records: TaggedNoteRecord[];
  /** Mean observed LLM ms per note. */
  observed: number;
}

/** A fresh calibrated router and processor, the notes one after another, with the proxy's delay set to `delayMs`. */
async function runNotes(delayMs: number): Promise<Run> {
  proxy.delayMs = delayMs;
  const router = await loadRouter(config);
  const llm = await loadLlm(config);
  assert.ok(llm !== undefined, 'the llm policy loads the LLM adapter');
  const processor = createProcessor(config, encoder, {}, llm, router);
  const before = router.costs.predict('llm', meanTokens);
  const records: TaggedNoteRecord[] = [];
  try {
    for (const [i, note] of notes.entries())
      records.push(toTaggedNoteRecord(await processor.process(note, { topic: 'cost-feedback', partition: 0, offset: String(i) }), note.text));
  } finally {
    await llm.close();
  }
  for (const r of records) {
    assert.equal(r.routing.sentences_llm, r.routing.sentences, `${r.note_id}: every sentence on the LLM (${r.routing.reasons.join(',')})`);
    assert.ok(!r.routing.reasons.some((x) => x.startsWith('llm_fallback')), `${r.note_id}: no fallback, so the call was observed`);
  }
  assert.equal(router.costs.snapshot().llm.observations, notes.length, 'one LLM observation per note');
  const observed = records.reduce((n, r) => n + r.routing.actual_llm_ms, 0) / records.length;
  return { before, after: router.costs.predict('llm', meanTokens), records, observed };
}

test('a delayed remote LLM: observed latencies pull the LLM cost prediction up towards them; without the delay it stays low', async () => {
  const slow = await runNotes(DELAY_MS);
  for (const r of slow.records)
    assert.ok(r.routing.actual_llm_ms >= DELAY_MS, `${r.note_id}: the LLM call took the proxy's delay (${r.routing.actual_llm_ms} ms)`);
  // The calibration knows only the CPU cost (a sixth of the delay or less, unless the 3 s cap binds); after six notes (half-life 50, prior worth four) it must be a good part of the way to what it saw.
  assert.ok(slow.before < DELAY_MS / 4, `calibrated prediction ${slow.before} ms for ${meanTokens} tokens`);
  assert.ok(
    slow.after >= slow.before + 0.4 * (slow.observed - slow.before),
    `prediction ${slow.before} -> ${slow.after} ms, observed mean ${slow.observed} ms`,
  );
  assert.ok(slow.after <= 1.5 * slow.observed, `prediction ${slow.after} ms does not overshoot the observed ${slow.observed} ms`);
  // The feedback is visible in the decision records too: later notes are planned with the higher cost.
  const perToken = (r: TaggedNoteRecord): number => r.routing.predicted_llm_ms / (tokensOf.get(r.note_id) ?? NaN);
  const [first, last] = [slow.records[0], slow.records[slow.records.length - 1]];
  assert.ok(
    perToken(last) > 2 * perToken(first),
    `the last note was planned at a higher per-token LLM cost than the first (${perToken(first)} -> ${perToken(last)} ms)`,
  );

  const fast = await runNotes(0);
  assert.ok(slow.observed - fast.observed >= DELAY_MS / 2, `the queueing is in the observed cost (${fast.observed} vs ${slow.observed} ms)`);
  // Without the delay the prediction follows the (low) CPU cost it observes, well below the delayed run's.
  assert.ok(
    fast.after <= 1.5 * fast.observed + 20,
    `without the delay the prediction stays low (${fast.before} -> ${fast.after} ms, observed ${fast.observed} ms)`,
  );
  assert.ok(fast.after < slow.after / 2, `the proxy's queueing shows in the prediction (${fast.after} vs ${slow.after} ms)`);
});
