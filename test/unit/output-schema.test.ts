import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import avro from 'avsc';
import type { NoteOutcome } from '../../src/publish/outcome.js';
import { decodeTaggedNote, encodeTaggedNote, toTaggedNoteRecord, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import type { EntitySpan } from '../../src/types.js';

type Json = { [k: string]: unknown };
const readJson = (url: URL): Json => JSON.parse(readFileSync(url, 'utf8')) as Json;
const current = readJson(new URL('../../schemas/tagged-note.avsc', import.meta.url));
/** The TaggedNote schema of release 0.1.0, before span text, the `unknown` route and the field docs. */
const previous = readJson(new URL('../fixtures/schemas/tagged-note.0.1.0.avsc', import.meta.url));
const currentType = avro.Type.forSchema(current as unknown as avro.Schema);
const previousType = avro.Type.forSchema(previous as unknown as avro.Schema);

/** Every record field below `schema`, with its dotted path. */
function fieldsOf(schema: unknown, path: string, out: Array<{ path: string; field: Json }> = []): Array<{ path: string; field: Json }> {
  if (schema === null || typeof schema !== 'object') return out;
  if (Array.isArray(schema)) {
    for (const s of schema) fieldsOf(s, path, out);
    return out;
  }
  const s = schema as Json;
  if (s.type === 'record' && Array.isArray(s.fields)) {
    for (const f of s.fields as Json[]) {
      out.push({ path: `${path}.${String(f.name)}`, field: f });
      fieldsOf(f.type, `${path}.${String(f.name)}`, out);
    }
  } else if (s.type === 'array') fieldsOf(s.items, path, out);
  else if (s.type === 'map') fieldsOf(s.values, path, out);
  else if (typeof s.type === 'object') fieldsOf(s.type, path, out);
  return out;
}

test('every field of both schemas explains itself (a non-empty doc)', () => {
  for (const name of ['tagged-note', 'clinical-note']) {
    const schema = readJson(new URL(`../../schemas/${name}.avsc`, import.meta.url));
    const fields = fieldsOf(schema, String(schema.name));
    assert.ok(fields.length > (name === 'tagged-note' ? 40 : 5), `${name}: nested fields were walked`);
    for (const { path, field } of fields) assert.ok(typeof field.doc === 'string' && field.doc.trim().length > 10, `${path} has a doc`);
  }
});

function baseRecord(spans: TaggedNoteRecord['spans']): TaggedNoteRecord {
  return {
    note_id: 'n1',
    source: null,
    input: { topic: 't', partition: 0, offset: 5 },
    model: { id: 'm', version: '1' },
    text_length: 30,
    spans,
    routing: {
      policy: 'cascade',
      budget_ms: 100,
      sentences: 2,
      sentences_encoder: 1,
      sentences_llm: 1,
      reasons: [],
      granularity: 'sentence',
      budget_source: 'default',
      effective_budget_ms: 100,
      load_factor: 1,
      predicted_encoder_ms: 1,
      predicted_llm_ms: 2,
      actual_encoder_ms: 1,
      actual_llm_ms: 2,
      llm_sentences: [1],
      estimated_gain: 0,
    },
    timings: { text_ms: 0, route_ms: 0, encoder_ms: 1, llm_ms: 2, total_ms: 3 },
    metadata: null,
    produced_at: 1_700_000_000_000,
  };
}

test('BACKWARD and FORWARD with the 0.1.0 schema: old records read with defaults, new records read by old readers', () => {
  // Old writer -> new reader: span text is null, routes unchanged.
  const oldRecord = {
    ...baseRecord([]),
    spans: (['encoder', 'llm', 'encoder_fallback'] as const).map((route, i) => ({
      start: i,
      end: i + 1,
      label: 'Chemical',
      score: 0.5,
      route,
      sentence_index: 0,
    })),
  };
  const upgraded = currentType.fromBuffer(previousType.toBuffer(oldRecord), currentType.createResolver(previousType)) as TaggedNoteRecord;
  assert.deepEqual(
    upgraded.spans.map((s) => [s.route, s.text]),
    [
      ['encoder', null],
      ['llm', null],
      ['encoder_fallback', null],
    ],
  );
  // New writer -> old reader: the appended field is skipped, every route the router writes is known.
  const fresh = baseRecord(
    (['encoder', 'llm', 'encoder_fallback'] as const).map((route, i) => ({
      start: i,
      end: i + 1,
      label: 'Disease',
      score: 0.25,
      route,
      sentence_index: 1,
      text: 'x',
    })),
  );
  const downgraded = previousType.fromBuffer(encodeTaggedNote(fresh), previousType.createResolver(currentType)) as { spans: Array<Record<string, unknown>> };
  assert.deepEqual(
    downgraded.spans.map((s) => s.route),
    ['encoder', 'llm', 'encoder_fallback'],
  );
  assert.deepEqual(Object.keys(downgraded.spans[0]), ['start', 'end', 'label', 'score', 'route', 'sentence_index']);
  // Both directions resolve at the type level (what a registry's BACKWARD/FORWARD check asks).
  assert.doesNotThrow(() => currentType.createResolver(previousType));
  assert.doesNotThrow(() => previousType.createResolver(currentType));
});

test('a route added after this schema reads as `unknown` here, and as `encoder` in readers of 0.1.0 (documented)', () => {
  const later = structuredClone(current) as Json;
  const span = fieldsOf(later, 'TaggedNote').find((f) => f.path === 'TaggedNote.spans.route');
  assert.ok(span !== undefined);
  const routeType = span.field.type as { symbols: string[] };
  routeType.symbols = [...routeType.symbols, 'rules'];
  const laterType = avro.Type.forSchema(later as unknown as avro.Schema);
  const buf = laterType.toBuffer(baseRecord([{ start: 0, end: 1, label: 'Chemical', score: 1, route: 'rules' as 'llm', sentence_index: 0, text: 'a' }]));
  const here = currentType.fromBuffer(buf, currentType.createResolver(laterType)) as TaggedNoteRecord;
  assert.equal(here.spans[0].route, 'unknown');
  const before = previousType.fromBuffer(buf, previousType.createResolver(laterType)) as { spans: Array<{ route: string }> };
  assert.equal(before.spans[0].route, 'encoder', 'readers of the 0.1.0 schema attribute it to the encoder');
});

function outcome(spans: EntitySpan[]): NoteOutcome {
  return {
    noteId: 'n-span',
    source: null,
    metadata: null,
    position: { topic: 'in', partition: 1, offset: '7' },
    model: { id: 'm', version: '1' },
    spans,
    routing: {
      policy: 'encoder',
      budgetMs: 100,
      sentences: 1,
      sentencesEncoder: 1,
      sentencesLlm: 0,
      reasons: [],
      granularity: 'sentence',
      budgetSource: 'default',
      effectiveBudgetMs: 100,
      loadFactor: 1,
      predictedEncoderMs: 1,
      predictedLlmMs: 0,
      actualEncoderMs: 1,
      actualLlmMs: 0,
      llmSentences: [],
      estimatedGain: 0,
    },
    timings: { textMs: 0, routeMs: 0, encoderMs: 1, llmMs: 0, totalMs: 1 },
  };
}

test('span text is the code-point slice of the note (emoji, ZWJ sequences, combining marks); output.spanText false leaves it null', () => {
  const text = 'Pt 👨‍👩‍👧 🤒 took cafe\u0301 with 𝐀𝐬𝐩𝐢𝐫𝐢𝐧 and nause\u0301a.';
  const span = (word: string): EntitySpan => ({
    start: text.indexOf(word),
    end: text.indexOf(word) + word.length,
    label: 'X',
    score: 0.9,
    sentenceIndex: 0,
    route: 'encoder',
  });
  const words = ['cafe\u0301', '𝐀𝐬𝐩𝐢𝐫𝐢𝐧', 'nause\u0301a', '👨‍👩‍👧'];
  const record = toTaggedNoteRecord(outcome(words.map(span)), text);
  const cps = Array.from(text);
  const decoded = decodeTaggedNote(encodeTaggedNote(record));
  for (const [i, s] of decoded.spans.entries()) {
    assert.equal(s.text, cps.slice(s.start, s.end).join(''), `span ${i}: text is the code-point slice`);
    assert.equal(s.text, words[i]);
  }
  assert.equal(decoded.spans[1].end - decoded.spans[1].start, 7, 'seven mathematical letters, one code point each');
  const withheld = decodeTaggedNote(encodeTaggedNote(toTaggedNoteRecord(outcome(words.map(span)), text, undefined, { spanText: false })));
  assert.deepEqual(
    withheld.spans.map((s) => s.text),
    [null, null, null, null],
  );
  assert.deepEqual(
    withheld.spans.map((s) => [s.start, s.end]),
    decoded.spans.map((s) => [s.start, s.end]),
    'offsets are the same either way',
  );
});

test('with a schema id the value is Confluent-framed; decodeTaggedNote reads framed and raw values alike', () => {
  const record = baseRecord([{ start: 0, end: 1, label: 'Chemical', score: 1, route: 'encoder', sentence_index: 0, text: 'a' }]);
  const raw = encodeTaggedNote(record);
  const framed = encodeTaggedNote(record, 258);
  assert.deepEqual([...framed.subarray(0, 5)], [0, 0, 0, 1, 2]);
  assert.ok(framed.subarray(5).equals(raw));
  assert.notEqual(raw[0], 0, 'a raw record never starts with 0 (non-empty note_id)');
  assert.deepEqual(decodeTaggedNote(framed), decodeTaggedNote(raw));
});
