import { ErrorCodes, InvalidRecordError } from '../errors.js';
import { avroType } from '../schemas.js';
import type { ClinicalNote } from './note.js';

export type InputFormat = 'json' | 'avro';

export interface DecodeOptions {
  format: InputFormat;
  maxNoteBytes: number;
  avroWireFormat?: 'raw' | 'confluent';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Turns one raw record value into a validated note or throws InvalidRecordError
 * with a code. Messages name fields and sizes, never values: they end up in
 * DLQ headers and logs.
 */
export function decodeNote(value: Buffer | null, options: DecodeOptions): ClinicalNote {
  if (value === null || value.length === 0) throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record has no value (null or empty)', { stage: 'decode' });
  if (value.length > options.maxNoteBytes) {
    throw new InvalidRecordError(ErrorCodes.NOTE_TOO_LARGE, `record value is ${value.length} bytes, above the configured limit of ${options.maxNoteBytes} (input.maxNoteBytes)`);
  }
  const raw = options.format === 'json' ? decodeJson(value) : decodeAvro(value, options.avroWireFormat ?? 'raw');
  return validateNote(raw);
}

function decodeJson(value: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(value);
  } catch {
    throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'record value is not valid UTF-8', { stage: 'decode' });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    // JSON.parse messages can quote the input: keep only the position.
    const position = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, `record value is not valid JSON${position === undefined ? '' : ` (at character ${position})`}`, { stage: 'decode' });
  }
}

function decodeAvro(value: Buffer, wire: 'raw' | 'confluent'): unknown {
  let body = value;
  if (wire === 'confluent') {
    if (value.length < 5 || value[0] !== 0) throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record lacks the Schema Registry header (magic byte 0 + schema id)', { stage: 'decode' });
    body = value.subarray(5);
  }
  const type = avroType('clinical-note');
  let decoded: unknown;
  try {
    // fromBuffer rejects truncated records and trailing bytes.
    decoded = type.fromBuffer(body);
  } catch {
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record value is not a valid Avro ClinicalNote (truncated, trailing bytes or another schema)', { stage: 'decode' });
  }
  // avsc replaces invalid UTF-8 with U+FFFD; when one shows up, a re-encode that differs from the input proves the bytes were invalid.
  if (containsReplacementChar(decoded) && !type.toBuffer(decoded).equals(body)) {
    throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'a string field of the Avro record is not valid UTF-8', { stage: 'decode' });
  }
  return decoded;
}

function containsReplacementChar(record: unknown): boolean {
  if (typeof record === 'string') return record.includes('\uFFFD');
  if (record !== null && typeof record === 'object') return Object.values(record).some(containsReplacementChar);
  return false;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function optionalString(obj: Record<string, unknown>, field: string): string | null {
  const v = obj[field];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "${field}" must be a string or null, got ${typeName(v)}`);
  return v;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Avro int, the schema's type for latency_budget_ms. */
const MAX_INT32 = 2_147_483_647;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Validates a decoded JSON/Avro object against the ClinicalNote contract. */
export function validateNote(raw: unknown): ClinicalNote {
  if (!isPlainObject(raw)) throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `record must be an object, got ${typeName(raw)}`);
  const noteId = raw.note_id;
  if (typeof noteId !== 'string' || noteId.trim() === '') {
    throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, noteId === undefined ? 'field "note_id" is missing' : `field "note_id" must be a non-empty string, got ${typeName(noteId)}`);
  }
  if (noteId.length > 256) throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "note_id" is ${noteId.length} characters, above 256`);
  // The id becomes the UTF-8 output key: a lone surrogate would not survive the round trip.
  if (LONE_SURROGATE.test(noteId)) throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'field "note_id" holds an unpaired UTF-16 surrogate (not encodable as UTF-8)');
  const text = raw.text;
  if (text === undefined || text === null) throw new InvalidRecordError(ErrorCodes.TEXT_MISSING, 'field "text" is missing');
  if (typeof text !== 'string') throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "text" must be a string, got ${typeName(text)}`);
  if (text.trim() === '') throw new InvalidRecordError(ErrorCodes.TEXT_EMPTY, `field "text" is empty or whitespace only (${text.length} chars)`);
  // JSON escapes can smuggle lone surrogates (\ud800) that no UTF-8 output could carry.
  if (LONE_SURROGATE.test(text)) throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'field "text" holds an unpaired UTF-16 surrogate (not encodable as UTF-8)');
  const budget = raw.latency_budget_ms;
  let latencyBudgetMs: number | null = null;
  if (budget !== undefined && budget !== null) {
    if (typeof budget !== 'number' || !Number.isInteger(budget) || budget <= 0 || budget > MAX_INT32) {
      throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "latency_budget_ms" must be a positive integer up to ${MAX_INT32} or null, got ${typeof budget === 'number' ? 'an out-of-range number' : typeName(budget)}`);
    }
    latencyBudgetMs = budget;
  }
  let metadata: Record<string, string> | null = null;
  if (raw.metadata !== undefined && raw.metadata !== null) {
    if (!isPlainObject(raw.metadata)) throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "metadata" must be a map of strings, got ${typeName(raw.metadata)}`);
    metadata = {};
    for (const [k, v] of Object.entries(raw.metadata)) {
      if (typeof v !== 'string') throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "metadata" values must be strings (a value is ${typeName(v)})`);
      metadata[k] = v;
    }
  }
  return {
    noteId,
    text,
    source: optionalString(raw, 'source'),
    latencyBudgetMs,
    patientId: optionalString(raw, 'patient_id'),
    metadata,
  };
}

/** Serialises a note for producing (used by the demo, tests and tools). */
export function encodeNote(note: ClinicalNote, format: InputFormat): Buffer {
  const record = {
    note_id: note.noteId,
    text: note.text,
    source: note.source,
    latency_budget_ms: note.latencyBudgetMs,
    patient_id: note.patientId,
    metadata: note.metadata,
  };
  return format === 'json' ? Buffer.from(JSON.stringify(record), 'utf8') : avroType('clinical-note').toBuffer(record);
}
