import type { RecordPosition } from '../ingest/note.js';
import { avroType } from '../schemas.js';
import { makeOffsetConverter } from '../text/codepoints.js';
import type { EntitySpan, Route } from '../types.js';

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

export interface TaggedNoteParts {
  noteId: string;
  source: string | null;
  text: string;
  position: RecordPosition;
  model: { id: string; version: string };
  spans: readonly EntitySpan[];
  routing: TaggedNoteRecord['routing'];
  timings: TaggedNoteRecord['timings'];
  metadata: Record<string, string> | null;
}

/** Builds the output record, converting span offsets from UTF-16 units to code points. */
export function buildTaggedNote(parts: TaggedNoteParts, now: Date = new Date()): TaggedNoteRecord {
  const conv = makeOffsetConverter(parts.text);
  return {
    note_id: parts.noteId,
    source: parts.source,
    input: { topic: parts.position.topic, partition: parts.position.partition, offset: Number(parts.position.offset) },
    model: parts.model,
    text_length: conv.toCodePoint(parts.text.length),
    spans: parts.spans.map((s) => ({
      start: conv.toCodePoint(s.start),
      end: conv.toCodePoint(s.end),
      label: s.label,
      score: s.score,
      route: s.route,
      sentence_index: s.sentenceIndex,
    })),
    routing: parts.routing,
    timings: parts.timings,
    metadata: parts.metadata,
    produced_at: now.getTime(),
  };
}

export function encodeTaggedNote(record: TaggedNoteRecord): Buffer {
  return avroType('tagged-note').toBuffer(record);
}

export function decodeTaggedNote(buf: Buffer): TaggedNoteRecord {
  return avroType('tagged-note').fromBuffer(buf) as TaggedNoteRecord;
}
