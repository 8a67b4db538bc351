import { performance } from 'node:perf_hooks';
import { DataFormatError } from '../errors.js';
import { NoteProcessor } from '../pipeline/processor.js';
import { resolveBudget, type BudgetSettings } from '../route/budget.js';
import type { DomainCalibration } from '../route/calibration.js';
import type { RouteCost } from '../route/cost-model.js';
import { createRouter, type LongEntityEstimator, type PolicyName, type PolicySettings } from '../route/index.js';
import type { SentenceTagging, Tagger } from '../taggers/types.js';
import { normalize } from '../text/normalize.js';
import { prepareText } from '../text/index.js';
import type { Route, Sentence, TokenSpan, WordToken } from '../types.js';
import { iobSpans, readIob, readStandoffDir } from './datasets.js';
import { StrictScorer, type EvalResult, type EvalSpan } from './scorer.js';

/** A corpus document as the router sees it: sentences of words with offsets, and gold character spans. */
export interface EvalNote {
  id: string;
  sentences: Sentence[];
  gold: EvalSpan[];
}

/**
 * Corpus -> notes. Standoff documents (JNLPBA) are notes as they are, through
 * the pipeline's text stage. IOB corpora have no document boundaries in their
 * files, so `noteSentences` consecutive sentences (about an abstract) make one
 * note, laid out as words separated by spaces and sentences by newlines.
 */
export async function readEvalNotes(path: string, format: 'iob' | 'standoff', noteSentences = 10): Promise<EvalNote[]> {
  if (format === 'standoff') {
    const docs = await readStandoffDir(path);
    return docs.map((doc) => {
      const sentences = prepareText(doc.text).sentences;
      const words = sentences.flatMap((s) => s.tokens);
      return { id: doc.id, sentences, gold: doc.spans.map((g) => ({ start: g.start, end: g.end, label: g.label, words: wordsIn(words, g.start, g.end) })) };
    });
  }
  const data = await readIob(path);
  const notes: EvalNote[] = [];
  for (let from = 0; from < data.length; from += noteSentences) {
    const sentences: Sentence[] = [];
    const gold: EvalSpan[] = [];
    let offset = 0;
    data.slice(from, from + noteSentences).forEach((s, index) => {
      const start = offset;
      const tokens: WordToken[] = s.tokens.map((t) => {
        const tok = { text: normalize(t).text, start: offset, end: offset + t.length };
        offset += t.length + 1;
        return tok;
      });
      sentences.push({ index, start, end: Math.max(start, offset - 1), tokens });
      for (const g of iobSpans(s.tags)) gold.push({ start: tokens[g.first].start, end: tokens[g.last].end, label: g.label, words: g.last - g.first + 1 });
    });
    notes.push({ id: `${from}`, sentences, gold });
  }
  return notes;
}

function wordsIn(words: readonly WordToken[], start: number, end: number): number {
  let n = 0;
  for (const t of words) if (t.start < end && t.end > start) n++;
  return Math.max(1, n);
}

export interface RouterSetting {
  policy: PolicyName;
  budgetMs: number;
  settings?: Partial<PolicySettings>;
  label?: string;
}

export interface RouterEvalReport extends EvalResult {
  documents: number;
  sentences: number;
  words: number;
  /** Share of sentences whose spans came from the LLM. */
  llm_share: number;
  /** Tagger milliseconds per sentence (encoder + LLM, fallbacks included). */
  cost_ms_per_sentence: number;
  /** Notes whose tagging time exceeded their budget (real runs only; a replay plans within budget by construction). */
  over_budget_notes: number;
  setting: RouterSetting;
}

const budgetSettings = (ms: number): BudgetSettings => ({
  defaultBudgetMs: ms,
  topicBudgets: {},
  load: { inFlightHigh: Infinity, lagHigh: Infinity, minFactor: 1 },
});

interface RunInputs {
  notes: readonly EvalNote[];
  setting: RouterSetting;
  calibration: DomainCalibration;
  estimator: LongEntityEstimator | null;
  taggers: { encoder: Tagger; llm: Tagger };
  clock?: { now: () => number; costs?: Record<'encoder' | 'llm', RouteCost> };
}

async function runRouter(inputs: RunInputs): Promise<RouterEvalReport> {
  const { notes, setting, calibration, estimator, taggers } = inputs;
  const calib = inputs.clock?.costs === undefined ? calibration : { ...calibration, costs: inputs.clock.costs };
  const router = createRouter({ policy: setting.policy, calibration: calib, estimator, settings: setting.settings });
  const now = inputs.clock?.now ?? (() => performance.now());
  const processor = new NoteProcessor(router, taggers, {}, { clock: now, budget: budgetSettings(setting.budgetMs) });
  const scorer = new StrictScorer();
  let sentences = 0;
  let words = 0;
  let llmSentences = 0;
  let taggerMs = 0;
  let over = 0;
  for (const note of notes) {
    const budget = resolveBudget({ noteBudgetMs: null }, budgetSettings(setting.budgetMs));
    const out = await processor.tagSentences(note.id, note.sentences, budget, { receivedAt: now() });
    const noteWords = note.sentences.flatMap((s) => s.tokens);
    sentences += note.sentences.length;
    words += noteWords.length;
    llmSentences += out.routing.sentencesLlm;
    const ms = out.routing.actualEncoderMs + out.routing.actualLlmMs;
    taggerMs += ms;
    if (ms > budget.effectiveMs) over++;
    scorer.add(
      note.gold,
      out.spans.map((p) => ({ start: p.start, end: p.end, label: p.label, words: wordsIn(noteWords, p.start, p.end) })),
    );
  }
  return {
    ...scorer.result(),
    documents: notes.length,
    sentences,
    words,
    llm_share: sentences > 0 ? llmSentences / sentences : 0,
    cost_ms_per_sentence: sentences > 0 ? taggerMs / sentences : 0,
    over_budget_notes: over,
    setting,
  };
}

/**
 * `eval --tagger router`: the real NoteProcessor over real taggers in real
 * time, one note after another (so tagger times do not overlap); the router
 * starts from the calibration and learns costs online as in production.
 */
export function evaluateRouter(
  notes: readonly EvalNote[],
  setting: RouterSetting,
  calibration: DomainCalibration,
  estimator: LongEntityEstimator | null,
  taggers: { encoder: Tagger; llm: Tagger },
): Promise<RouterEvalReport> {
  return runRouter({ notes, setting, calibration, estimator, taggers });
}

/** Every sentence tagged once by each tagger, with the measured cost per word of each. */
export interface TaggedCorpus {
  notes: readonly EvalNote[];
  encoder: WeakMap<Sentence, SentenceTagging>;
  llm: WeakMap<Sentence, SentenceTagging>;
  costs: Record<'encoder' | 'llm', RouteCost>;
  seconds: { encoder: number; llm: number };
}

/** Tags the whole corpus with both taggers (batched, as the calibration measures cost). */
export async function tagCorpus(notes: readonly EvalNote[], taggers: { encoder: Tagger; llm: Tagger }, chunk = 256): Promise<TaggedCorpus> {
  const all = notes.flatMap((n) => n.sentences);
  const words = all.reduce((n, s) => n + s.tokens.length, 0);
  const run = async (tagger: Tagger): Promise<{ map: WeakMap<Sentence, SentenceTagging>; ms: number }> => {
    const map = new WeakMap<Sentence, SentenceTagging>();
    let ms = 0;
    for (let i = 0; i < all.length; i += chunk) {
      const part = all.slice(i, i + chunk);
      const t0 = performance.now();
      const tagged =
        tagger.tagSentencesDetailed !== undefined
          ? await tagger.tagSentencesDetailed(part)
          : (await tagger.tagSentences(part)).map((spans) => ({ spans, minConfidence: spans.reduce((m, s) => Math.min(m, s.score), 1) }));
      ms += performance.now() - t0;
      for (const [k, s] of part.entries()) map.set(s, tagged[k]);
    }
    return { map, ms };
  };
  const enc = await run(taggers.encoder);
  const llm = await run(taggers.llm);
  const perWord = (ms: number): number => (words > 0 ? ms / words : 0);
  return {
    notes,
    encoder: enc.map,
    llm: llm.map,
    costs: { encoder: { overheadMs: 0, msPerToken: perWord(enc.ms) }, llm: { overheadMs: 0, msPerToken: perWord(llm.ms) } },
    seconds: { encoder: enc.ms / 1000, llm: llm.ms / 1000 },
  };
}

/** Answers from a tagged corpus and advances a simulated clock by the measured cost of each call. */
class ReplayTagger implements Tagger {
  readonly model;
  constructor(
    readonly route: Route,
    private readonly answers: WeakMap<Sentence, SentenceTagging>,
    private readonly clock: { t: number },
    private readonly cost: RouteCost,
    model: Tagger['model'],
  ) {
    this.model = model;
  }
  async tagSentences(sentences: readonly Sentence[]): Promise<TokenSpan[][]> {
    return (await this.tagSentencesDetailed(sentences)).map((t) => t.spans);
  }
  async tagSentencesDetailed(sentences: readonly Sentence[]): Promise<SentenceTagging[]> {
    const words = sentences.reduce((n, s) => n + s.tokens.length, 0);
    this.clock.t += this.cost.overheadMs + this.cost.msPerToken * words;
    return sentences.map((s) => {
      const a = this.answers.get(s);
      if (a === undefined) throw new DataFormatError('replay: sentence not in the tagged corpus');
      return a;
    });
  }
  async close(): Promise<void> {}
}

/**
 * A routing setting replayed over a tagged corpus: the same NoteProcessor and
 * router code, with each tagger call answered from `tagCorpus` and charged its
 * measured batched cost on a simulated clock. Routes and spans are exactly what
 * a live run with those costs would produce; cost is in the calibration's unit
 * (batched CPU ms), so settings compare fairly and the sweep takes seconds.
 */
export function replayRouter(
  corpus: TaggedCorpus,
  setting: RouterSetting,
  calibration: DomainCalibration,
  estimator: LongEntityEstimator | null,
  models: { encoder: Tagger['model']; llm: Tagger['model'] },
): Promise<RouterEvalReport> {
  const clock = { t: 0 };
  const taggers = {
    encoder: new ReplayTagger('encoder', corpus.encoder, clock, corpus.costs.encoder, models.encoder),
    llm: new ReplayTagger('llm', corpus.llm, clock, corpus.costs.llm, models.llm),
  };
  return runRouter({ notes: corpus.notes, setting, calibration, estimator, taggers, clock: { now: () => clock.t, costs: corpus.costs } });
}
