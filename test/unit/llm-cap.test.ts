import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingRecord } from '../../src/route/record.js';
import { createRouter, LlmCap, Reasons, type LongEntityEstimator } from '../../src/route/index.js';
import type { NoteBudget } from '../../src/route/budget.js';
import { createRouterMetrics, METRIC_SERIES } from '../../src/telemetry/metrics.js';
import type { Sentence } from '../../src/types.js';

function sentence(index: number, n: number, marker?: string): Sentence {
  let at = 0;
  const tokens = Array.from({ length: n }, (_, i) => {
    const text = i === 0 && marker !== undefined ? marker : `w${i}`;
    const t = { text, start: at, end: at + text.length };
    at += text.length + 1;
    return t;
  });
  return { index, start: 0, end: at - 1, tokens };
}
const note = (sentences: number, words = 5): Sentence[] => Array.from({ length: sentences }, (_, i) => sentence(i, words));
const costs = { encoder: { overheadMs: 0, msPerToken: 0.01 }, llm: { overheadMs: 0, msPerToken: 0.1 } };
const budget: NoteBudget = { budgetMs: 1e6, source: 'default', effectiveMs: 1e6, loadFactor: 1 };

test('the share cap counts the note itself, and old work leaves the window', () => {
  let now = 0;
  const cap = new LlmCap({ maxSentenceShare: 0.2, windowMs: 1000 }, () => now);
  assert.deepEqual(cap.allowance(10), { sentences: 2, tokens: Infinity }, 'a first note gets its share');
  cap.record(10, 2, 20);
  assert.equal(cap.allowance(10).sentences, 2);
  cap.record(10, 0, 0);
  assert.equal(cap.allowance(10).sentences, 4, 'unused share carries over inside the window');
  now = 1500;
  assert.equal(cap.snapshot().sentences, 0, 'the window has moved past both notes');
  assert.equal(new LlmCap({ windowMs: 1000 }).active, false);
});

test('the token cap is per minute, scaled to the window, and reported as used fraction', () => {
  let now = 0;
  const cap = new LlmCap({ maxTokensPerMinute: 600, windowMs: 10_000 }, () => now);
  assert.equal(cap.allowance(1).tokens, 100);
  cap.record(5, 5, 80);
  assert.equal(cap.allowance(1).tokens, 20);
  assert.deepEqual(cap.snapshot().usage, { tokens_per_minute: 0.8 });
  now = 10_001;
  assert.equal(cap.allowance(1).tokens, 100);
});

test('llm policy under a share cap: it holds over many notes, with llm_cap reasons', () => {
  const cap = new LlmCap({ maxSentenceShare: 0.3, windowMs: 60_000 });
  const router = createRouter({ policy: 'llm', calibration: null, costs, cap });
  let total = 0;
  let llm = 0;
  for (let i = 0; i < 50; i++) {
    const sentences = note(7);
    const d = router.plan({ sentences, budget, elapsedMs: 0 });
    total += sentences.length;
    llm += d.sentenceRoutes.filter((r) => r === 'llm').length;
    assert.ok(d.reasons.includes(Reasons.llmCap) && d.reasons.includes('llm_cap:sentence_share'), d.reasons.join());
    assert.ok(!d.reasons.includes(Reasons.budgetExhausted), 'the budget was not what cut');
  }
  assert.ok(llm / total <= 0.3 + 1e-9, `share ${llm / total}`);
  assert.ok(llm / total > 0.25, `the cap is used, not starved (${llm / total})`);
});

test("a token cap cuts single sentences, whole notes (granularity note) and the cascade's refine", () => {
  const estimator: LongEntityEstimator = { threshold: 0.5, probLong: (s) => (s.tokens[0].text === 'LONG' ? 0.9 : 0.1) };
  const gains = { domain: 't', costs, gains: { short: 0.05, long: 0.2, all: 0.1 }, supportByLength: {} };
  const perSentence = createRouter({ policy: 'length-aware', calibration: gains, estimator, cap: new LlmCap({ maxTokensPerMinute: 12, windowMs: 60_000 }) });
  const d = perSentence.plan({ sentences: note(4, 5), budget, elapsedMs: 0 });
  assert.equal(d.sentenceRoutes.filter((r) => r === 'llm').length, 2, '12 tokens allow two 5-token sentences');
  assert.ok(d.reasons.includes('llm_cap:tokens_per_minute'));
  const wholeNote = createRouter({
    policy: 'length-aware',
    calibration: gains,
    estimator,
    settings: { granularity: 'note' },
    cap: new LlmCap({ maxTokensPerMinute: 12, windowMs: 60_000 }),
  });
  const n = wholeNote.plan({ sentences: note(4, 5), budget, elapsedMs: 0 });
  assert.deepEqual(n.sentenceRoutes, ['encoder', 'encoder', 'encoder', 'encoder'], 'all or nothing: nothing');
  assert.ok(n.reasons.includes(Reasons.llmCap));
  const cap = new LlmCap({ maxTokensPerMinute: 6, windowMs: 60_000 });
  const cascade = createRouter({ policy: 'cascade', calibration: gains, estimator, cap });
  const sentences = [sentence(0, 5, 'LONG'), sentence(1, 5, 'LONG')];
  const first = cascade.plan({ sentences, budget, elapsedMs: 0 });
  const refined = cascade.refine({ sentences, decision: first, evidence: sentences.map(() => ({ minConfidence: 0.99, hasLongSpan: false })), elapsedMs: 0 });
  assert.equal(refined.llmSentences.length, 1);
  assert.ok(refined.reasons.includes('llm_cap:tokens_per_minute'));
  assert.equal(cap.snapshot().llmTokens, 5);
  assert.equal(cap.snapshot().sentences, 2, "plan counted the note's sentences once");
});

test("metrics: capped notes by limit, and the cap window's used fraction", async () => {
  const m = createRouterMetrics({ serviceName: 'test' });
  const routing: RoutingRecord = {
    policy: 'llm',
    granularity: 'sentence',
    budgetMs: 1000,
    budgetSource: 'default',
    effectiveBudgetMs: 1000,
    loadFactor: 1,
    sentences: 5,
    sentencesEncoder: 3,
    sentencesLlm: 2,
    llmSentences: [0, 1],
    reasons: ['llm_policy', 'llm_cap', 'llm_cap:tokens_per_minute'],
    predictedEncoderMs: 1,
    predictedLlmMs: 2,
    actualEncoderMs: 1,
    actualLlmMs: 2,
    estimatedGain: 0,
  };
  m.hooks.notePublished?.({ noteId: 'n1', topic: 'out', spans: 0, totalMs: 5, routes: { encoder: 3, llm: 2, encoder_fallback: 0 }, routing });
  const cap = new LlmCap({ maxSentenceShare: 0.5, maxTokensPerMinute: 100, windowMs: 60_000 });
  cap.record(10, 2, 25);
  m.observe({ llmCap: () => cap.snapshot() });
  const text = await m.collectPrometheus();
  await m.shutdown();
  assert.match(text, new RegExp(`^${METRIC_SERIES.llmCapped}\\{policy="llm",limit="tokens_per_minute"[^}]*\\} 1$`, 'm'));
  assert.match(text, new RegExp(`^${METRIC_SERIES.llmCapUsage}\\{limit="sentence_share"[^}]*\\} 0\\.4$`, 'm'));
  assert.match(text, new RegExp(`^${METRIC_SERIES.llmCapUsage}\\{limit="tokens_per_minute"[^}]*\\} 0\\.25$`, 'm'));
});
