import type avro from 'avsc';
import { ErrorCodes, InternalError, InvalidRecordError } from '../errors.js';
import { avroType } from '../schemas.js';
import type { ClinicalNote } from './note.js';
import { parseConfluentFrame } from './schema-registry.js';

export type InputFormat = 'json' | 'avro';

export interface DecodeOptions {
  format: InputFormat;
  maxNoteBytes: number;
  avroWireFormat?: 'raw' | 'confluent';
  /**
   * The writer schema named by a Confluent-framed record's id (from the
   * registry, see NoteDecoder). Absent: the body is read as if written with
   * the router's own schema.
   */
  writer?: AvroWriter;
}

/** A registry schema ready to read records: its Avro type and the resolver from it to schemas/clinical-note.avsc. */
export interface AvroWriter {
  schemaId: number;
  type: avro.Type;
  resolver: avro.Resolver;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Turns one raw record value into a validated note or throws InvalidRecordError
 * with a code. Messages name fields and sizes, never values: they end up in
 * DLQ headers and logs.
 */
export function decodeNote(value: Buffer | null, options: DecodeOptions): ClinicalNote {
  const present = checkValue(value, options.maxNoteBytes);
  const raw = options.format === 'json' ? decodeJson(present) : decodeAvro(present, options.avroWireFormat ?? 'raw', options.writer);
  return validateNote(raw);
}

/**
 * The checks made before any parsing: a value is there and within
 * input.maxNoteBytes. A null value (a tombstone) never gets here in the
 * service, which propagates it as a delete; a zero-byte value is not a delete.
 */
export function checkValue(value: Buffer | null, maxNoteBytes: number): Buffer {
  if (value === null) throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record has no value (null)', { stage: 'decode' });
  if (value.length === 0)
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record value is empty (0 bytes; a delete is a null value, not an empty one)', { stage: 'decode' });
  if (value.length > maxNoteBytes) {
    throw new InvalidRecordError(
      ErrorCodes.NOTE_TOO_LARGE,
      `record value is ${value.length} bytes, above the configured limit of ${maxNoteBytes} (input.maxNoteBytes)`,
    );
  }
  return value;
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
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, `record value is not valid JSON${position === undefined ? '' : ` (at character ${position})`}`, {
      stage: 'decode',
    });
  }
}

/** The 5-byte header of a Confluent-framed value, or DECODE_FAILED. */
export function confluentFrame(value: Buffer): { schemaId: number; body: Buffer } {
  const frame = parseConfluentFrame(value);
  if (frame === undefined)
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, 'record lacks the Schema Registry header (magic byte 0 + schema id)', { stage: 'decode' });
  return frame;
}

function decodeAvro(value: Buffer, wire: 'raw' | 'confluent', writer: AvroWriter | undefined): unknown {
  let body = value;
  if (wire === 'confluent') {
    const frame = confluentFrame(value);
    if (writer !== undefined && writer.schemaId !== frame.schemaId) {
      throw new InternalError(`writer schema ${writer.schemaId} was given for a record framed with schema ${frame.schemaId}`, { stage: 'decode' });
    }
    body = frame.body;
  }
  const type = avroType('clinical-note');
  let decoded: unknown;
  try {
    // fromBuffer rejects truncated records and trailing bytes; with a resolver it reads the writer's layout into the router's fields (defaults filled, unknown fields skipped).
    decoded = writer === undefined ? type.fromBuffer(body) : type.fromBuffer(body, writer.resolver);
  } catch {
    const what =
      writer === undefined
        ? 'a valid Avro ClinicalNote (truncated, trailing bytes or another schema)'
        : `valid Avro of its writer schema ${writer.schemaId} (truncated or trailing bytes)`;
    throw new InvalidRecordError(ErrorCodes.DECODE_FAILED, `record value is not ${what}`, { stage: 'decode' });
  }
  // avsc replaces invalid UTF-8 with U+FFFD; when one shows up, a re-encode (with the schema the bytes were written with) that differs from the input proves the bytes were invalid.
  if (containsReplacementChar(decoded)) {
    const written = writer?.type ?? type;
    const asWritten = writer === undefined ? decoded : written.fromBuffer(body);
    if (!written.toBuffer(asWritten).equals(body))
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
    throw new InvalidRecordError(
      ErrorCodes.SCHEMA_MISMATCH,
      noteId === undefined ? 'field "note_id" is missing' : `field "note_id" must be a non-empty string, got ${typeName(noteId)}`,
    );
  }
  if (noteId.length > 256) throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "note_id" is ${noteId.length} characters, above 256`);
  // The id becomes the UTF-8 output key: a lone surrogate would not survive the round trip.
  if (LONE_SURROGATE.test(noteId))
    throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'field "note_id" holds an unpaired UTF-16 surrogate (not encodable as UTF-8)');
  const text = raw.text;
  if (text === undefined || text === null) throw new InvalidRecordError(ErrorCodes.TEXT_MISSING, 'field "text" is missing');
  if (typeof text !== 'string') throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "text" must be a string, got ${typeName(text)}`);
  if (text.trim() === '') throw new InvalidRecordError(ErrorCodes.TEXT_EMPTY, `field "text" is empty or whitespace only (${text.length} chars)`);
  // JSON escapes can smuggle lone surrogates (\ud800) that no UTF-8 output could carry.
  if (LONE_SURROGATE.test(text))
    throw new InvalidRecordError(ErrorCodes.INVALID_UTF8, 'field "text" holds an unpaired UTF-16 surrogate (not encodable as UTF-8)');
  const budget = raw.latency_budget_ms;
  let latencyBudgetMs: number | null = null;
  if (budget !== undefined && budget !== null) {
    if (typeof budget !== 'number' || !Number.isInteger(budget) || budget <= 0 || budget > MAX_INT32) {
      throw new InvalidRecordError(
        ErrorCodes.SCHEMA_MISMATCH,
        `field "latency_budget_ms" must be a positive integer up to ${MAX_INT32} or null, got ${typeof budget === 'number' ? 'an out-of-range number' : typeName(budget)}`,
      );
    }
    latencyBudgetMs = budget;
  }
  let metadata: Record<string, string> | null = null;
  if (raw.metadata !== undefined && raw.metadata !== null) {
    if (!isPlainObject(raw.metadata))
      throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "metadata" must be a map of strings, got ${typeName(raw.metadata)}`);
    metadata = {};
    for (const [k, v] of Object.entries(raw.metadata)) {
      if (typeof v !== 'string')
        throw new InvalidRecordError(ErrorCodes.SCHEMA_MISMATCH, `field "metadata" values must be strings (a value is ${typeName(v)})`);
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
