import { avroType } from '../schemas.js';
import { makeOffsetConverter } from '../text/codepoints.js';
import type { Route } from '../types.js';
import type { NoteOutcome } from './outcome.js';

/** The Avro TaggedNote record (schemas/tagged-note.avsc) as a plain object. */
export interface TaggedNoteRecord {
  note_id: string;
  source: string | null;
  input: { topic: string; partition: number; offset: number };
  model: { id: string; version: string };
  text_length: number;
  spans: Array<{ start: number; end: number; label: string; score: number; route: Route; sentence_index: number }>;
  routing: {
    policy: string;
    budget_ms: number;
    sentences: number;
    sentences_encoder: number;
    sentences_llm: number;
    reasons: string[];
    granularity: string;
    budget_source: string;
    effective_budget_ms: number;
    load_factor: number;
    predicted_encoder_ms: number;
    predicted_llm_ms: number;
    actual_encoder_ms: number;
    actual_llm_ms: number;
    llm_sentences: number[];
    estimated_gain: number;
  };
  timings: { text_ms: number; route_ms: number; encoder_ms: number; llm_ms: number; total_ms: number };
  metadata: Record<string, string> | null;
  /** Epoch milliseconds (Avro long, logicalType timestamp-millis). */
  produced_at: number;
}

/**
 * The output record of a note: span offsets converted from UTF-16 units to
 * code points of `text` (the note's original text), fields in the schema's
 * names. The one place the domain outcome meets the Avro schema.
 */
export function toTaggedNoteRecord(outcome: NoteOutcome, text: string, now: Date = new Date()): TaggedNoteRecord {
  const conv = makeOffsetConverter(text);
  const r = outcome.routing;
  const t = outcome.timings;
  return {
    note_id: outcome.noteId,
    source: outcome.source,
    input: { topic: outcome.position.topic, partition: outcome.position.partition, offset: Number(outcome.position.offset) },
    model: outcome.model,
    text_length: conv.toCodePoint(text.length),
    spans: outcome.spans.map((s) => ({
      start: conv.toCodePoint(s.start),
      end: conv.toCodePoint(s.end),
      label: s.label,
      score: s.score,
      route: s.route,
      sentence_index: s.sentenceIndex,
    })),
    routing: {
      policy: r.policy,
      budget_ms: Math.round(r.budgetMs),
      sentences: r.sentences,
      sentences_encoder: r.sentencesEncoder,
      sentences_llm: r.sentencesLlm,
      reasons: r.reasons,
      granularity: r.granularity,
      budget_source: r.budgetSource,
      effective_budget_ms: Math.round(r.effectiveBudgetMs),
      load_factor: r.loadFactor,
      predicted_encoder_ms: r.predictedEncoderMs,
      predicted_llm_ms: r.predictedLlmMs,
      actual_encoder_ms: r.actualEncoderMs,
      actual_llm_ms: r.actualLlmMs,
      llm_sentences: r.llmSentences,
      estimated_gain: r.estimatedGain,
    },
    timings: { text_ms: t.textMs, route_ms: t.routeMs, encoder_ms: t.encoderMs, llm_ms: t.llmMs, total_ms: t.totalMs },
    metadata: outcome.metadata,
    produced_at: now.getTime(),
  };
}

export function encodeTaggedNote(record: TaggedNoteRecord): Buffer {
  return avroType('tagged-note').toBuffer(record);
}

export function decodeTaggedNote(buf: Buffer): TaggedNoteRecord {
  return avroType('tagged-note').fromBuffer(buf) as TaggedNoteRecord;
}
