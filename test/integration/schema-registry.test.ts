import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import avro from 'avsc';
import type { Kafka } from 'kafkajs';
import { ApiKeys, MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { runOracle, type OracleReport } from '../../src/embedded/oracle.js';
import { readTopics, type ReadRecord } from '../../src/embedded/read-topic.js';
import { RouterError } from '../../src/errors.js';
import { encodeNote } from '../../src/ingest/decode.js';
import type { ClinicalNote } from '../../src/ingest/note.js';
import { frameConfluent, parseConfluentFrame } from '../../src/ingest/schema-registry.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { createProcessor, loadEncoder } from '../../src/pipeline/compose.js';
import { RouterService } from '../../src/pipeline/service.js';
import { DlqHeaders, headerString } from '../../src/publish/dlq.js';
import { decodeTaggedNote, SourceHeaders, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import { avroType, schemaPath } from '../../src/schemas.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import { createRouterMetrics } from '../../src/telemetry/metrics.js';
import { startTestRegistry, type TestRegistry } from '../helpers/schema-registry.js';
import { fixtureNotes, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('sr-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
});

after(async () => {
  await encoder?.close();
  await cluster?.stop();
});

const clinicalNoteSchema = JSON.stringify(avroType('clinical-note').schema());

/** ClinicalNote as a later producer writes it: a field appended with a default (and given a value). */
const evolvedSchema = ((): string => {
  const s = JSON.parse(clinicalNoteSchema) as { fields: Array<Record<string, unknown>> };
  s.fields.push({ name: 'encounter_id', type: ['null', 'string'], default: null, doc: 'added by a later producer' });
  return JSON.stringify(s);
})();
const evolvedType = avro.Type.forSchema(JSON.parse(evolvedSchema) as avro.Schema);

const note = (noteId: string, text: string): ClinicalNote => ({
  noteId,
  text,
  source: 'sr-test',
  latencyBudgetMs: null,
  patientId: `patient-${noteId}`,
  metadata: null,
});
const framedV1 = (id: number, n: ClinicalNote): Buffer => frameConfluent(id, encodeNote(n, 'avro'));
const framedV2 = (id: number, n: ClinicalNote): Buffer =>
  frameConfluent(
    id,
    evolvedType.toBuffer({
      note_id: n.noteId,
      text: n.text,
      source: n.source,
      latency_budget_ms: null,
      patient_id: n.patientId,
      metadata: null,
      encounter_id: 'ENC-1',
    }),
  );

const TEXTS = [
  'The patient was given aspirin for chest pain and developed hypertension.',
  'Pt 😷 with fever 🤒 was treated with ibuprofen 💊 for arthritis 👨‍👩‍👧.',
  'Pt reports nause\u0301a and cafe\u0301 intake; started metformin for diabetes.',
  '𝐀𝐬𝐩𝐢𝐫𝐢𝐧 and 𝔥𝔢𝔭𝔞𝔯𝔦𝔫 caused bleeding in a patient with renal failure.',
];

async function topics(prefix: string, partitions = 2): Promise<ReturnType<typeof uniqueNames>> {
  const names = uniqueNames(prefix);
  await cluster.createTopic(names.input, partitions);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  return names;
}

/** In one send: each partition's records form one batch, which the router handles concurrently (the mock hands out one batch per fetch). */
async function produce(topic: string, messages: Array<{ key: string | null; value: Buffer | null }>): Promise<void> {
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({ topic, messages });
  await producer.disconnect();
}

/** What a Confluent deserializer does: magic byte, id, GET /schemas/ids/{id}, decode the body with that writer schema. */
async function decodeLikeAConsumer(registry: TestRegistry, value: Buffer, auth: string): Promise<{ schemaId: number; record: TaggedNoteRecord }> {
  const frame = parseConfluentFrame(value);
  assert.ok(frame !== undefined, 'the value carries the Confluent header');
  const res = await fetch(`${registry.url}/schemas/ids/${frame.schemaId}`, { headers: { authorization: auth } });
  assert.equal(res.status, 200);
  const { schema } = (await res.json()) as { schema: string };
  return { schemaId: frame.schemaId, record: avro.Type.forSchema(JSON.parse(schema) as avro.Schema).fromBuffer(frame.body) as TaggedNoteRecord };
}

/** avsc decodes into record classes; compare values only. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

const metricSample = (text: string, name: string, label: string): number | undefined => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(label));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
};

test('Confluent in and out: evolved writers decode, output is framed with the registered id, deletes propagate, unknown ids and unusable writers are dead-lettered', async (t) => {
  const registry = await startTestRegistry({ username: 'bioner', password: 'registry-pw' });
  t.after(() => registry.close());
  const auth = `Basic ${Buffer.from('bioner:registry-pw').toString('base64')}`;
  const dir = await mkdtemp(join(tmpdir(), 'bioner-sr-it-'));
  await writeFile(join(dir, 'user'), 'bioner\n');
  await writeFile(join(dir, 'pass'), 'registry-pw\n');
  const names = await topics('sr-both');
  const v1 = registry.register(`${names.input}-value`, clinicalNoteSchema);
  const v2 = registry.register(`${names.input}-value`, evolvedSchema);
  const jsonSchema = registry.register('other-value', '{"type":"object"}', 'JSON');
  // sr-0 is a long note (slow to tag) so that its delete, right behind it, is fast enough to overtake it if nothing kept the order.
  const notes = [fixtureNotes().reduce((a, b) => (b.text.length > a.text.length ? b : a)).text, ...TEXTS].map((text, i) => note(`sr-${i}`, text));
  const inputs: Array<{ key: string | null; value: Buffer | null; expect: 'out' | 'tombstone' | 'skipped' | string }> = [
    { key: 'sr-0', value: framedV1(v1, notes[0]), expect: 'out' },
    { key: 'sr-1', value: framedV2(v2, notes[1]), expect: 'out' },
    { key: 'bad-unknown-id', value: framedV1(987_654, note('bad-unknown-id', 'aspirin')), expect: 'SCHEMA_NOT_FOUND' },
    { key: 'sr-2', value: framedV2(v2, notes[2]), expect: 'out' },
    { key: 'bad-json-schema', value: framedV1(jsonSchema, note('bad-json-schema', 'aspirin')), expect: 'SCHEMA_INCOMPATIBLE' },
    { key: 'bad-zero-bytes', value: Buffer.alloc(0), expect: 'DECODE_FAILED' },
    { key: 'sr-3', value: framedV1(v1, notes[3]), expect: 'out' },
    { key: 'sr-4', value: framedV1(v1, notes[4]), expect: 'out' },
    // A delete right behind its note: the output must keep the order (tombstone last) even though the note is slower.
    { key: 'sr-0', value: null, expect: 'tombstone' },
    { key: null, value: null, expect: 'skipped' },
  ];
  await produce(names.input, inputs);
  const config = testConfig(cluster.bootstrapServers, names, {
    input: { format: 'avro', avroWireFormat: 'confluent' },
    output: { wireFormat: 'confluent' },
    schemaRegistry: { url: registry.url, usernameFile: join(dir, 'user'), passwordFile: join(dir, 'pass') },
  });
  const metrics = createRouterMetrics();
  const service = new RouterService(config, createProcessor(config, encoder), silentLogger, metrics.hooks);
  await service.start();
  const expectedRecords = inputs.filter((i) => i.expect !== 'skipped').length;
  let records: ReadRecord[];
  try {
    records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= expectedRecords, 60_000);
    await waitFor(() => service.stats.tombstones === 2, 10_000, 'both tombstones handled');
  } finally {
    await service.close();
  }
  const exposition = await metrics.collectPrometheus();
  await metrics.shutdown();
  assert.equal(records.length, expectedRecords);

  // The output schema: registered under <output topic>-value (TopicNameStrategy), one id for every value.
  const outputIds = registry.subjects.get(`${names.output}-value`);
  assert.ok(outputIds !== undefined && outputIds.length === 1, 'the TaggedNote schema is registered under the output subject');
  const outputs = records.filter((r) => r.topic === names.output);
  const byKey = new Map<string, TaggedNoteRecord>();
  for (const r of outputs.filter((x) => x.value !== null)) {
    const { schemaId, record } = await decodeLikeAConsumer(registry, r.value as Buffer, auth);
    assert.equal(schemaId, outputIds[0]);
    assert.deepEqual(plain(record), plain(decodeTaggedNote(r.value as Buffer)), 'the registered schema reads what the router wrote');
    assert.equal(r.key?.toString(), record.note_id);
    byKey.set(record.note_id, record);
  }
  assert.deepEqual([...byKey.keys()].sort(), ['sr-0', 'sr-1', 'sr-2', 'sr-3', 'sr-4'], 'both writer versions were read');
  let spans = 0;
  for (const [i, n] of notes.entries()) {
    const rec = byKey.get(n.noteId) as TaggedNoteRecord;
    const cps = Array.from(n.text);
    assert.equal(rec.text_length, cps.length);
    for (const s of rec.spans) {
      assert.equal(s.text, cps.slice(s.start, s.end).join(''), `note ${i}: span text is the code-point slice`);
      spans++;
    }
  }
  assert.ok(spans >= 4, `the encoder found entities (${spans})`);

  // The delete: a null value with the same key, after the note's record, naming the input position; never in the DLQ.
  const tombstones = outputs.filter((r) => r.value === null);
  assert.equal(tombstones.length, 1);
  assert.equal(tombstones[0].key?.toString(), 'sr-0');
  assert.ok(
    Number(tombstones[0].offset) > Number(outputs.find((r) => r.key?.toString() === 'sr-0' && r.value !== null)?.offset),
    'the tombstone follows the record it deletes',
  );
  assert.equal(headerString(tombstones[0].headers, SourceHeaders.topic), names.input);
  assert.ok(headerString(tombstones[0].headers, SourceHeaders.offset) !== undefined);

  // Dead letters: codes, and the original bytes untouched (the zero-byte value stays zero bytes, not null).
  const dlq = records.filter((r) => r.topic === names.dlq);
  const dlqCodes = new Map(dlq.map((r) => [r.key?.toString() ?? '', headerString(r.headers, DlqHeaders.errorCode)]));
  assert.deepEqual(Object.fromEntries(dlqCodes), {
    'bad-unknown-id': 'SCHEMA_NOT_FOUND',
    'bad-json-schema': 'SCHEMA_INCOMPATIBLE',
    'bad-zero-bytes': 'DECODE_FAILED',
  });
  for (const r of dlq) {
    const original = inputs.find((i) => i.key === r.key?.toString())?.value;
    assert.ok(
      r.value !== null && original !== null && original !== undefined && r.value.equals(original),
      `${r.key?.toString()}: DLQ keeps the original bytes`,
    );
  }
  assert.equal(dlq.find((r) => r.key?.toString() === 'bad-zero-bytes')?.value?.length, 0, 'the broker kept an empty value apart from a null one');

  // Every registry request was authorised; each writer id was fetched once.
  assert.ok(
    registry.requests.every((r) => r.status !== 401),
    'basic auth from the files',
  );
  assert.equal(registry.requests.filter((r) => r.path === `/schemas/ids/${v2}`).length, 1, 'writer schemas are cached');
  assert.equal(metricSample(exposition, 'bioner_tombstones_total', 'outcome="propagated"'), 1);
  assert.equal(metricSample(exposition, 'bioner_tombstones_total', 'outcome="skipped_no_key"'), 1);
  assert.equal(metricSample(exposition, 'bioner_schema_registry_errors_total', 'code="SCHEMA_NOT_FOUND"'), 1);
  assert.equal(metricSample(exposition, 'bioner_dlq_total', 'code="SCHEMA_INCOMPATIBLE"'), 1);

  // An outside client: Python's avro reads the framed values through the registry and slices text by code points.
  const python = '/usr/bin/python3';
  const hasAvro = spawnSync(python, ['-c', 'import avro.io, avro.schema'], { stdio: 'ignore' }).status === 0;
  await t.test(
    'outside client: python3-avro decodes the framed output through the registry; Python slicing gives the span text',
    { skip: hasAvro ? false : 'python3-avro is not installed (apt-get install python3-avro)' },
    async () => {
      const payload = JSON.stringify({
        registry: registry.url,
        auth,
        records: outputs
          .filter((r) => r.value !== null)
          .map((r) => ({ value: (r.value as Buffer).toString('base64'), text: notes.find((n) => n.noteId === r.key?.toString())?.text })),
      });
      // Asynchronous: the registry it asks lives in this process.
      const run = await runPython(python, PYTHON_CONSUMER, payload, 30_000);
      assert.equal(run.status, 0, run.stderr);
      const summary = JSON.parse(run.stdout) as { records: number; spans: number; mismatches: number; schemaIds: number[] };
      assert.equal(summary.records, notes.length);
      assert.equal(summary.spans, spans);
      assert.equal(summary.mismatches, 0);
      assert.deepEqual(summary.schemaIds, [outputIds[0]]);
    },
  );
});

function runPython(python: string, script: string, input: string, timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(python, ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** Reads framed TaggedNote values as a Python consumer would (the part of Confluent's AvroDeserializer that matters), and checks text[start:end]. */
const PYTHON_CONSUMER = `
import base64, io, json, struct, sys, urllib.request
import avro.io, avro.schema
job = json.load(sys.stdin)
schemas, spans, mismatches, ids = {}, 0, 0, set()
for r in job["records"]:
    raw = base64.b64decode(r["value"])
    magic, schema_id = struct.unpack(">bI", raw[:5])
    assert magic == 0
    ids.add(schema_id)
    if schema_id not in schemas:
        req = urllib.request.Request("%s/schemas/ids/%d" % (job["registry"], schema_id), headers={"Authorization": job["auth"]})
        schemas[schema_id] = avro.schema.parse(json.load(urllib.request.urlopen(req))["schema"])
    rec = avro.io.DatumReader(schemas[schema_id]).read(avro.io.BinaryDecoder(io.BytesIO(raw[5:])))
    assert rec["text_length"] == len(r["text"])
    for s in rec["spans"]:
        spans += 1
        if r["text"][s["start"]:s["end"]] != s["text"]:
            mismatches += 1
print(json.dumps({"records": len(job["records"]), "spans": spans, "mismatches": mismatches, "schemaIds": sorted(ids)}))
`;

test('registry down, then up: records wait uncommitted (nothing dead-lettered) and every offset is published once it answers', async (t) => {
  const registry = await startTestRegistry();
  t.after(() => registry.close());
  const names = await topics('sr-down');
  const v1 = registry.register(`${names.input}-value`, clinicalNoteSchema);
  // Looked up, not registered (autoRegister: false), under a subject of our own.
  const subject = `${names.output}-tagged`;
  const outputId = registry.register(subject, JSON.stringify(JSON.parse(readFileSync(schemaPath('tagged-note'), 'utf8')) as unknown));
  const count = 8;
  await produce(
    names.input,
    Array.from({ length: count }, (_, i) => ({ key: `down-${i}`, value: framedV1(v1, note(`down-${i}`, TEXTS[i % TEXTS.length])) })),
  );
  const config = testConfig(cluster.bootstrapServers, names, {
    input: { format: 'avro', avroWireFormat: 'confluent' },
    output: { wireFormat: 'confluent', subject },
    schemaRegistry: { url: registry.url, autoRegister: false, timeoutMs: 1000 },
  });
  const service = new RouterService(config, createProcessor(config, encoder), silentLogger);
  // The lookup at start-up goes through; the records' writer schema is asked for while the registry is down.
  const ids = /^\/schemas\/ids\//;
  registry.setFault('reset', ids);
  await service.start();
  assert.ok(
    registry.requests.some((r) => r.method === 'POST' && r.path === `/subjects/${subject}` && r.status === 200),
    'POST /subjects/{subject} found the schema',
  );
  let report: OracleReport;
  try {
    await waitFor(() => registry.requests.filter((r) => r.status === 0).length >= 2, 30_000, 'the router to try the registry while it resets connections');
    registry.setFault('unavailable', ids);
    await waitFor(() => registry.requests.filter((r) => r.status === 503).length >= 2, 30_000, 'the router to try the registry while it answers 503');
    assert.equal(service.stats.published, 0, 'nothing published without the writer schema');
    assert.equal(service.stats.deadLettered, 0, 'nothing dead-lettered while the registry is down');
    registry.setFault(false);
    report = await runOracle(kafka, names, 60_000);
  } finally {
    await service.close();
  }
  assert.deepEqual(report.missing, [], 'every input offset is accounted for');
  assert.equal(report.total, count);
  assert.equal(report.published, count);
  assert.equal(report.deadLettered, 0);
  const records = await readTopics(kafka, [names.output], (rs) => rs.length >= count, 20_000);
  for (const r of records) assert.equal(parseConfluentFrame(r.value as Buffer)?.schemaId, outputId, 'framed with the looked-up id');
  assert.ok((service.schemaRegistryStats?.failures ?? 0) >= 4);
});

test('output.spanText false publishes spans without text; raw wire format stays unframed', async () => {
  const names = await topics('sr-notext', 1);
  const notes = TEXTS.map((text, i) => note(`nt-${i}`, text));
  await produce(
    names.input,
    notes.map((n) => ({ key: n.noteId, value: encodeNote(n, 'json') })),
  );
  const config = testConfig(cluster.bootstrapServers, names, { output: { spanText: false } });
  const service = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await service.start();
  let records: ReadRecord[];
  try {
    records = await readTopics(kafka, [names.output], (rs) => rs.length >= notes.length, 60_000);
  } finally {
    await service.close();
  }
  let spans = 0;
  for (const r of records) {
    assert.notEqual(r.value?.[0], 0, 'raw Avro, no Confluent header');
    for (const s of avroType('tagged-note').fromBuffer(r.value as Buffer).spans as TaggedNoteRecord['spans']) {
      assert.equal(s.text, null);
      spans++;
    }
  }
  assert.ok(spans > 0, 'there were spans to check');
});

test('start-up refuses to run when the output schema cannot be had: not registered (autoRegister false) or refused by the registry', async () => {
  const registry = await startTestRegistry();
  try {
    const names = uniqueNames('sr-start');
    const base = { input: {}, output: { wireFormat: 'confluent' } };
    const lookupOnly = testConfig(cluster.bootstrapServers, names, { ...base, schemaRegistry: { url: registry.url, autoRegister: false } });
    const missing = new RouterService(lookupOnly, createProcessor(lookupOnly, encoder), silentLogger);
    await assert.rejects(
      missing.start(),
      (e: unknown) => e instanceof RouterError && e.code === 'SCHEMA_NOT_FOUND' && e.message.includes(`/subjects/${names.output}-value`),
    );
    await missing.close();
    registry.refuseRegistrations(true);
    const register = testConfig(cluster.bootstrapServers, names, { ...base, schemaRegistry: { url: registry.url } });
    const refused = new RouterService(register, createProcessor(register, encoder), silentLogger);
    await assert.rejects(refused.start(), (e: unknown) => e instanceof RouterError && e.code === 'SCHEMA_INCOMPATIBLE' && /HTTP 409/.test(e.message));
    await refused.close();
  } finally {
    await registry.close();
  }
});

test('a DLQ copy too large for the broker loses its value loudly: header, warn log (position and sizes, no key), metric', async () => {
  const names = await topics('sr-dlqdrop', 1);
  const value = Buffer.from('{"note_id": "drop-1", "text": "unterminated', 'utf8');
  await produce(names.input, [{ key: 'drop-1', value }]);
  const lines: string[] = [];
  const config = testConfig(cluster.bootstrapServers, names);
  const metrics = createRouterMetrics();
  const service = new RouterService(
    config,
    createProcessor(config, encoder),
    createLogger('info', (l) => lines.push(l)),
    metrics.hooks,
  );
  // The DLQ copy with its value is refused as too large (10 = MESSAGE_TOO_LARGE); the copy without it goes through.
  await cluster.pushRequestErrors(ApiKeys.Produce, [10]);
  await service.start();
  let records: ReadRecord[];
  try {
    records = await readTopics(kafka, [names.dlq], (rs) => rs.length >= 1, 60_000);
  } finally {
    await service.close();
  }
  const exposition = await metrics.collectPrometheus();
  await metrics.shutdown();
  assert.equal(records.length, 1);
  assert.equal(records[0].value, null);
  assert.equal(headerString(records[0].headers, DlqHeaders.valueDropped), String(value.length));
  assert.equal(headerString(records[0].headers, DlqHeaders.errorCode), 'DECODE_FAILED');
  const warn = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'warn' && String(l.msg).includes('DLQ copy refused'));
  assert.ok(warn !== undefined, 'a warn line says the value was dropped');
  assert.equal(warn.valueBytes, value.length);
  assert.equal(warn.keyBytes, 'drop-1'.length);
  assert.equal(warn.partition, 0);
  assert.equal(warn.offset, '0');
  assert.ok(!JSON.stringify(warn).includes('unterminated'), 'no value bytes in the log');
  assert.equal(metricSample(exposition, 'bioner_dlq_value_dropped_total', 'code="DECODE_FAILED"'), 1);
});
