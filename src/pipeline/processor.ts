import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Span } from '@opentelemetry/api';
import { ErrorCodes, LlmError, TaggerError, errorCodeOf } from '../errors.js';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import { buildTaggedNote, type TaggedNoteRecord } from '../publish/tagged-note.js';
import { NO_LOAD, resolveBudget, type BudgetSettings, type LoadSnapshot, type NoteBudget } from '../route/budget.js';
import type { EncoderEvidence, RouteDecision, Router } from '../route/policy.js';
import type { SentenceTagging, Tagger } from '../taggers/types.js';
import { toEntitySpans } from '../taggers/types.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import { BionerAttr } from '../telemetry/attributes.js';
import { silentLogger } from '../telemetry/logger.js';
import { errorType, recordFailure, tracer } from '../telemetry/tracing.js';
import { prepareText } from '../text/index.js';
import type { EntitySpan, Route, Sentence, TokenSpan } from '../types.js';

export interface ProcessedNote {
  record: TaggedNoteRecord;
  spans: EntitySpan[];
}

export interface NoteProcessorOptions {
  /**
   * Longest the LLM part of a note may take, whatever the note's budget says
   * (components.ts sets half of processing.noteTimeoutMs, leaving the rest for
   * the encoder fallback and publishing). Default: the budget alone.
   */
  llmMaxMs?: number;
  /** Budget sources and the load-shedding rule (routing.* in the config). */
  budget?: BudgetSettings;
  /** Current load, for load shedding (the service's in-flight count and consumer lag). */
  load?: () => LoadSnapshot;
  /** Milliseconds clock (performance.now by default); tests pass a fake one. */
  clock?: () => number;
}

/** Per-note inputs that do not come from the note body. */
export interface ProcessContext {
  /** Budget from the Kafka header `routing.budgetHeader`, when present and valid. */
  headerBudgetMs?: number | null;
}

/** Reason codes added to `routing.reasons` when LLM sentences went to the encoder instead. */
export const FALLBACK_REASON = 'llm_fallback';

const DEFAULT_BUDGET: BudgetSettings = { defaultBudgetMs: 5000, topicBudgets: {}, load: { inFlightHigh: Infinity, lagHigh: Infinity, minFactor: 1 } };

/** What tagging a note's sentences produced, before the output record is built. */
export interface TaggedSentences {
  spans: EntitySpan[];
  decision: RouteDecision;
  /** Sentence positions that ended up tagged by the LLM (after any fallback). */
  llmSentences: number[];
  routeCounts: Record<Route, number>;
  reasons: string[];
  taggerMs: { encoder: number; llm: number };
  predictedLlmMs: number;
  estimatedGain: number;
  routeMs: number;
}

/**
 * Text -> route -> tag -> output record for one note, with no Kafka in sight:
 * the same path serves the consumer, `tag` and `eval`.
 *
 * Routing: the router (src/route) plans each sentence's route within the
 * note's effective budget. Encoder sentences are tagged first (for `cascade`,
 * all of them, with confidences), then the LLM sentences; for `cascade` the
 * router then picks sentences to re-tag with the LLM from the encoder's
 * evidence and what is left of the budget, and the LLM's spans replace the
 * encoder's for exactly those sentences. Observed tagger latencies feed the
 * cost model.
 *
 * Fallback rule (the one place it lives): the LLM call is bounded by what is
 * left of the note's effective budget (counted from receipt, capped by
 * `llmMaxMs`). If it fails for any reason (server down or refusing, request
 * timeout, 5xx, circuit open, unreadable answer, budget spent, no LLM
 * configured), those sentences keep (cascade) or get the encoder's spans with
 * route `encoder_fallback`, and the note's reasons get `llm_fallback` and
 * `llm_fallback:<ERROR_CODE>`. Only an encoder failure fails the note.
 */
export class NoteProcessor {
  private readonly hooks: Required<PipelineHooks>;
  private readonly budgetSettings: BudgetSettings;
  private load: (() => LoadSnapshot) | undefined;
  private readonly now: () => number;

  constructor(
    readonly router: Router,
    private readonly taggers: Partial<Record<Route, Tagger>> & { encoder: Tagger },
    hooks: PipelineHooks = {},
    private readonly options: NoteProcessorOptions = {},
  ) {
    this.hooks = safeHooks(hooks, silentLogger);
    this.budgetSettings = options.budget ?? DEFAULT_BUDGET;
    this.load = options.load;
    this.now = options.clock ?? (() => performance.now());
  }

  /** The service tells the processor how loaded it is (in-flight notes, consumer lag). */
  attachLoad(load: () => LoadSnapshot): void {
    this.load = load;
  }

  get model(): { id: string; version: string } {
    return { id: this.taggers.encoder.model.id, version: this.taggers.encoder.model.version };
  }

  async process(note: ClinicalNote, position: RecordPosition, receivedAtArg?: number, context: ProcessContext = {}): Promise<ProcessedNote> {
    const receivedAt = receivedAtArg ?? this.now();
    const t0 = this.now();
    const prepared = tracer().startActiveSpan('text', (span) => {
      try {
        const out = prepareText(note.text);
        span.setAttributes({
          [BionerAttr.NOTE_ID]: note.noteId,
          [BionerAttr.NOTE_CHARS]: note.text.length,
          [BionerAttr.TEXT_SENTENCES]: out.sentences.length,
          [BionerAttr.TEXT_WORDS]: out.sentences.reduce((n, s) => n + s.tokens.length, 0),
        });
        return out;
      } catch (err) {
        recordFailure(span, err);
        throw err;
      } finally {
        span.end();
      }
    });
    const t1 = this.now();
    const budget = resolveBudget({ noteBudgetMs: note.latencyBudgetMs, headerBudgetMs: context.headerBudgetMs ?? null, topic: position.topic }, this.budgetSettings, this.load?.() ?? NO_LOAD);
    const tagged = await this.tagSentences(note.noteId, prepared.sentences, budget, receivedAt);
    const { decision } = tagged;
    const record = buildTaggedNote({
      noteId: note.noteId,
      source: note.source,
      text: note.text,
      position,
      model: this.model,
      spans: tagged.spans,
      routing: {
        policy: decision.policy,
        budget_ms: Math.round(budget.budgetMs),
        sentences: prepared.sentences.length,
        sentences_encoder: tagged.routeCounts.encoder + tagged.routeCounts.encoder_fallback,
        sentences_llm: tagged.routeCounts.llm,
        reasons: tagged.reasons,
        granularity: decision.granularity,
        budget_source: budget.source,
        effective_budget_ms: Math.round(budget.effectiveMs),
        load_factor: budget.loadFactor,
        predicted_encoder_ms: decision.predictedEncoderMs,
        predicted_llm_ms: tagged.predictedLlmMs,
        actual_encoder_ms: tagged.taggerMs.encoder,
        actual_llm_ms: tagged.taggerMs.llm,
        llm_sentences: tagged.llmSentences,
        estimated_gain: tagged.estimatedGain,
      },
      timings: {
        text_ms: t1 - t0,
        route_ms: tagged.routeMs,
        encoder_ms: tagged.taggerMs.encoder,
        llm_ms: tagged.taggerMs.llm,
        total_ms: this.now() - receivedAt,
      },
      metadata: note.metadata,
    });
    return { record, spans: tagged.spans };
  }

  /**
   * Routes and tags already-prepared sentences (the consumer path after the
   * text stage; `eval --tagger router` calls it with corpus sentences).
   */
  async tagSentences(noteId: string, sentences: readonly Sentence[], budget: NoteBudget, receivedAtArg?: number): Promise<TaggedSentences> {
    // One `route <policy>` span covers the decision and the tagger calls it led to (their `tag <route>` spans are its children).
    return tracer().startActiveSpan(`route ${this.router.policy}`, async (span) => {
      try {
        const out = await this.routeAndTag(noteId, sentences, budget, receivedAtArg, span);
        describeRoute(span, out, budget, sentences.length);
        return out;
      } catch (err) {
        recordFailure(span, err);
        throw err;
      } finally {
        span.end();
      }
    });
  }

  private async routeAndTag(noteId: string, sentences: readonly Sentence[], budget: NoteBudget, receivedAtArg: number | undefined, routeSpan: Span): Promise<TaggedSentences> {
    const receivedAt = receivedAtArg ?? this.now();
    const tr = this.now();
    const decision = this.router.plan({ sentences, budget, elapsedMs: tr - receivedAt });
    let routeMs = this.now() - tr;
    routeSpan.setAttributes({ [BionerAttr.NOTE_ID]: noteId, [BionerAttr.ROUTE_POLICY]: decision.policy, [BionerAttr.ROUTE_CASCADE]: decision.cascade });
    const routeCounts: Record<Route, number> = { encoder: 0, llm: 0, encoder_fallback: 0 };
    for (const r of decision.sentenceRoutes) routeCounts[r]++;
    this.hooks.routeDecided({ noteId, policy: decision.policy, budgetMs: budget.budgetMs, sentences: sentences.length, routes: { ...routeCounts }, reasons: [...decision.reasons] });

    const reasons = [...decision.reasons];
    const taggerMs = { encoder: 0, llm: 0 };
    const spansBySentence = new Map<number, EntitySpan[]>();
    const put = (list: Sentence[], perSentence: readonly TokenSpan[][], route: Route): void => {
      list.forEach((s, i) => spansBySentence.set(s.index, toEntitySpans([s], [perSentence[i]], route)));
    };
    const encoderList = sentences.filter((_, i) => decision.sentenceRoutes[i] === 'encoder');
    const llmPositions = sentences.map((_, i) => i).filter((i) => decision.sentenceRoutes[i] === 'llm');

    // Encoder first: cheap, and its answer is what a failed LLM falls back on.
    let evidence: EncoderEvidence[] = [];
    if (encoderList.length > 0) {
      const { tagged: detailed, ms } = await this.runEncoder(noteId, 'encoder', encoderList, decision.cascade);
      taggerMs.encoder += ms;
      put(encoderList, detailed.map((d) => d.spans), 'encoder');
      evidence = detailed.map((d) => ({ minConfidence: d.minConfidence, hasLongSpan: d.spans.some((sp) => sp.last - sp.first + 1 >= 3) }));
    }

    let predictedLlmMs = decision.predictedLlmMs;
    let estimatedGain = decision.estimatedGain;
    let llmTargets = llmPositions;
    if (decision.cascade) {
      const t = this.now();
      const refined = this.router.refine({ sentences, decision, evidence, elapsedMs: t - receivedAt });
      routeMs += this.now() - t;
      for (const r of refined.reasons) if (!reasons.includes(r)) reasons.push(r);
      llmTargets = [...refined.llmSentences].sort((a, b) => a - b);
      predictedLlmMs = refined.predictedLlmMs;
      estimatedGain = refined.estimatedGain;
    }

    const llmSentences: number[] = [];
    if (llmTargets.length > 0) {
      const list = llmTargets.map((i) => sentences[i]);
      const tokens = list.reduce((n, s) => n + s.tokens.length, 0);
      const { outcome, ms } = await tracer().startActiveSpan('tag llm', async (span) => {
        span.setAttributes({ [BionerAttr.TAGGER_ROUTE]: 'llm', [BionerAttr.TAGGER_SENTENCES]: list.length, [BionerAttr.TAGGER_WORDS]: tokens });
        if (this.taggers.llm !== undefined) span.setAttribute(BionerAttr.TAGGER_MODEL, this.taggers.llm.model.id);
        const start = this.now();
        try {
          const result = await this.tryLlm(list, budget.effectiveMs - (start - receivedAt));
          const took = this.now() - start;
          span.setAttributes({ [BionerAttr.TAGGER_MS]: took, [BionerAttr.TAGGER_OK]: result.ok !== undefined });
          if (result.ok === undefined) recordFailure(span, result.failure);
          return { outcome: result, ms: took };
        } finally {
          span.end();
        }
      });
      taggerMs.llm += ms;
      this.hooks.taggerCalled({ noteId, route: 'llm', sentences: list.length, ms, ok: outcome.ok !== undefined });
      if (outcome.ok !== undefined) {
        this.router.costs.observe('llm', tokens, ms);
        put(list, outcome.ok, 'llm');
        llmSentences.push(...llmTargets);
        if (decision.cascade) {
          routeCounts.encoder -= list.length;
          routeCounts.llm += list.length;
        }
      } else {
        // A request that ran out of time says the LLM is at least that slow: the cost model remembers it for a while (never in its fit).
        const code = errorCodeOf(outcome.failure);
        routeSpan.setAttributes({ [BionerAttr.ROUTE_FALLBACK]: true, [BionerAttr.ROUTE_FALLBACK_CODE]: errorType(outcome.failure) });
        if (code === ErrorCodes.LLM_TIMEOUT || code === ErrorCodes.LLM_BUDGET_EXCEEDED) this.router.costs.observeFailure('llm', tokens, ms);
        for (const reason of [FALLBACK_REASON, `${FALLBACK_REASON}:${code}`]) if (!reasons.includes(reason)) reasons.push(reason);
        if (decision.cascade) {
          // The encoder's spans for these sentences are already there; they now stand for the failed LLM call.
          for (const s of list) spansBySentence.set(s.index, (spansBySentence.get(s.index) ?? []).map((sp) => ({ ...sp, route: 'encoder_fallback' as const })));
          routeCounts.encoder -= list.length;
        } else {
          routeCounts.llm -= list.length;
          const again = await this.runEncoder(noteId, 'encoder_fallback', list, false);
          taggerMs.encoder += again.ms;
          put(list, again.tagged.map((d) => d.spans), 'encoder_fallback');
        }
        routeCounts.encoder_fallback += list.length;
        estimatedGain = 0;
      }
    }
    const spans = [...spansBySentence.values()].flat().sort((a, b) => a.start - b.start || a.end - b.end);
    // The router's choice (for cascade, its refine step's): all encoder, all LLM, or some of each.
    const chosen = llmTargets.length === 0 ? 'encoder' : llmTargets.length >= sentences.length ? 'llm' : 'mixed';
    routeSpan.setAttributes({ [BionerAttr.ROUTE_SENTENCES_PLANNED_LLM]: llmTargets.length, [BionerAttr.ROUTE_CHOSEN]: chosen });
    return { spans, decision, llmSentences, routeCounts, reasons, taggerMs, predictedLlmMs, estimatedGain, routeMs };
  }

  /** One encoder call: timed, reported to the hooks, and (when it succeeds) fed to the cost model. */
  private async runEncoder(noteId: string, route: Route, list: Sentence[], detailed: boolean): Promise<{ tagged: SentenceTagging[]; ms: number }> {
    const tagger = this.taggers.encoder;
    const words = list.reduce((n, s) => n + s.tokens.length, 0);
    return tracer().startActiveSpan(`tag ${route}`, async (span) => {
      span.setAttributes({ [BionerAttr.TAGGER_ROUTE]: route, [BionerAttr.TAGGER_SENTENCES]: list.length, [BionerAttr.TAGGER_WORDS]: words, [BionerAttr.TAGGER_MODEL]: tagger.model.id });
      const start = this.now();
      let ok = false;
      try {
        let tagged: SentenceTagging[];
        if (detailed && tagger.tagSentencesDetailed !== undefined) tagged = await tagger.tagSentencesDetailed(list);
        else tagged = (await tagger.tagSentences(list)).map((s) => ({ spans: s, minConfidence: s.reduce((m, sp) => Math.min(m, sp.score), 1) }));
        ok = true;
        return { tagged, ms: this.now() - start };
      } catch (err) {
        recordFailure(span, err);
        throw err;
      } finally {
        const ms = this.now() - start;
        span.setAttributes({ [BionerAttr.TAGGER_MS]: ms, [BionerAttr.TAGGER_OK]: ok });
        span.end();
        this.hooks.taggerCalled({ noteId, route, sentences: list.length, ms, ok });
        if (ok) this.router.costs.observe('encoder', words, ms);
      }
    });
  }

  /**
   * Runs the LLM call within `remainingMs` (capped by llmMaxMs): its spans, or
   * the failure to fall back on. The call is cancelled (queued windows
   * dropped, requests aborted) once it is no longer awaited, and a late answer
   * is discarded.
   */
  private async tryLlm(sentences: Sentence[], remainingMs: number): Promise<{ ok: TokenSpan[][]; failure?: undefined } | { ok?: undefined; failure: unknown }> {
    const tagger = this.taggers.llm;
    if (tagger === undefined) return { failure: new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'the routing policy chose the LLM but no LLM tagger is configured', false) };
    const limitMs = Math.floor(Math.min(remainingMs, this.options.llmMaxMs ?? Infinity));
    if (limitMs <= 0) return { failure: new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, `the note's budget was spent before the LLM was called (${sentences.length} sentences)`, false) };
    const controller = new AbortController();
    // Every request of the note listens on this one signal (removed when it ends); above 10 Node would warn of a leak that is not one.
    setMaxListeners(0, controller.signal);
    const overBudget = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, `the LLM did not answer within the note's remaining budget (${limitMs} ms)`, false);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort(overBudget);
        reject(overBudget);
      }, limitMs);
    });
    let work: Promise<TokenSpan[][]>;
    try {
      work = tagger.tagSentences(sentences, { signal: controller.signal });
    } catch (err) {
      clearTimeout(timer);
      return { failure: err };
    }
    work.catch(() => undefined); // when the deadline wins, the late failure is expected
    try {
      return { ok: await Promise.race([work, deadline]) };
    } catch (err) {
      return { failure: err };
    } finally {
      clearTimeout(timer);
      if (!controller.signal.aborted) controller.abort(new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'the note no longer waits for the LLM', false));
    }
  }
}

/** The decision attributes of a `route <policy>` span, from what tagging the note produced. */
function describeRoute(span: Span, out: TaggedSentences, budget: NoteBudget, sentences: number): void {
  const { decision, routeCounts } = out;
  span.setAttributes({
    [BionerAttr.ROUTE_GRANULARITY]: decision.granularity,
    [BionerAttr.ROUTE_BUDGET_MS]: budget.budgetMs,
    [BionerAttr.ROUTE_EFFECTIVE_BUDGET_MS]: budget.effectiveMs,
    [BionerAttr.ROUTE_BUDGET_SOURCE]: budget.source,
    [BionerAttr.ROUTE_LOAD_FACTOR]: budget.loadFactor,
    [BionerAttr.ROUTE_PREDICTED_ENCODER_MS]: decision.predictedEncoderMs,
    [BionerAttr.ROUTE_PREDICTED_LLM_MS]: out.predictedLlmMs,
    [BionerAttr.ROUTE_SENTENCES]: sentences,
    [BionerAttr.ROUTE_SENTENCES_LLM]: routeCounts.llm,
    [BionerAttr.ROUTE_SENTENCES_ENCODER]: routeCounts.encoder,
    [BionerAttr.ROUTE_SENTENCES_FALLBACK]: routeCounts.encoder_fallback,
    [BionerAttr.ROUTE_ESTIMATED_GAIN]: out.estimatedGain,
    [BionerAttr.ROUTE_REASONS]: [...out.reasons],
    [BionerAttr.ROUTE_DECISION_MS]: out.routeMs,
    [BionerAttr.ROUTE_FALLBACK]: out.reasons.includes(FALLBACK_REASON),
  });
}
