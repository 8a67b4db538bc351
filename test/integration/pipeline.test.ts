import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Admin, Kafka } from 'kafkajs';
import { createProcessor, loadEncoder } from '../../src/pipeline/compose.js';
import { malformedRecords } from '../../src/cli/demo.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { decodeTaggedNote } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { account, committedCoversAll, fixtureNotes, inputOffsets, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let admin: Admin;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 3 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('setup'));
  kafka = createKafka(config.kafka, silentLogger);
  admin = kafka.admin();
  await admin.connect();
  encoder = await loadEncoder(config.encoder);
});

after(async () => {
  await admin?.disconnect();
  await encoder?.close();
  await cluster?.stop();
});

async function createTopics(names: { input: string; output: string; dlq: string }): Promise<void> {
  await cluster.createTopic(names.input, 3);
  await cluster.createTopic(names.output, 3);
  await cluster.createTopic(names.dlq, 1);
}

async function produce(topic: string, messages: Array<{ key: string; value: Buffer }>): Promise<void> {
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({ topic, messages });
  await producer.disconnect();
}

test('every input offset ends as exactly one output or one DLQ record, and commits cover them all', async () => {
  const names = uniqueNames('e2e');
  await createTopics(names);
  const notes = fixtureNotes().slice(0, 24);
  const bad = malformedRecords();
  const config = testConfig(cluster.bootstrapServers, names, { input: { maxNoteBytes: 200_000 } });
  const oversize = {
    key: 'bad-oversize',
    value: encodeNote({ noteId: 'bad-oversize', text: 'fever '.repeat(40_000), source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
    expect: 'NOTE_TOO_LARGE',
  };
  const good = notes.map((n, i) => ({
    key: `note-${i}`,
    value: encodeNote({ noteId: `note-${i}`, text: n.text, source: 'mtsamples', latencyBudgetMs: null, patientId: `patient-${i}`, metadata: null }, 'json'),
  }));
  // Interleave bad records among good ones so one bad record never stalls its neighbours.
  const all = [...good.slice(0, 8), ...bad.slice(0, 3), ...good.slice(8, 16), oversize, ...bad.slice(3), ...good.slice(16)];
  await produce(
    names.input,
    all.map(({ key, value }) => ({ key, value })),
  );

  const service = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await service.start();
  const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= all.length, 90_000);
  await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'committed offsets to reach the end of every partition');
  await service.close();
  await service.close(); // a second close is harmless

  const acc = account(records, names);
  const offsets = await inputOffsets(admin, names.input);
  assert.equal(offsets.length, all.length);
  for (const o of offsets) {
    const p = acc.published.get(o) ?? 0;
    const d = acc.deadLettered.get(o)?.count ?? 0;
    assert.equal(p + d, 1, `offset ${o}: published ${p}, dead-lettered ${d}`);
  }
  const codes = [...acc.deadLettered.values()].map((d) => d.code).sort();
  assert.deepEqual(codes, [...bad.map((b) => b.expect), 'NOTE_TOO_LARGE'].sort());
  assert.equal(acc.published.size, good.length);
  assert.ok(await committedCoversAll(admin, names.group, names.input));

  // Output records: keyed by note id, spans inside the text, labels from the model.
  const outputs = records.filter((r) => r.topic === names.output);
  for (const r of outputs) {
    const rec = decodeTaggedNote(r.value as Buffer);
    assert.equal(r.key?.toString(), rec.note_id);
    const i = Number(rec.note_id.split('-')[1]);
    const text = notes[i].text;
    const cps = Array.from(text);
    assert.equal(rec.text_length, cps.length);
    for (const s of rec.spans) {
      assert.ok(s.start >= 0 && s.start < s.end && s.end <= cps.length);
      assert.ok(encoder.model.entityTypes.includes(s.label));
      assert.equal(s.route, 'encoder');
      const spanText = cps.slice(s.start, s.end).join('');
      assert.equal(spanText.trim(), spanText, 'spans do not start or end with whitespace');
    }
  }
  const totalSpans = outputs.reduce((n, r) => n + decodeTaggedNote(r.value as Buffer).spans.length, 0);
  assert.ok(totalSpans > 0, 'the encoder found entities in the fixture notes');
});

test('a consumer stopped mid-stream is resumed by a new one in the same group with nothing missing', async () => {
  const names = uniqueNames('restart');
  await createTopics(names);
  const notes = fixtureNotes();
  const total = 60;
  const messages = Array.from({ length: total }, (_, i) => ({
    key: `r-${i}`,
    value: encodeNote({ noteId: `r-${i}`, text: notes[i % notes.length].text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
  }));
  await produce(names.input, messages);
  const config = testConfig(cluster.bootstrapServers, names, { processing: { concurrency: 2, maxInFlight: 4 } });

  const first = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await first.start();
  await waitFor(() => first.stats.published >= 10, 60_000, 'the first consumer to publish some notes');
  await first.close();
  const afterFirst = first.stats.published;
  assert.ok(afterFirst < total, `the first consumer stopped mid-stream (published ${afterFirst} of ${total})`);

  const second = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await second.start();
  const records = await readTopics(
    kafka,
    [names.output, names.dlq],
    (rs) => new Set(rs.filter((r) => r.topic === names.output).map((r) => decodeTaggedNote(r.value as Buffer).note_id)).size >= total,
    90_000,
  );
  await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'commits to cover the topic');
  await second.close();

  const acc = account(records, names);
  const missing = (await inputOffsets(admin, names.input)).filter((o) => !acc.published.has(o));
  assert.deepEqual(missing, []);
  const duplicates = [...acc.published.values()].filter((n) => n > 1).length;
  // The drain commits what it finished, so a graceful stop should not replay anything.
  assert.equal(duplicates, 0, 'graceful stop committed all finished work');
  assert.ok(second.stats.published > 0 && second.stats.published <= total - afterFirst + 4);
});
