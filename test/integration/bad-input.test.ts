import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Kafka } from 'kafkajs';
import { createProcessor, loadEncoder } from '../../src/pipeline/compose.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { runOracle, type OracleReport } from '../../src/embedded/oracle.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { DlqHeaders, headerString } from '../../src/publish/dlq.js';
import { decodeTaggedNote } from '../../src/publish/tagged-note.js';
import { avroType } from '../../src/schemas.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { testConfig, uniqueNames } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('bad-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
});

after(async () => {
  await encoder?.close();
  await cluster?.stop();
});

interface Case {
  key: string;
  value: Buffer;
  /** Expected DLQ code; undefined: a good note that must be published. */
  expect?: string;
  /** For good notes: the text, to check span offsets against. */
  text?: string;
}

const json = (o: unknown): Buffer => Buffer.from(JSON.stringify(o), 'utf8');
const good = (key: string, text: string, format: 'json' | 'avro'): Case => ({
  key,
  text,
  value: encodeNote({ noteId: key, text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, format),
});

/** Good notes with unusual characters: every one must be published with spans inside the text. */
function unusualGood(format: 'json' | 'avro'): Case[] {
  return [
    good('good-plain', 'The patient was given aspirin for chest pain and developed hypertension.', format),
    good('good-combining', 'Pt reports nause\u0301a and cafe\u0301 intake; started metformin for diabetes.', format),
    good('good-emoji', 'Patient 😷 with fever 🤒 was treated with ibuprofen 💊 for arthritis 👨‍👩‍👧.', format),
    good('good-rtl', 'المريض يعاني من السكري. The patient has diabetes and took insulin. חולה עם יתר לחץ דם.', format),
    good('good-nul', 'Patient has asthma\u0000 and was given albuterol\u0000.', format),
    good('good-control', 'Cocaine\u0007 use led to\u001b myocardial infarction.\u000b\u000cHeadache after\tcaffeine.', format),
    good('good-astral-math', '𝐀𝐬𝐩𝐢𝐫𝐢𝐧 and 𝔥𝔢𝔭𝔞𝔯𝔦𝔫 caused bleeding in a patient with renal failure.', format),
    good('good-zwj-bom', '\uFEFFZero\u200Bwidth spaces\u200D and lithium toxicity\u2028with tremor.\u00A0\u3000', format),
  ];
}

async function runCorpus(format: 'json' | 'avro', cases: Case[]): Promise<void> {
  const names = uniqueNames(`bad-${format}`);
  await cluster.createTopic(names.input, 2);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const producer = createProducer(kafka);
  await producer.connect();
  // One at a time keeps the 1 MB record in its own request.
  for (const c of cases) await producer.send({ topic: names.input, messages: [{ key: c.key, value: c.value }] });
  await producer.disconnect();

  const config = testConfig(cluster.bootstrapServers, names, { input: { format, maxNoteBytes: 500_000 } });
  const service = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await service.start();
  let report: OracleReport;
  try {
    report = await runOracle(kafka, names, 50_000);
  } finally {
    await service.close();
  }
  assert.deepEqual(report.missing, [], 'every input offset is published or dead-lettered');
  assert.equal(report.total, cases.length);
  assert.equal(report.duplicates, 0);

  const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= cases.length, 20_000);
  const dlqByKey = new Map<string, string>();
  for (const r of records.filter((x) => x.topic === names.dlq)) {
    const code = headerString(r.headers, DlqHeaders.errorCode);
    assert.ok(code !== undefined && code !== '', 'every DLQ record carries an error code');
    dlqByKey.set(r.key?.toString() ?? '', code);
  }
  const outByKey = new Map(records.filter((x) => x.topic === names.output).map((r) => [r.key?.toString() ?? '', decodeTaggedNote(r.value as Buffer)]));
  for (const c of cases) {
    if (c.expect !== undefined) {
      assert.ok(dlqByKey.has(c.key), `${c.key} is dead-lettered`);
      assert.ok(!outByKey.has(c.key), `${c.key} is not published`);
      if (c.expect !== '*') assert.equal(dlqByKey.get(c.key), c.expect, `${c.key} DLQ code`);
      continue;
    }
    const rec = outByKey.get(c.key);
    assert.ok(rec !== undefined, `${c.key} is published (DLQ code: ${dlqByKey.get(c.key) ?? 'none'})`);
    const cps = Array.from(c.text ?? '');
    assert.equal(rec.text_length, cps.length, `${c.key}: text_length counts code points`);
    for (const s of rec.spans) {
      assert.ok(s.start >= 0 && s.start < s.end && s.end <= cps.length, `${c.key}: span ${s.start}-${s.end} inside ${cps.length} code points`);
      const slice = cps.slice(s.start, s.end).join('');
      assert.ok(slice.length > 0, `${c.key}: span is non-empty`);
      assert.equal(slice.trim(), slice, `${c.key}: span ${JSON.stringify(slice)} has no leading/trailing whitespace`);
    }
  }
  const codes = Object.keys(report.byCode).sort();
  assert.ok(codes.length > 0);
}

test('malformed JSON records are dead-lettered with a code; good notes with unusual characters are published with spans inside the text', async () => {
  const bigText = 'fever '.repeat(Math.ceil(1_048_576 / 6));
  const bad: Case[] = [
    { key: 'bad-json-unterminated', value: Buffer.from('{"note_id": "x", "text": "unterminated', 'utf8'), expect: 'DECODE_FAILED' },
    { key: 'bad-json-garbage', value: Buffer.from('not json at all', 'utf8'), expect: 'DECODE_FAILED' },
    { key: 'bad-empty-value', value: Buffer.alloc(0), expect: 'DECODE_FAILED' },
    { key: 'bad-array', value: json([1, 2, 3]), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-text-number', value: json({ note_id: 'bad-text-number', text: 42 }), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-text-object', value: json({ note_id: 'bad-text-object', text: { a: 1 } }), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-id-number', value: json({ note_id: 7, text: 'aspirin' }), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-budget-string', value: json({ note_id: 'bad-budget-string', text: 'aspirin', latency_budget_ms: 'fast' }), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-metadata-number', value: json({ note_id: 'bad-metadata-number', text: 'aspirin', metadata: { a: 1 } }), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-missing-text', value: json({ note_id: 'bad-missing-text' }), expect: 'TEXT_MISSING' },
    { key: 'bad-empty-text', value: json({ note_id: 'bad-empty-text', text: '' }), expect: 'TEXT_EMPTY' },
    { key: 'bad-whitespace-text', value: json({ note_id: 'bad-whitespace-text', text: ' \n\t\r\u00A0\u3000 ' }), expect: 'TEXT_EMPTY' },
    {
      key: 'bad-utf8',
      value: Buffer.concat([Buffer.from('{"note_id":"bad-utf8","text":"fever ', 'utf8'), Buffer.from([0xc3, 0x28]), Buffer.from('"}', 'utf8')]),
      expect: 'INVALID_UTF8',
    },
    {
      key: 'bad-utf8-overlong',
      value: Buffer.concat([Buffer.from('{"note_id":"bad-utf8-overlong","text":"a', 'utf8'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}', 'utf8')]),
      expect: 'INVALID_UTF8',
    },
    { key: 'bad-lone-surrogate', value: Buffer.from('{"note_id":"bad-lone-surrogate","text":"fever \\ud800 here"}', 'utf8'), expect: 'INVALID_UTF8' },
    { key: 'bad-oversize', value: json({ note_id: 'bad-oversize', text: bigText }), expect: 'NOTE_TOO_LARGE' },
  ];
  const goods = unusualGood('json');
  // Interleave so bad records sit between good ones in every partition.
  const cases: Case[] = [];
  for (let i = 0; i < Math.max(bad.length, goods.length); i++) {
    if (i < goods.length) cases.push(goods[i]);
    if (i < bad.length) cases.push(bad[i]);
  }
  await runCorpus('json', cases);
});

test('truncated and wrong-schema Avro records are dead-lettered; good Avro notes with unusual characters are published', async () => {
  const full = encodeNote(
    { noteId: 'trunc', text: 'The patient was given aspirin for chest pain.', source: 'x', latencyBudgetMs: 100, patientId: 'p', metadata: { a: 'b' } },
    'avro',
  );
  const other = avroType('tagged-note').toBuffer({
    note_id: 'wrong-schema',
    source: null,
    input: { topic: 't', partition: 0, offset: 0 },
    model: { id: 'm', version: '1' },
    text_length: 0,
    spans: [],
    routing: {
      policy: 'p',
      budget_ms: 0,
      sentences: 0,
      sentences_encoder: 0,
      sentences_llm: 0,
      reasons: [],
      granularity: 'g',
      budget_source: 'b',
      effective_budget_ms: 0,
      load_factor: 0,
      predicted_encoder_ms: 0,
      predicted_llm_ms: 0,
      actual_encoder_ms: 0,
      actual_llm_ms: 0,
      llm_sentences: [],
      estimated_gain: 0,
    },
    timings: { text_ms: 0, route_ms: 0, encoder_ms: 0, llm_ms: 0, total_ms: 0 },
    metadata: null,
    produced_at: 0,
  });
  const bad: Case[] = [
    { key: 'bad-avro-truncated-half', value: full.subarray(0, Math.floor(full.length / 2)), expect: 'DECODE_FAILED' },
    { key: 'bad-avro-truncated-1', value: full.subarray(0, full.length - 1), expect: 'DECODE_FAILED' },
    { key: 'bad-avro-trailing', value: Buffer.concat([full, Buffer.from([1, 2, 3])]), expect: 'DECODE_FAILED' },
    { key: 'bad-avro-wrong-schema', value: other, expect: '*' },
    { key: 'bad-avro-json', value: json({ note_id: 'x', text: 'aspirin' }), expect: '*' },
    {
      key: 'bad-avro-empty-text',
      value: encodeNote({ noteId: 'bad-avro-empty-text', text: '  \n ', source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'avro'),
      expect: 'TEXT_EMPTY',
    },
    {
      key: 'bad-avro-utf8',
      value: Buffer.concat([Buffer.from([0x0a]), Buffer.from('avro-', 'utf8'), Buffer.from([0x06, 0x61, 0xc3, 0x28, 0, 0, 0, 0])]),
      expect: 'INVALID_UTF8',
    },
  ];
  const goods = unusualGood('avro');
  const cases: Case[] = [];
  for (let i = 0; i < Math.max(bad.length, goods.length); i++) {
    if (i < goods.length) cases.push(goods[i]);
    if (i < bad.length) cases.push(bad[i]);
  }
  await runCorpus('avro', cases);
});
