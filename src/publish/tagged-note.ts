import { ErrorCodes, InvalidRecordError } from '../errors.js';
import { frameConfluent, parseConfluentFrame } from '../ingest/schema-registry.js';
import { avroType } from '../schemas.js';
import { makeOffsetConverter } from '../text/codepoints.js';
import type { Route } from '../types.js';
import type { NoteOutcome } from './outcome.js';

/**
 * Headers of an output tombstone (a propagated delete has no value to say
 * where it came from): the input record's topic, partition and offset.
 */
export const SourceHeaders = {
  topic: 'bioner.source.topic',
  partition: 'bioner.source.partition',
  offset: 'bioner.source.offset',
} as const;

/** The Avro TaggedNote record (schemas/tagged-note.avsc) as a plain object. */
export interface TaggedNoteRecord {
  note_id: string;
  source: string | null;
  input: { topic: string; partition: number; offset: number };
  model: { id: string; version: string };
  text_length: number;
  /** `route` is `unknown` only when read from a writer with a route this schema does not list; `text` is null with output.spanText false or from writers before it existed. */
  spans: Array<{ start: number; end: number; label: string; score: number; route: Route | 'unknown'; sentence_index: number; text: string | null }>;
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

export interface TaggedNoteOptions {
  /** Copy each span's characters into `spans[].text` (output.spanText); default true. */
  spanText?: boolean;
}

/**
 * The output record of a note: span offsets converted from UTF-16 units to
 * code points of `text` (the note's original text), fields in the schema's
 * names. The one place the domain outcome meets the Avro schema. Span text is
 * the code-point slice [start, end) of the note, so a consumer needs no join
 * back to the input; it is PHI like the note.
 */
export function toTaggedNoteRecord(outcome: NoteOutcome, text: string, now: Date = new Date(), options: TaggedNoteOptions = {}): TaggedNoteRecord {
  const conv = makeOffsetConverter(text);
  const withText = options.spanText ?? true;
  const r = outcome.routing;
  const t = outcome.timings;
  return {
    note_id: outcome.noteId,
    source: outcome.source,
    input: { topic: outcome.position.topic, partition: outcome.position.partition, offset: Number(outcome.position.offset) },
    model: outcome.model,
    text_length: conv.toCodePoint(text.length),
    spans: outcome.spans.map((s) => {
      const start = conv.toCodePoint(s.start);
      const end = conv.toCodePoint(s.end);
      return {
        start,
        end,
        label: s.label,
        score: s.score,
        route: s.route,
        sentence_index: s.sentenceIndex,
        // Sliced back through the code-point offsets, so `text` is exactly what a consumer slicing by code points gets.
        text: withText ? text.slice(conv.toUtf16(start), conv.toUtf16(end)) : null,
      };
    }),
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

/** Avro binary of the record; with `schemaId` (output.wireFormat confluent) framed for Confluent deserializers: magic byte 0, the id, the body. */
export function encodeTaggedNote(record: TaggedNoteRecord, schemaId?: number): Buffer {
  const body = avroType('tagged-note').toBuffer(record);
  return schemaId === undefined ? body : frameConfluent(schemaId, body);
}

/**
 * Reads a TaggedNote value, raw or Confluent-framed, with the schema of this
 * version (which is what the router registers). The two cannot be confused:
 * a raw record starts with the Avro length of the non-empty note_id, which is
 * never 0 (zigzag 2n), while a framed one starts with the magic byte 0.
 */
export function decodeTaggedNote(buf: Buffer): TaggedNoteRecord {
  const body = buf.length > 0 && buf[0] === 0 ? parseConfluentFrame(buf)?.body : buf;
  if (body === undefined)
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, `a ${buf.length}-byte value is too short for the Confluent header`, { stage: 'decode' });
  return avroType('tagged-note').fromBuffer(body) as TaggedNoteRecord;
}
