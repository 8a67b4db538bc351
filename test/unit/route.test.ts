import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NoteProcessor } from '../../src/pipeline/processor.js';
import { loadFactor, parseBudgetHeader, resolveBudget, type BudgetSettings, type NoteBudget } from '../../src/route/budget.js';
import { ConfigError } from '../../src/errors.js';
import { parseCalibration } from '../../src/route/calibration.js';
import { OnlineCostModel } from '../../src/route/cost-model.js';
import { createRouter, Reasons, type LongEntityEstimator } from '../../src/route/index.js';
import type { SentenceTagging, Tagger } from '../../src/taggers/types.js';
import type { Route, Sentence, TokenSpan } from '../../src/types.js';

const load = { inFlightHigh: 10, lagHigh: 100, minFactor: 0.25 };
const settings: BudgetSettings = { defaultBudgetMs: 500, topicBudgets: { urgent: 50 }, load };

/** A sentence of `n` words; a word "LONG" marks where the fake estimator expects a long entity. */
function sentence(index: number, words: string[], offset = 0): Sentence {
  let at = offset;
  const tokens = words.map((text) => {
    const t = { text, start: at, end: at + text.length };
    at += text.length + 1;
    return t;
  });
  return { index, start: offset, end: at - 1, tokens };
}
const words = (n: number, marker?: string): string[] => Array.from({ length: n }, (_, i) => (i === 0 && marker !== undefined ? marker : `w${i}`));

const estimator: LongEntityEstimator = { threshold: 0.5, probLong: (s) => (s.tokens.some((t) => t.text === 'LONG') ? 0.9 : 0.05) };
// Fixed costs: encoder 0.1 ms/word, LLM 1 ms/word plus 5 ms per call.
const costs = { encoder: { overheadMs: 0, msPerToken: 0.1 }, llm: { overheadMs: 5, msPerToken: 1 } };
const calibration = { domain: 'test', costs, gains: { short: -0.02, long: 0.1, all: 0.01 }, supportByLength: {} };
const budget = (ms: number, factor = 1): NoteBudget => ({ budgetMs: ms, source: 'default', effectiveMs: ms * factor, loadFactor: factor });

/** Predicted cost of a decision, as the budget rule counts it. */
function plannedMs(router: ReturnType<typeof createRouter>, sentences: Sentence[], routes: string[]): number {
  let enc = 0;
  let llm = 0;
  for (const [i, s] of sentences.entries()) {
    if (routes[i] === 'llm') llm += s.tokens.length;
    else enc += s.tokens.length;
  }
  return router.costs.predict('encoder', enc) + router.costs.predict('llm', llm);
}

describe('budget', () => {
  test('sources in order: note field, header, per-topic default, global default', () => {
    assert.deepEqual(resolveBudget({ noteBudgetMs: 70, headerBudgetMs: 80, topic: 'urgent' }, settings), {
      budgetMs: 70,
      source: 'note',
      effectiveMs: 70,
      loadFactor: 1,
    });
    assert.equal(resolveBudget({ noteBudgetMs: null, headerBudgetMs: 80, topic: 'urgent' }, settings).source, 'header');
    assert.deepEqual(resolveBudget({ noteBudgetMs: null, headerBudgetMs: null, topic: 'urgent' }, settings), {
      budgetMs: 50,
      source: 'topic',
      effectiveMs: 50,
      loadFactor: 1,
    });
    assert.deepEqual(resolveBudget({ noteBudgetMs: null, topic: 'other' }, settings), { budgetMs: 500, source: 'default', effectiveMs: 500, loadFactor: 1 });
  });

  test('header values: positive integer milliseconds or nothing', () => {
    assert.equal(parseBudgetHeader(Buffer.from('250')), 250);
    assert.equal(parseBudgetHeader([' 40 ', '90']), 40);
    for (const bad of ['0', '-5', '1.5', 'soon', '', '9999999999']) assert.equal(parseBudgetHeader(bad), null, bad);
    assert.equal(parseBudgetHeader(undefined), null);
  });

  test('load shedding: budgets shrink in proportion above the configured level, never below minFactor', () => {
    assert.equal(loadFactor({ inFlight: 10, lag: 100 }, load), 1);
    assert.equal(loadFactor({ inFlight: 20, lag: null }, load), 0.5);
    assert.equal(loadFactor({ inFlight: 0, lag: 400 }, load), 0.25);
    assert.equal(loadFactor({ inFlight: 1000, lag: 0 }, load), 0.25);
    const shed = resolveBudget({ noteBudgetMs: 200 }, settings, { inFlight: 40, lag: 0 });
    assert.deepEqual(shed, { budgetMs: 200, source: 'note', effectiveMs: 50, loadFactor: 0.25 });
  });
});

describe('cost model', () => {
  test('starts from the calibration and converges to a changed latency', () => {
    const model = new OnlineCostModel({ encoder: { overheadMs: 0, msPerToken: 0.1 }, llm: { overheadMs: 0, msPerToken: 0.4 } }, { halfLifeObservations: 20 });
    assert.equal(model.predict('llm', 100), 40);
    assert.equal(model.predict('llm', 0), 0);
    // The LLM server gets slower and queues: 12 ms per call plus 1.5 ms per word.
    let seed = 7;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 300; i++) {
      const tokens = 10 + Math.floor(rand() * 200);
      model.observe('llm', tokens, 12 + 1.5 * tokens + (rand() - 0.5) * 2);
    }
    const fit = model.snapshot().llm;
    assert.ok(Math.abs(fit.msPerToken - 1.5) < 0.05, `per-token ${fit.msPerToken}`);
    assert.ok(Math.abs(fit.overheadMs - 12) < 2, `overhead ${fit.overheadMs}`);
    assert.ok(Math.abs(model.predict('llm', 100) - 162) / 162 < 0.03);
    // The encoder line was not touched.
    assert.equal(model.predict('encoder', 100), 10);
  });

  test('calls of one size rescale the line instead of inventing an overhead', () => {
    const model = new OnlineCostModel(
      { encoder: { overheadMs: 2, msPerToken: 0.1 }, llm: { overheadMs: 0, msPerToken: 1 } },
      { halfLifeObservations: 5, priorWeight: 0.01 },
    );
    for (let i = 0; i < 100; i++) model.observe('encoder', 50, 14);
    assert.ok(Math.abs(model.predict('encoder', 50) - 14) < 0.2);
    for (const v of Object.values(model.snapshot().encoder)) assert.ok(Number.isFinite(v) && v >= 0);
  });

  test('an outage of timeouts keeps the LLM off only for failureMemoryMs; then the plan returns to it with the cost successes confirmed', () => {
    let now = 0;
    const memory = 10_000;
    const router = createRouter({ policy: 'llm', calibration, costModel: { failureMemoryMs: memory, clock: () => now } });
    const model = router.costs;
    const note = [sentence(0, words(50))];
    const plan = (): ReturnType<typeof router.plan> => router.plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    for (let i = 0; i < 10; i++) model.observe('llm', 50, 55);
    const healthy = model.predict('llm', 50);
    assert.ok(Math.abs(healthy - 55) < 1e-6, `healthy prediction ${healthy}`);
    assert.deepEqual(plan().sentenceRoutes, ['llm']);
    // Outage: every call times out at 2 x 2000 ms (two attempts); the calls keep coming for 3 s.
    for (let i = 0; i < 6; i++) {
      now = i * 500;
      model.observeFailure('llm', 40 + i * 10, 4000);
    }
    const lastFailure = now;
    assert.ok(model.predict('llm', 50) >= 3900, `while the failures are remembered the LLM looks slow (${model.predict('llm', 50)} ms)`);
    const during = plan();
    assert.deepEqual(during.sentenceRoutes, ['encoder']);
    assert.ok(during.reasons.includes(Reasons.budgetExhausted));
    // Failures never enter the fitted line: successes' figures are intact.
    const snap = model.snapshot().llm;
    assert.equal(snap.observations, 10);
    assert.ok(Math.abs(snap.overheadMs + snap.msPerToken * 50 - 55) < 1e-6);
    // No LLM call is made while the plan avoids it; the memory still ends on time, and the LLM is tried again.
    now = lastFailure + memory - 1;
    assert.deepEqual(plan().sentenceRoutes, ['encoder']);
    now = lastFailure + memory;
    assert.ok(Math.abs(model.predict('llm', 50) - healthy) < 1e-6, `prediction back to ${healthy} ms`);
    assert.equal(model.snapshot().llm.failurePenaltyMs, 0);
    assert.deepEqual(plan().sentenceRoutes, ['llm']);
  });

  test('a success forgets a remembered failure at once; the largest shortfall in the window counts; a call within the line is no failure', () => {
    let now = 0;
    const model = new OnlineCostModel(
      { encoder: { overheadMs: 0, msPerToken: 0.1 }, llm: { overheadMs: 0, msPerToken: 1 } },
      { failureMemoryMs: 1000, clock: () => now },
    );
    model.observeFailure('llm', 100, 50); // faster than predicted (budget cut early): says nothing
    assert.equal(model.predict('llm', 100), 100);
    model.observeFailure('llm', 100, 900);
    assert.equal(model.predict('llm', 100), 900);
    now = 500;
    model.observeFailure('llm', 100, 300); // a smaller shortfall does not lower the remembered one, and extends the window
    assert.equal(model.predict('llm', 10), 10 + 800);
    now = 1400;
    assert.equal(model.predict('llm', 100), 900, 'the window runs from the latest failure');
    model.observe('llm', 100, 100);
    assert.equal(model.predict('llm', 100), 100, 'a success clears the failure');
    assert.equal(model.predict('encoder', 100), 10, 'the other route is untouched');
    const forgetful = new OnlineCostModel(
      { encoder: { overheadMs: 0, msPerToken: 0.1 }, llm: { overheadMs: 0, msPerToken: 1 } },
      { failureMemoryMs: 0, clock: () => now },
    );
    forgetful.observeFailure('llm', 100, 5000);
    assert.equal(forgetful.predict('llm', 100), 100, 'failureMemoryMs 0: failures are not remembered');
  });

  test('the calibration file gives costs and length-bucket gains', () => {
    const c = parseCalibration(
      {
        datasets: {
          d: {
            support_by_length: { '1': 300, '2': 100, '3+': 50 },
            routes: {
              encoder: { ms_per_token: 0.05, f1: { '1': 0.8, '2': 0.7, '3+': 0.5, all: 0.75 } },
              llm: { ms_per_token: 0.5, f1: { '1': 0.78, '2': 0.74, '3+': 0.6, all: 0.76 } },
            },
          },
        },
      },
      'd',
    );
    assert.deepEqual(c.costs, { encoder: { overheadMs: 0, msPerToken: 0.05 }, llm: { overheadMs: 0, msPerToken: 0.5 } });
    assert.ok(Math.abs(c.gains!.long - 0.1) < 1e-9);
    assert.ok(Math.abs(c.gains!.short - (300 * -0.02 + 100 * 0.04) / 400) < 1e-9);
    assert.throws(() => parseCalibration({ datasets: { d: {} } }, 'x'), /routing\.domain/);
  });

  test('a malformed calibration file is one ConfigError naming the field', () => {
    const encoder = { ms_per_token: 0.05, f1: { '1': 0.8, '2': 0.7, '3+': 0.5, all: 0.75 } };
    const cases: Array<[unknown, RegExp]> = [
      [{}, /"routing\.calibrationFile": no "datasets" object/],
      [{ datasets: { d: {} } }, /datasets\.d\.routes is missing/],
      [{ datasets: { d: { routes: {} } } }, /datasets\.d\.routes\.encoder is missing/],
      [{ datasets: { d: { routes: { encoder: { f1: encoder.f1 } } } } }, /datasets\.d\.routes\.encoder\.ms_per_token is missing/],
      [
        { datasets: { d: { routes: { encoder: { ...encoder, ms_per_token: '0.05' } } } } },
        /datasets\.d\.routes\.encoder\.ms_per_token must be a finite number/,
      ],
      [{ datasets: { d: { routes: { encoder, llm: { ms_per_token: null } } } } }, /datasets\.d\.routes\.llm\.ms_per_token must be a finite number/],
      [
        { datasets: { d: { routes: { encoder: { ...encoder, f1: { ...encoder.f1, all: 'high' } } } } } },
        /datasets\.d\.routes\.encoder\.f1\.all must be a number or null/,
      ],
      [{ datasets: { d: { support_by_length: { '3+': -Infinity }, routes: { encoder } } } }, /datasets\.d\.support_by_length\.3\+ must be a finite number/],
    ];
    for (const [raw, message] of cases) {
      assert.throws(
        () => parseCalibration(raw, 'd'),
        (e: unknown) => e instanceof ConfigError && e.field === 'routing.calibrationFile' && message.test(e.message) && !e.message.includes('\n'),
        JSON.stringify(raw),
      );
    }
    // Only the chosen domain is checked; an LLM route without a cost, or F1 null for a bucket, leaves the gains unknown.
    const c = parseCalibration({ datasets: { d: { routes: { encoder, llm: { f1: { ...encoder.f1, '3+': null } } } }, other: 'broken' } }, 'd', 4);
    assert.deepEqual(c.costs.llm, { overheadMs: 0, msPerToken: 0.2 });
    assert.equal(c.gains, null);
  });
});

describe('policies (fixed costs)', () => {
  // Six sentences of 20 words; two of them expected to hold long entities.
  const note = [0, 1, 2, 3, 4, 5].map((i) => sentence(i, words(20, i === 1 || i === 4 ? 'LONG' : undefined), i * 200));

  test('encoder: everything to the encoder', () => {
    const d = createRouter({ policy: 'encoder', calibration }).plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    assert.deepEqual(d.sentenceRoutes, Array(6).fill('encoder'));
    assert.deepEqual(d.reasons, [Reasons.encoderPolicy]);
    assert.ok(Math.abs(d.predictedEncoderMs - 12) < 1e-9);
  });

  test('llm: as many sentences as the budget allows, the rest to the encoder; the plan never exceeds the budget', () => {
    const router = createRouter({ policy: 'llm', calibration, estimator });
    for (const ms of [5, 20, 40, 60, 80, 100, 125, 200]) {
      const d = router.plan({ sentences: note, budget: budget(ms), elapsedMs: 3 });
      const planned = plannedMs(router, note, d.sentenceRoutes);
      const llm = d.sentenceRoutes.filter((r) => r === 'llm').length;
      if (llm > 0) assert.ok(3 + planned <= ms + 1e-9, `budget ${ms}: planned ${planned}`);
      assert.equal(d.reasons.includes(Reasons.budgetExhausted), llm < 6, `budget ${ms}`);
      assert.ok(Math.abs(d.predictedEncoderMs + d.predictedLlmMs - planned) < 1e-9);
    }
    assert.deepEqual(router.plan({ sentences: note, budget: budget(200), elapsedMs: 0 }).sentenceRoutes, Array(6).fill('llm'));
    // With room for one LLM sentence, the one with the best expected gain per ms goes.
    const one = router.plan({ sentences: note, budget: budget(36), elapsedMs: 0 });
    assert.deepEqual(
      one.sentenceRoutes.map((r, i) => (r === 'llm' ? i : -1)).filter((i) => i >= 0),
      [1],
    );
  });

  test('cuts LLM work first: below the encoder cost everything stays on the encoder', () => {
    const d = createRouter({ policy: 'llm', calibration }).plan({ sentences: note, budget: budget(8), elapsedMs: 0 });
    assert.deepEqual(d.sentenceRoutes, Array(6).fill('encoder'));
    assert.ok(d.reasons.includes(Reasons.budgetBelowEncoder));
    assert.ok(d.reasons.includes(Reasons.budgetExhausted));
  });

  test('length-aware: the LLM only where long entities are expected and the gain is measured positive', () => {
    const router = createRouter({ policy: 'length-aware', calibration, estimator });
    const d = router.plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    assert.deepEqual(d.sentenceRoutes, ['encoder', 'llm', 'encoder', 'encoder', 'llm', 'encoder']);
    assert.ok(d.reasons.includes(Reasons.shortEntitiesExpected));
    assert.ok(!d.reasons.includes(Reasons.budgetExhausted));
    // Expected gain: two sentences at 0.9 * 0.1 + 0.1 * -0.02, averaged over six.
    assert.ok(Math.abs(d.estimatedGain - (2 * (0.09 - 0.002)) / 6) < 1e-9);
    // Room for one LLM call of 20 words (25 ms) plus the encoder for the rest (10 ms).
    const tight = router.plan({ sentences: note, budget: budget(36), elapsedMs: 0 });
    assert.equal(tight.sentenceRoutes.filter((r) => r === 'llm').length, 1);
    assert.ok(tight.reasons.includes(Reasons.budgetExhausted));
    // Measured gains not positive anywhere: nothing goes, and the record says why.
    const losing = createRouter({ policy: 'length-aware', calibration: { ...calibration, gains: { short: -0.05, long: -0.06, all: -0.05 } }, estimator });
    const none = losing.plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    assert.deepEqual(none.sentenceRoutes, Array(6).fill('encoder'));
    assert.deepEqual(none.reasons, [Reasons.llmGainNotPositive]);
    const uncalibrated = createRouter({ policy: 'length-aware', calibration: null, estimator }).plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    assert.deepEqual(uncalibrated.reasons, [Reasons.noLlmCalibration]);
  });

  test('load shedding removes LLM sentences, and says so', () => {
    const router = createRouter({ policy: 'length-aware', calibration, estimator });
    const calm = router.plan({ sentences: note, budget: budget(80), elapsedMs: 0 });
    assert.equal(calm.sentenceRoutes.filter((r) => r === 'llm').length, 2);
    const loaded = router.plan({ sentences: note, budget: budget(80, 0.5), elapsedMs: 0 });
    assert.equal(loaded.sentenceRoutes.filter((r) => r === 'llm').length, 1);
    assert.ok(loaded.reasons.includes(Reasons.loadShed));
  });

  test('note granularity: the whole note or nothing', () => {
    const router = createRouter({
      policy: 'length-aware',
      calibration: { ...calibration, gains: { short: 0.01, long: 0.1, all: 0.03 } },
      estimator,
      settings: { granularity: 'note' },
    });
    assert.deepEqual(router.plan({ sentences: note, budget: budget(1000), elapsedMs: 0 }).sentenceRoutes, Array(6).fill('llm'));
    const cut = router.plan({ sentences: note, budget: budget(60), elapsedMs: 0 });
    assert.deepEqual(cut.sentenceRoutes, Array(6).fill('encoder'));
    assert.ok(cut.reasons.includes(Reasons.budgetExhausted));
  });

  test('cascade: flags from the estimate, long encoder spans and low confidence; re-tags within what is left', () => {
    const router = createRouter({ policy: 'cascade', calibration, estimator, settings: { cascade: { confidenceThreshold: 0.7, flagLongSpans: true } } });
    const d = router.plan({ sentences: note, budget: budget(60), elapsedMs: 0 });
    assert.equal(d.cascade, true);
    assert.deepEqual(d.sentenceRoutes, Array(6).fill('encoder'));
    const evidence = note.map((_, i) => ({ minConfidence: i === 2 ? 0.4 : 0.95, hasLongSpan: i === 5 }));
    const roomy = router.plan({ sentences: note, budget: budget(1000), elapsedMs: 0 });
    const all = router.refine({ sentences: note, decision: roomy, evidence, elapsedMs: 12 });
    assert.deepEqual([...all.llmSentences].sort(), [1, 2, 4, 5]);
    for (const r of [Reasons.flaggedLongExpected, Reasons.flaggedLowConfidence, Reasons.flaggedLongSpan]) assert.ok(all.reasons.includes(r));
    // 60 ms budget, 12 spent on the encoder: one LLM call of 5 ms + 1 ms per word fits two 20-word sentences.
    const tight = router.refine({ sentences: note, decision: d, evidence, elapsedMs: 12 });
    assert.ok(12 + tight.predictedLlmMs <= 60);
    assert.equal(tight.llmSentences.length, 2);
    assert.ok(tight.reasons.includes(Reasons.budgetExhausted));
    const calm = router.refine({ sentences: note, decision: d, evidence: note.map(() => ({ minConfidence: 0.99, hasLongSpan: false })), elapsedMs: 12 });
    assert.deepEqual(calm.llmSentences, [1, 4]);
  });
});

/** A tagger whose every call advances a fake clock by a fixed cost per word; it tags each word "LONG" as a 3-word span. */
class ClockedTagger implements Tagger {
  readonly model = { id: 'fake', version: '0', entityTypes: ['X'] };
  calls: number[] = [];
  constructor(
    readonly route: Route,
    private readonly clock: { t: number },
    private readonly msPerWord: number,
    private readonly overheadMs: number,
    private readonly label: string,
  ) {}
  async tagSentences(sentences: readonly Sentence[]): Promise<TokenSpan[][]> {
    return (await this.tagSentencesDetailed(sentences)).map((t) => t.spans);
  }
  async tagSentencesDetailed(sentences: readonly Sentence[]): Promise<SentenceTagging[]> {
    const words = sentences.reduce((n, s) => n + s.tokens.length, 0);
    this.calls.push(sentences.length);
    this.clock.t += this.overheadMs + this.msPerWord * words;
    return sentences.map((s) => {
      const at = s.tokens.findIndex((t) => t.text === 'LONG');
      return {
        spans:
          at < 0
            ? [{ first: 2, last: 2, label: this.label, score: 0.9 }]
            : [{ first: at, last: Math.min(s.tokens.length - 1, at + 2), label: this.label, score: 0.6 }],
        minConfidence: at < 0 ? 0.95 : 0.5,
      };
    });
  }
  async close(): Promise<void> {}
}

describe('processor with a fake clock', () => {
  test("real time spent stays within the budget whenever the encoder alone fits; LLM spans replace the encoder's by sentence", async () => {
    for (const policy of ['llm', 'length-aware', 'cascade'] as const) {
      for (const ms of [15, 30, 45, 70, 120, 400]) {
        const clock = { t: 1000 };
        const encoder = new ClockedTagger('encoder', clock, 0.1, 0, 'ENC');
        const llm = new ClockedTagger('llm', clock, 1, 5, 'LLM');
        const router = createRouter({ policy, calibration, estimator });
        const processor = new NoteProcessor(router, { encoder, llm }, {}, { clock: () => clock.t, budget: { ...settings, defaultBudgetMs: ms } });
        const sentences = [0, 1, 2, 3, 4, 5].map((i) => sentence(i, words(20, i === 1 || i === 4 ? 'LONG' : undefined), i * 200));
        const out = await processor.tagSentences('n', sentences, resolveBudget({ noteBudgetMs: null }, { ...settings, defaultBudgetMs: ms }), {
          receivedAt: clock.t,
        });
        const spent = clock.t - 1000;
        assert.ok(spent <= ms + 1e-9, `${policy} budget ${ms}: spent ${spent}`);
        // Each sentence's spans come from exactly one tagger, on that sentence's own words.
        for (const s of sentences) {
          const own = out.spans.filter((sp) => sp.sentenceIndex === s.index);
          assert.equal(own.length, 1, `${policy} ${ms} sentence ${s.index}`);
          const fromLlm = out.routing.llmSentences.includes(s.index);
          assert.equal(own[0].label, fromLlm ? 'LLM' : 'ENC');
          assert.equal(own[0].route, fromLlm ? 'llm' : 'encoder');
          assert.ok(own[0].start >= s.start && own[0].end <= s.end);
          const at = s.tokens.findIndex((t) => t.text === 'LONG');
          assert.equal(own[0].start, s.tokens[at >= 0 ? at : 2].start);
          assert.equal(own[0].end, s.tokens[at >= 0 ? at + 2 : 2].end);
        }
        assert.equal(out.routing.sentencesLlm, out.routing.llmSentences.length);
        if (ms >= 400) assert.ok(out.routing.llmSentences.length >= 2, `${policy} uses the LLM when the budget allows`);
      }
    }
  });
});
