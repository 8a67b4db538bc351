import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Span } from '@opentelemetry/api';
import { ErrorCodes, LlmError, TaggerError, errorCodeOf } from '../errors.js';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import type { NoteOutcome } from '../publish/outcome.js';
import { DEFAULT_BUDGET_SETTINGS, llmDeadlineMs, NO_LOAD, resolveBudget, type BudgetSettings, type LoadSnapshot, type NoteBudget } from '../route/budget.js';
import type { EncoderEvidence, RouteDecision, Router } from '../route/policy.js';
import type { RoutingRecord } from '../route/record.js';
import type { SentenceTagging, Tagger } from '../taggers/types.js';
import { abortError } from '../taggers/batch-queue.js';
import { toEntitySpans } from '../taggers/types.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import { silentLogger } from '../telemetry/logger.js';
import { describeRoute, markRouteFallback, withRouteSpan, withTaggerSpan, withTextSpan } from '../telemetry/pipeline-spans.js';
import { prepareText } from '../text/index.js';
import type { EntitySpan, Route, Sentence, TokenSpan } from '../types.js';

export interface NoteProcessorOptions {
  /**
   * Longest the LLM part of a note may take, whatever the note's budget says
   * (the composition root sets half of processing.noteTimeoutMs, leaving the
   * rest for the encoder fallback and publishing). Default: the budget alone.
   */
  llmMaxMs?: number;
  /** Budget sources and the load-shedding rule (routing.* in the config). */
  budget?: BudgetSettings;
  /** Current load, for load shedding (the service's in-flight count and consumer lag). */
  load?: () => LoadSnapshot;
  /** Milliseconds clock (performance.now by default); tests pass a fake one. */
  clock?: () => number;
  /**
   * Per input topic (routing.domains): the router of that topic's domain
   * (its calibration entry and length estimator) and the LLM model name its
   * requests carry. Other topics use the processor's own router and llm.model.
   */
  topics?: ReadonlyMap<string, TopicRoute>;
}

/** What a note's input topic selects. */
export interface TopicRoute {
  domain: string;
  router: Router;
  /** Sent as the LLM requests' `model` for these notes (a LoRA adapter name); undefined: llm.model. */
  llmModel?: string;
}

/** Per-note inputs that do not come from the note body. */
export interface ProcessContext {
  /** When the record reached the router (the processor's clock); the budget counts from here. Default: now. */
  receivedAt?: number;
  /** Budget from the Kafka header `routing.budgetHeader`, when present and valid. */
  headerBudgetMs?: number | null;
  /**
   * Aborted when the caller stops waiting (the note's processing timeout):
   * queued encoder windows are dropped, LLM requests cancelled, and the call
   * rejects with the abort reason.
   */
  signal?: AbortSignal;
  /** Input topic of the note: picks its domain's router and LLM model (NoteProcessorOptions.topics). */
  topic?: string;
}

/** Reason codes added to `routing.reasons` when LLM sentences went to the encoder instead. */
export const FALLBACK_REASON = 'llm_fallback';

/** What tagging a note's sentences produced. */
export interface TaggedSentences {
  spans: EntitySpan[];
  decision: RouteDecision;
  routing: RoutingRecord;
  routeMs: number;
}

/**
 * Text -> route -> tag -> outcome for one note, with no Kafka in sight: the
 * same path serves the consumer, `tag` and `eval`. It returns a domain
 * outcome; publish/ maps it to the Avro record.
 *
 * Routing: the router (src/route) plans each sentence's route within the
 * note's effective budget. Encoder sentences are tagged first (for `cascade`,
 * all of them, with confidences), then the LLM sentences; for `cascade` the
 * router then picks sentences to re-tag with the LLM from the encoder's
 * evidence and what is left of the budget, and the LLM's spans replace the
 * encoder's for exactly those sentences. Observed tagger latencies feed the
 * cost model.
 *
 * Fallback rule (the one place it lives): the LLM call is bounded by the
 * router's deadline for it (what is left of the effective budget, capped by
 * `llmMaxMs`). If it fails for any reason (server down or refusing, request
 * timeout, 5xx, circuit open, unreadable answer, budget spent, no LLM
 * configured), those sentences keep (cascade) or get the encoder's spans with
 * route `encoder_fallback`, and the note's reasons get `llm_fallback` and
 * `llm_fallback:<ERROR_CODE>`. Only an encoder failure (or the caller's abort)
 * fails the note.
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
    this.budgetSettings = options.budget ?? DEFAULT_BUDGET_SETTINGS;
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

  async process(note: ClinicalNote, position: RecordPosition, context: ProcessContext = {}): Promise<NoteOutcome> {
    const receivedAt = context.receivedAt ?? this.now();
    const t0 = this.now();
    const prepared = withTextSpan(note.noteId, note.text.length, () => prepareText(note.text));
    const t1 = this.now();
    const budget = resolveBudget(
      { noteBudgetMs: note.latencyBudgetMs, headerBudgetMs: context.headerBudgetMs ?? null, topic: position.topic },
      this.budgetSettings,
      this.load?.() ?? NO_LOAD,
    );
    const tagged = await this.tagSentences(note.noteId, prepared.sentences, budget, { receivedAt, signal: context.signal, topic: position.topic });
    return {
      noteId: note.noteId,
      source: note.source,
      metadata: note.metadata,
      position,
      model: this.model,
      spans: tagged.spans,
      routing: tagged.routing,
      timings: {
        textMs: t1 - t0,
        routeMs: tagged.routeMs,
        encoderMs: tagged.routing.actualEncoderMs,
        llmMs: tagged.routing.actualLlmMs,
        totalMs: this.now() - receivedAt,
      },
    };
  }

  /**
   * Routes and tags already-prepared sentences (the consumer path after the
   * text stage; `eval --tagger router` calls it with corpus sentences).
   */
  async tagSentences(
    noteId: string,
    sentences: readonly Sentence[],
    budget: NoteBudget,
    context: Pick<ProcessContext, 'receivedAt' | 'signal' | 'topic'> = {},
  ): Promise<TaggedSentences> {
    const route = this.routeFor(context.topic);
    return withRouteSpan(route.router.policy, noteId, route.router.policy === 'cascade', (span) =>
      this.routeAndTag(noteId, sentences, budget, context.receivedAt ?? this.now(), context.signal, span, route),
    );
  }

  /** The topic's domain route, else the processor's own router with llm.model. */
  routeFor(topic: string | undefined): { router: Router; llmModel: string | undefined } {
    const chosen = topic === undefined ? undefined : this.options.topics?.get(topic);
    return chosen === undefined ? { router: this.router, llmModel: undefined } : { router: chosen.router, llmModel: chosen.llmModel };
  }

  private async routeAndTag(
    noteId: string,
    sentences: readonly Sentence[],
    budget: NoteBudget,
    receivedAt: number,
    signal: AbortSignal | undefined,
    routeSpan: Span,
    { router, llmModel }: { router: Router; llmModel: string | undefined },
  ): Promise<TaggedSentences> {
    const tr = this.now();
    const decision = router.plan({ sentences, budget, elapsedMs: tr - receivedAt });
    let routeMs = this.now() - tr;
    const routeCounts: Record<Route, number> = { encoder: 0, llm: 0, encoder_fallback: 0 };
    for (const r of decision.sentenceRoutes) routeCounts[r]++;
    this.hooks.routeDecided({
      noteId,
      policy: decision.policy,
      budgetMs: budget.budgetMs,
      sentences: sentences.length,
      routes: { ...routeCounts },
      reasons: [...decision.reasons],
    });

    const reasons = [...decision.reasons];
    const taggerMs = { encoder: 0, llm: 0 };
    const spansBySentence = new Map<number, EntitySpan[]>();
    const put = (list: Sentence[], perSentence: readonly TokenSpan[][], route: Route): void => {
      for (const [i, s] of list.entries()) spansBySentence.set(s.index, toEntitySpans([s], [perSentence[i]], route));
    };
    const encoderList = sentences.filter((_, i) => decision.sentenceRoutes[i] === 'encoder');
    const llmPositions = sentences.map((_, i) => i).filter((i) => decision.sentenceRoutes[i] === 'llm');

    // Encoder first: cheap, and its answer is what a failed LLM falls back on.
    let evidence: EncoderEvidence[] = [];
    if (encoderList.length > 0) {
      const { tagged: detailed, ms } = await this.runEncoder(noteId, 'encoder', encoderList, decision.cascade, signal, router);
      taggerMs.encoder += ms;
      put(
        encoderList,
        detailed.map((d) => d.spans),
        'encoder',
      );
      evidence = detailed.map((d) => ({ minConfidence: d.minConfidence, hasLongSpan: d.spans.some((sp) => sp.last - sp.first + 1 >= 3) }));
    }

    let predictedLlmMs = decision.predictedLlmMs;
    let estimatedGain = decision.estimatedGain;
    let llmTargets = llmPositions;
    if (decision.cascade) {
      const t = this.now();
      const refined = router.refine({ sentences, decision, evidence, elapsedMs: t - receivedAt });
      routeMs += this.now() - t;
      for (const r of refined.reasons) if (!reasons.includes(r)) reasons.push(r);
      llmTargets = [...refined.llmSentences].sort((a, b) => a - b);
      predictedLlmMs = refined.predictedLlmMs;
      estimatedGain = refined.estimatedGain;
    }

    const llmSentences: number[] = [];
    let fellBack = false;
    if (llmTargets.length > 0) {
      const list = llmTargets.map((i) => sentences[i]);
      const tokens = list.reduce((n, s) => n + s.tokens.length, 0);
      const call = { route: 'llm' as const, sentences: list.length, words: tokens, model: this.taggers.llm?.model.id };
      const {
        value: answer,
        failure,
        ms,
      } = await withTaggerSpan(call, this.now, async () => {
        const result = await this.tryLlm(list, llmDeadlineMs(budget, this.now() - receivedAt, this.options.llmMaxMs), signal, llmModel);
        return result.ok === undefined ? { value: undefined, failure: result.failure } : { value: result.ok };
      });
      taggerMs.llm += ms;
      this.hooks.taggerCalled({ noteId, route: 'llm', sentences: list.length, ms, ok: failure === undefined });
      if (answer !== undefined) {
        router.costs.observe('llm', tokens, ms);
        put(list, answer, 'llm');
        llmSentences.push(...llmTargets);
        if (decision.cascade) {
          routeCounts.encoder -= list.length;
          routeCounts.llm += list.length;
        }
      } else {
        // The caller stopped waiting for the whole note: no fallback, the note fails with the abort reason.
        if (signal?.aborted === true) throw abortError(signal);
        // A request that ran out of time says the LLM is at least that slow: the cost model remembers it for a while (never in its fit).
        const code = errorCodeOf(failure);
        markRouteFallback(routeSpan, failure);
        fellBack = true;
        if (code === ErrorCodes.LLM_TIMEOUT || code === ErrorCodes.LLM_BUDGET_EXCEEDED) router.costs.observeFailure('llm', tokens, ms);
        for (const reason of [FALLBACK_REASON, `${FALLBACK_REASON}:${code}`]) if (!reasons.includes(reason)) reasons.push(reason);
        if (decision.cascade) {
          // The encoder's spans for these sentences are already there; they now stand for the failed LLM call.
          for (const s of list)
            spansBySentence.set(
              s.index,
              (spansBySentence.get(s.index) ?? []).map((sp) => ({ ...sp, route: 'encoder_fallback' as const })),
            );
          routeCounts.encoder -= list.length;
        } else {
          routeCounts.llm -= list.length;
          const again = await this.runEncoder(noteId, 'encoder_fallback', list, false, signal, router);
          taggerMs.encoder += again.ms;
          put(
            list,
            again.tagged.map((d) => d.spans),
            'encoder_fallback',
          );
        }
        routeCounts.encoder_fallback += list.length;
        estimatedGain = 0;
      }
    }
    const spans = [...spansBySentence.values()].flat().sort((a, b) => a.start - b.start || a.end - b.end);
    const routing: RoutingRecord = {
      policy: decision.policy,
      granularity: decision.granularity,
      budgetMs: budget.budgetMs,
      budgetSource: budget.source,
      effectiveBudgetMs: budget.effectiveMs,
      loadFactor: budget.loadFactor,
      sentences: sentences.length,
      sentencesEncoder: routeCounts.encoder + routeCounts.encoder_fallback,
      sentencesLlm: routeCounts.llm,
      llmSentences,
      reasons,
      predictedEncoderMs: decision.predictedEncoderMs,
      predictedLlmMs,
      actualEncoderMs: taggerMs.encoder,
      actualLlmMs: taggerMs.llm,
      estimatedGain,
    };
    // The router's choice (for cascade, its refine step's) goes on the span: all encoder, all LLM, or some of each.
    describeRoute(routeSpan, routing, routeCounts.encoder_fallback, llmTargets.length, routeMs, fellBack);
    return { spans, decision, routing, routeMs };
  }

  /** One encoder call: timed, reported to the hooks, and (when it succeeds) fed to the cost model. */
  private async runEncoder(
    noteId: string,
    route: Route,
    list: Sentence[],
    detailed: boolean,
    signal: AbortSignal | undefined,
    router: Router,
  ): Promise<{ tagged: SentenceTagging[]; ms: number }> {
    const tagger = this.taggers.encoder;
    const words = list.reduce((n, s) => n + s.tokens.length, 0);
    let ok = false;
    const start = this.now();
    let ms = 0;
    try {
      const out = await withTaggerSpan({ route, sentences: list.length, words, model: tagger.model.id }, this.now, async () => {
        let tagged: SentenceTagging[];
        if (detailed && tagger.tagSentencesDetailed !== undefined) tagged = await tagger.tagSentencesDetailed(list, { signal });
        else tagged = (await tagger.tagSentences(list, { signal })).map((s) => ({ spans: s, minConfidence: s.reduce((m, sp) => Math.min(m, sp.score), 1) }));
        return { value: tagged };
      });
      ok = true;
      ms = out.ms;
      return { tagged: out.value, ms };
    } finally {
      if (!ok) ms = this.now() - start;
      this.hooks.taggerCalled({ noteId, route, sentences: list.length, ms, ok });
      if (ok) router.costs.observe('encoder', words, ms);
    }
  }

  /**
   * Runs the LLM call within `limitMs` (the router's deadline for it): its
   * spans, or the failure to fall back on. The call is cancelled (queued
   * windows dropped, requests aborted) once it is no longer awaited or the
   * caller's `signal` aborts, and a late answer is discarded.
   */
  private async tryLlm(
    sentences: Sentence[],
    limitMs: number,
    parent: AbortSignal | undefined,
    model: string | undefined,
  ): Promise<{ ok: TokenSpan[][]; failure?: undefined } | { ok?: undefined; failure: unknown }> {
    const tagger = this.taggers.llm;
    if (tagger === undefined)
      return { failure: new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'the routing policy chose the LLM but no LLM tagger is configured') };
    if (limitMs <= 0)
      return { failure: new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, `the note's budget was spent before the LLM was called (${sentences.length} sentences)`) };
    const controller = new AbortController();
    // Every request of the note listens on this one signal (removed when it ends); above 10 Node would warn of a leak that is not one.
    setMaxListeners(0, controller.signal);
    const overBudget = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, `the LLM did not answer within the note's remaining budget (${limitMs} ms)`);
    let timer: NodeJS.Timeout | undefined;
    let onParentAbort: (() => void) | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort(overBudget);
        reject(overBudget);
      }, limitMs);
      if (parent !== undefined) {
        onParentAbort = (): void => {
          const reason = abortError(parent);
          controller.abort(reason);
          reject(reason);
        };
        if (parent.aborted) onParentAbort();
        else parent.addEventListener('abort', onParentAbort, { once: true });
      }
    });
    let work: Promise<TokenSpan[][]>;
    try {
      work = tagger.tagSentences(sentences, model === undefined ? { signal: controller.signal } : { signal: controller.signal, model });
    } catch (err) {
      clearTimeout(timer);
      if (onParentAbort !== undefined) parent?.removeEventListener('abort', onParentAbort);
      return { failure: err };
    }
    work.catch(() => undefined); // when the deadline wins, the late failure is expected
    try {
      return { ok: await Promise.race([work, deadline]) };
    } catch (err) {
      return { failure: err };
    } finally {
      clearTimeout(timer);
      if (onParentAbort !== undefined) parent?.removeEventListener('abort', onParentAbort);
      if (!controller.signal.aborted) controller.abort(new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'the note no longer waits for the LLM'));
    }
  }
}
