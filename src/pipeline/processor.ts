import { performance } from 'node:perf_hooks';
import { ErrorCodes, LlmError, TaggerError, errorCodeOf } from '../errors.js';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import { buildTaggedNote, type TaggedNoteRecord } from '../publish/tagged-note.js';
import type { RoutingPolicy } from '../route/policy.js';
import type { Tagger } from '../taggers/types.js';
import { toEntitySpans } from '../taggers/types.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import { silentLogger } from '../telemetry/logger.js';
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
}

/** Reason codes added to `routing.reasons` when LLM sentences went to the encoder instead. */
export const FALLBACK_REASON = 'llm_fallback';

/**
 * Text -> route -> tag -> output record for one note, with no Kafka in sight:
 * the same path serves the consumer, `tag` and `eval`.
 *
 * Fallback rule (the one place it lives): the note's `llm` sentences go to the
 * LLM tagger in one call, bounded by what is left of the note's budget
 * (latency_budget_ms or routing.defaultBudgetMs, counted from receipt, capped
 * by `llmMaxMs`). If that call fails for any reason (server down or refusing,
 * request timeout, 5xx, circuit open, unreadable answer, budget spent, no LLM
 * configured), the same sentences are tagged by the encoder, their spans get
 * route `encoder_fallback`, and the note's reasons get `llm_fallback` and
 * `llm_fallback:<ERROR_CODE>`. Only an encoder failure fails the note.
 */
export class NoteProcessor {
  private readonly hooks: Required<PipelineHooks>;

  constructor(
    private readonly policy: RoutingPolicy,
    private readonly taggers: Partial<Record<Route, Tagger>> & { encoder: Tagger },
    hooks: PipelineHooks = {},
    private readonly options: NoteProcessorOptions = {},
  ) {
    this.hooks = safeHooks(hooks, silentLogger);
  }

  get model(): { id: string; version: string } {
    return { id: this.taggers.encoder.model.id, version: this.taggers.encoder.model.version };
  }

  async process(note: ClinicalNote, position: RecordPosition, receivedAt: number = performance.now()): Promise<ProcessedNote> {
    const t0 = performance.now();
    const prepared = prepareText(note.text);
    const t1 = performance.now();
    const plan = this.policy.plan({ noteBudgetMs: note.latencyBudgetMs, sentences: prepared.sentences });
    const t2 = performance.now();
    const routeCounts: Record<Route, number> = { encoder: 0, llm: 0, encoder_fallback: 0 };
    for (const r of plan.sentenceRoutes) routeCounts[r]++;
    this.hooks.routeDecided({ noteId: note.noteId, policy: plan.policy, budgetMs: plan.budgetMs, sentences: prepared.sentences.length, routes: routeCounts, reasons: plan.reasons });

    // Group sentences by route so each tagger sees one call per note.
    const byRoute = new Map<Route, Sentence[]>();
    prepared.sentences.forEach((s, i) => {
      const route = plan.sentenceRoutes[i];
      const list = byRoute.get(route) ?? [];
      list.push(s);
      byRoute.set(route, list);
    });
    const spans: EntitySpan[] = [];
    const reasons = [...plan.reasons];
    const taggerMs: Record<Route, number> = { encoder: 0, llm: 0, encoder_fallback: 0 };
    const observe = (route: Route, sentences: Sentence[], start: number, ok: boolean): void => {
      const ms = performance.now() - start;
      taggerMs[route] += ms;
      this.hooks.taggerCalled({ noteId: note.noteId, route, sentences: sentences.length, ms, ok });
    };
    const call = async (route: Route, tagger: Tagger, sentences: Sentence[]): Promise<void> => {
      const start = performance.now();
      let ok = false;
      try {
        spans.push(...toEntitySpans(sentences, await tagger.tagSentences(sentences), route));
        ok = true;
      } finally {
        observe(route, sentences, start, ok);
      }
    };
    for (const [route, sentences] of byRoute) {
      if (route !== 'llm') {
        await call(route, this.taggers[route] ?? this.taggers.encoder, sentences);
        continue;
      }
      const start = performance.now();
      const outcome = await this.tryLlm(sentences, plan.budgetMs - (start - receivedAt));
      observe('llm', sentences, start, outcome.ok !== undefined);
      if (outcome.ok !== undefined) {
        spans.push(...toEntitySpans(sentences, outcome.ok, 'llm'));
        continue;
      }
      routeCounts.llm -= sentences.length;
      routeCounts.encoder_fallback += sentences.length;
      for (const reason of [FALLBACK_REASON, `${FALLBACK_REASON}:${errorCodeOf(outcome.failure)}`]) if (!reasons.includes(reason)) reasons.push(reason);
      await call('encoder_fallback', this.taggers.encoder, sentences);
    }
    spans.sort((a, b) => a.start - b.start || a.end - b.end);
    const record = buildTaggedNote({
      noteId: note.noteId,
      source: note.source,
      text: note.text,
      position,
      model: this.model,
      spans,
      routing: {
        policy: plan.policy,
        budget_ms: plan.budgetMs,
        sentences: prepared.sentences.length,
        sentences_encoder: routeCounts.encoder + routeCounts.encoder_fallback,
        sentences_llm: routeCounts.llm,
        reasons,
      },
      timings: {
        text_ms: t1 - t0,
        route_ms: t2 - t1,
        encoder_ms: taggerMs.encoder + taggerMs.encoder_fallback,
        llm_ms: taggerMs.llm,
        total_ms: performance.now() - receivedAt,
      },
      metadata: note.metadata,
    });
    return { record, spans };
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
