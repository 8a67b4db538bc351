import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidRecordError } from '../../src/errors.js';
import { buildDlqMessage, DlqHeaders, headerString } from '../../src/publish/dlq.js';
import { readFileSync } from 'node:fs';
import avro from 'avsc';
import { toTaggedNoteRecord, decodeTaggedNote, encodeTaggedNote, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';

test('span offsets are published in code points, not UTF-16 units', () => {
  // Two non-BMP characters (2 UTF-16 units each) before the entity.
  const text = '𝛼🧪 given cisplatin today';
  const start16 = text.indexOf('cisplatin');
  const end16 = start16 + 'cisplatin'.length;
  const record = toTaggedNoteRecord(
    {
      noteId: 'n1',
      source: null,
      position: { topic: 'in', partition: 2, offset: '41' },
      model: { id: 'm', version: '1' },
      spans: [{ start: start16, end: end16, label: 'Chemical', score: 0.9, sentenceIndex: 0, route: 'encoder' }],
      routing: {
        policy: 'cascade',
        budgetMs: 100,
        sentences: 1,
        sentencesEncoder: 0,
        sentencesLlm: 1,
        reasons: ['flag_long_span'],
        granularity: 'sentence',
        budgetSource: 'header',
        effectiveBudgetMs: 50,
        loadFactor: 0.5,
        predictedEncoderMs: 1.5,
        predictedLlmMs: 9.25,
        actualEncoderMs: 2,
        actualLlmMs: 11,
        llmSentences: [0],
        estimatedGain: 0.03,
      },
      timings: { textMs: 0.1, routeMs: 0, encoderMs: 2, llmMs: 0, totalMs: 3 },
      metadata: null,
    },
    text,
  );
  const cps = Array.from(text);
  assert.equal(record.text_length, cps.length);
  const span = record.spans[0];
  assert.equal(span.start, start16 - 2);
  assert.equal(cps.slice(span.start, span.end).join(''), 'cisplatin');
  const decoded = decodeTaggedNote(encodeTaggedNote(record));
  assert.equal(decoded.note_id, 'n1');
  assert.equal(decoded.input.offset, 41);
  assert.equal(decoded.spans[0].route, 'encoder');
  assert.equal(decoded.spans[0].start, span.start);
  assert.ok(Math.abs(decoded.spans[0].score - 0.9) < 1e-6);
  assert.deepEqual(decoded.routing.llm_sentences, [0]);
  assert.equal(decoded.routing.budget_source, 'header');
  assert.equal(decoded.routing.effective_budget_ms, 50);
  assert.ok(Math.abs(decoded.routing.predicted_llm_ms - 9.25) < 1e-6);
});

test('decision-record fields evolve compatibly: records written before them decode with defaults, and old readers skip them', () => {
  const current = JSON.parse(readFileSync(new URL('../../schemas/tagged-note.avsc', import.meta.url), 'utf8')) as {
    fields: Array<{ name: string; type: { fields?: Array<{ name: string }> } }>;
  };
  // The schema as the backbone release wrote it: RouteSummary up to `reasons`.
  const old = structuredClone(current);
  const routing = old.fields.find((f) => f.name === 'routing');
  assert.ok(routing?.type.fields !== undefined);
  routing.type.fields = routing.type.fields.slice(0, routing.type.fields.findIndex((f) => f.name === 'reasons') + 1);
  const oldType = avro.Type.forSchema(old as unknown as avro.Schema);
  const newType = avro.Type.forSchema(current as unknown as avro.Schema);
  const oldRecord = {
    note_id: 'n2',
    source: null,
    input: { topic: 't', partition: 0, offset: 1 },
    model: { id: 'm', version: '1' },
    text_length: 3,
    spans: [],
    routing: { policy: 'encoder', budget_ms: 100, sentences: 1, sentences_encoder: 1, sentences_llm: 0, reasons: [] },
    timings: { text_ms: 0, route_ms: 0, encoder_ms: 0, llm_ms: 0, total_ms: 0 },
    metadata: null,
    produced_at: 1,
  };
  const upgraded = newType.fromBuffer(oldType.toBuffer(oldRecord), newType.createResolver(oldType)) as { routing: Record<string, unknown> };
  assert.equal(upgraded.routing.granularity, 'sentence');
  assert.deepEqual(upgraded.routing.llm_sentences, []);
  assert.equal(upgraded.routing.load_factor, 1);
  const fresh = decodeTaggedNote(
    encodeTaggedNote({
      ...(oldRecord as unknown as TaggedNoteRecord),
      routing: {
        ...oldRecord.routing,
        granularity: 'note',
        budget_source: 'topic',
        effective_budget_ms: 40,
        load_factor: 0.4,
        predicted_encoder_ms: 1,
        predicted_llm_ms: 2,
        actual_encoder_ms: 1,
        actual_llm_ms: 2,
        llm_sentences: [0],
        estimated_gain: 0.1,
      },
    }),
  );
  const downgraded = oldType.fromBuffer(newType.toBuffer(fresh), oldType.createResolver(newType)) as { routing: Record<string, unknown> };
  assert.deepEqual(Object.keys(downgraded.routing), ['policy', 'budget_ms', 'sentences', 'sentences_encoder', 'sentences_llm', 'reasons']);
});

test('DLQ record keeps the original bytes and adds PHI-free reason headers', () => {
  const value = Buffer.from('{"note_id":"n9","text":"PATIENT SECRET"', 'utf8');
  const err = new InvalidRecordError('DECODE_FAILED', 'record value is not valid JSON', { stage: 'decode' });
  const msg = buildDlqMessage(
    { key: Buffer.from('n9'), value, headers: { trace: 'abc' }, timestamp: '1700000000000' },
    { topic: 'notes', partition: 1, offset: '17' },
    err,
    'decode',
  );
  assert.equal(msg.value, value);
  assert.equal(msg.key?.toString(), 'n9');
  assert.equal(msg.timestamp, '1700000000000');
  assert.equal(headerString(msg.headers, 'trace'), 'abc');
  assert.equal(headerString(msg.headers, DlqHeaders.sourceTopic), 'notes');
  assert.equal(headerString(msg.headers, DlqHeaders.sourcePartition), '1');
  assert.equal(headerString(msg.headers, DlqHeaders.sourceOffset), '17');
  assert.equal(headerString(msg.headers, DlqHeaders.errorCode), 'DECODE_FAILED');
  assert.equal(headerString(msg.headers, DlqHeaders.stage), 'decode');
  assert.equal(headerString(msg.headers, DlqHeaders.errorClass), 'InvalidRecordError');
  for (const v of Object.values(msg.headers)) assert.ok(!String(v).includes('SECRET'));
  // A foreign error's message may quote input: only its class is kept.
  const foreign = buildDlqMessage(
    { key: null, value, timestamp: '0' },
    { topic: 't', partition: 0, offset: '0' },
    new SyntaxError('Unexpected token in "PATIENT SECRET"'),
    'tag',
  );
  assert.equal(headerString(foreign.headers, DlqHeaders.errorCode), 'INTERNAL');
  assert.ok(!headerString(foreign.headers, DlqHeaders.errorMessage)?.includes('SECRET'));
});
