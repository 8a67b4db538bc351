import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeNote, encodeNote, type DecodeOptions } from '../../src/ingest/decode.js';
import { InvalidRecordError } from '../../src/errors.js';
import { avroType } from '../../src/schemas.js';

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v), 'utf8');
const opts: DecodeOptions = { format: 'json', maxNoteBytes: 10_000 };

function rejectsWith(value: Buffer | null, code: string, o = opts): InvalidRecordError {
  let caught: unknown;
  try {
    decodeNote(value, o);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof InvalidRecordError, `expected InvalidRecordError for ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.retriable, false);
  return caught;
}

test('valid JSON note decodes with optional fields', () => {
  const n = decodeNote(
    json({ note_id: 'n1', text: 'Aspirin 81 mg', latency_budget_ms: 300, source: 'ed', metadata: { unit: 'icu' }, patient_id: 'P-9' }),
    opts,
  );
  assert.equal(n.noteId, 'n1');
  assert.equal(n.latencyBudgetMs, 300);
  assert.deepEqual(n.metadata, { unit: 'icu' });
  assert.equal(n.patientId, 'P-9');
  const minimal = decodeNote(json({ note_id: 'n2', text: 'x' }), opts);
  assert.equal(minimal.source, null);
  assert.equal(minimal.latencyBudgetMs, null);
});

test('bad JSON input gets a code and a message without note text', () => {
  const secret = 'SECRET-MARKER-123';
  const e = rejectsWith(Buffer.from(`{"note_id":"x","text":"${secret}`, 'utf8'), 'DECODE_FAILED');
  assert.ok(!e.message.includes(secret));
  rejectsWith(null, 'DECODE_FAILED');
  rejectsWith(Buffer.alloc(0), 'DECODE_FAILED');
  rejectsWith(json({ note_id: 'x' }), 'TEXT_MISSING');
  rejectsWith(json({ note_id: 'x', text: null }), 'TEXT_MISSING');
  rejectsWith(json({ note_id: 'x', text: ' \n\t ' }), 'TEXT_EMPTY');
  const wrong = rejectsWith(json({ note_id: 'x', text: ['a', secret] }), 'SCHEMA_MISMATCH');
  assert.ok(!wrong.message.includes(secret));
  rejectsWith(json({ text: 'a' }), 'SCHEMA_MISMATCH');
  rejectsWith(json({ note_id: 7, text: 'a' }), 'SCHEMA_MISMATCH');
  rejectsWith(json([1, 2]), 'SCHEMA_MISMATCH');
  rejectsWith(json({ note_id: 'x', text: 'a', latency_budget_ms: 'fast' }), 'SCHEMA_MISMATCH');
  rejectsWith(json({ note_id: 'x', text: 'a', metadata: { k: 1 } }), 'SCHEMA_MISMATCH');
  rejectsWith(Buffer.from('{"note_id":"x","text":"\\ud800 lone"}', 'utf8'), 'INVALID_UTF8');
});

test('invalid UTF-8 and oversize records are refused before parsing', () => {
  rejectsWith(Buffer.concat([Buffer.from('{"note_id":"x","text":"a', 'utf8'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), 'INVALID_UTF8');
  const big = json({ note_id: 'x', text: 'a'.repeat(20_000) });
  const e = rejectsWith(big, 'NOTE_TOO_LARGE');
  assert.match(e.message, /input\.maxNoteBytes/);
});

test('Avro notes round-trip and malformed Avro is refused', () => {
  const avro = { format: 'avro' as const, maxNoteBytes: 10_000 };
  const note = { noteId: 'a1', text: 'Naïve 🧪 patient with asthma', source: null, latencyBudgetMs: 50, patientId: null, metadata: { k: 'v' } };
  const buf = encodeNote(note, 'avro');
  assert.deepEqual(decodeNote(buf, avro), note);
  rejectsWith(buf.subarray(0, buf.length - 3), 'DECODE_FAILED', avro);
  rejectsWith(Buffer.concat([buf, Buffer.from([0])]), 'DECODE_FAILED', avro);
  rejectsWith(json({ note_id: 'x', text: 'y' }), 'DECODE_FAILED', avro);
  // Empty text is valid Avro but not a valid note.
  rejectsWith(
    avroType('clinical-note').toBuffer({ note_id: 'e', text: '', source: null, latency_budget_ms: null, patient_id: null, metadata: null }),
    'TEXT_EMPTY',
    avro,
  );
  // Invalid UTF-8 inside the Avro string: swap a byte of "asthma" for 0xff.
  const bad = Buffer.from(buf);
  const at = bad.indexOf(Buffer.from('asthma'));
  bad[at] = 0xff;
  rejectsWith(bad, 'INVALID_UTF8', avro);
  // Confluent wire format: magic byte + 4-byte schema id before the body.
  const confluent = Buffer.concat([Buffer.from([0, 0, 0, 0, 7]), buf]);
  assert.equal(decodeNote(confluent, { ...avro, avroWireFormat: 'confluent' }).noteId, 'a1');
  rejectsWith(buf, 'DECODE_FAILED', { ...avro, avroWireFormat: 'confluent' });
});

test('values the output could not carry are refused at validation', () => {
  rejectsWith(json({ note_id: 'x', text: 'a', latency_budget_ms: 2 ** 31 }), 'SCHEMA_MISMATCH');
  rejectsWith(Buffer.from('{"note_id":"id\\udc00","text":"a"}', 'utf8'), 'INVALID_UTF8');
});
