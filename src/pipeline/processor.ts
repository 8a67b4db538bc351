import { performance } from 'node:perf_hooks';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import { buildTaggedNote, type TaggedNoteRecord } from '../publish/tagged-note.js';
import type { RoutingPolicy } from '../route/policy.js';
import type { Tagger } from '../taggers/types.js';
import { toEntitySpans } from '../taggers/types.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import { silentLogger } from '../telemetry/logger.js';
import { prepareText } from '../text/index.js';
import type { EntitySpan, Route, Sentence } from '../types.js';

export interface ProcessedNote {
  record: TaggedNoteRecord;
  spans: EntitySpan[];
}

/**
 * Text -> route -> tag -> output record for one note, with no Kafka in sight:
 * the same path serves the consumer, `tag` and `eval`.
 */
export class NoteProcessor {
  private readonly hooks: Required<PipelineHooks>;

  constructor(
    private readonly policy: RoutingPolicy,
    private readonly taggers: Partial<Record<Route, Tagger>> & { encoder: Tagger },
    hooks: PipelineHooks = {},
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
    const taggerMs: Record<Route, number> = { encoder: 0, llm: 0, encoder_fallback: 0 };
    for (const [route, sentences] of byRoute) {
      const tagger = this.taggers[route] ?? this.taggers.encoder;
      const start = performance.now();
      let ok = false;
      try {
        const perSentence = await tagger.tagSentences(sentences);
        spans.push(...toEntitySpans(sentences, perSentence, tagger.route));
        ok = true;
      } finally {
        taggerMs[route] += performance.now() - start;
        this.hooks.taggerCalled({ noteId: note.noteId, route, sentences: sentences.length, ms: performance.now() - start, ok });
      }
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
        reasons: plan.reasons,
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
}
