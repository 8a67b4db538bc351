import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Kafka } from 'kafkajs';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/cli/components.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/ingest/kafka.js';
import { RouterService } from '../../src/pipeline/service.js';
import { decodeTaggedNote, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { fixtureNotes, testConfig, uniqueNames } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('router-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
});

after(async () => {
  await encoder?.close();
  await cluster?.stop();
});

test('budgets from the note, a header and the topic decide the routes recorded in the Avro output', async () => {
  const names = uniqueNames('router');
  await cluster.createTopic(names.input, 2);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const base = testConfig(cluster.bootstrapServers, names);
  const config = { ...base, routing: { ...base.routing, policy: 'llm' as const, topicBudgets: { [names.input]: 4000 } } };
  const notes = fixtureNotes().slice(0, 12);
  // Small budgets (2 ms) cannot even pay for the encoder: everything stays there. Large ones (8 s) pay for the LLM everywhere.
  const plan = notes.map((n, i) => {
    const kind = (['note-small', 'note-large', 'header-small', 'topic'] as const)[i % 4];
    return { id: `r-${i}`, text: n.text, kind };
  });
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic: names.input,
    messages: plan.map((p) => ({
      key: p.id,
      value: encodeNote({ noteId: p.id, text: p.text, source: 'mtsamples', latencyBudgetMs: p.kind === 'note-small' ? 2 : p.kind === 'note-large' ? 8000 : null, patientId: null, metadata: null }, 'json'),
      headers: p.kind === 'header-small' ? { 'x-latency-budget-ms': '2' } : undefined,
    })),
  });
  await producer.disconnect();

  const router = await loadRouter(config);
  const llm = await loadLlm(config);
  assert.ok(llm !== undefined, 'the llm policy loads the LLM tagger');
  const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), silentLogger);
  await service.start();
  const records = await readTopics(kafka, [names.output], (rs) => rs.length >= plan.length, 120_000);
  await service.close();
  await llm.close();

  const byId = new Map<string, TaggedNoteRecord>();
  for (const r of records) if (r.value !== null) byId.set(r.key?.toString() ?? '', decodeTaggedNote(r.value));
  assert.equal(byId.size, plan.length);
  for (const p of plan) {
    const rec = byId.get(p.id);
    assert.ok(rec !== undefined, p.id);
    const { routing } = rec;
    assert.equal(routing.policy, 'llm');
    const small = p.kind === 'note-small' || p.kind === 'header-small';
    assert.equal(routing.budget_source, p.kind === 'note-small' || p.kind === 'note-large' ? 'note' : p.kind === 'header-small' ? 'header' : 'topic', p.id);
    assert.equal(routing.budget_ms, p.kind === 'topic' ? 4000 : small ? 2 : 8000);
    if (small) {
      assert.ok(routing.predicted_encoder_ms > 2, 'the encoder alone is predicted over the 2 ms budget');
      assert.equal(routing.sentences_llm, 0, `${p.id}: no LLM within 2 ms`);
      assert.deepEqual(routing.llm_sentences, []);
      assert.ok(routing.reasons.includes('budget_exhausted') && routing.reasons.includes('budget_below_encoder_cost'), `${p.id}: ${routing.reasons.join(',')}`);
      assert.ok(rec.spans.every((s) => s.route === 'encoder'));
      assert.equal(routing.actual_llm_ms, 0);
    } else {
      assert.equal(routing.sentences_llm, routing.sentences, `${p.id}: every sentence to the LLM (${routing.reasons.join(',')})`);
      assert.deepEqual(routing.llm_sentences, Array.from({ length: routing.sentences }, (_, i) => i));
      assert.ok(routing.predicted_llm_ms > 0 && routing.actual_llm_ms > 0);
      assert.ok(rec.spans.every((s) => s.route === 'llm'));
      assert.ok(!routing.reasons.includes('budget_exhausted'));
    }
    // Offsets stay inside the note either way.
    for (const s of rec.spans) assert.ok(s.start >= 0 && s.end <= rec.text_length && s.start < s.end);
  }
});

test('cascade over the broker: the encoder tags everything, the LLM re-tags only flagged sentences, spans merged by sentence', async () => {
  const names = uniqueNames('cascade');
  await cluster.createTopic(names.input, 1);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const base = testConfig(cluster.bootstrapServers, names);
  const config = { ...base, routing: { ...base.routing, policy: 'cascade' as const, defaultBudgetMs: 4000 } };
  const notes = fixtureNotes().slice(12, 18);
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({ topic: names.input, messages: notes.map((n, i) => ({ key: `c-${i}`, value: encodeNote({ noteId: `c-${i}`, text: n.text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json') })) });
  await producer.disconnect();
  const router = await loadRouter(config);
  const llm = await loadLlm(config);
  assert.ok(llm !== undefined);
  const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), silentLogger);
  await service.start();
  const records = await readTopics(kafka, [names.output], (rs) => rs.length >= notes.length, 120_000);
  await service.close();
  await llm.close();
  let retagged = 0;
  let total = 0;
  for (const r of records) {
    const rec = decodeTaggedNote(r.value!);
    const { routing } = rec;
    assert.equal(routing.policy, 'cascade');
    assert.equal(routing.sentences_llm, routing.llm_sentences.length);
    if (routing.sentences_llm > 0) assert.ok(routing.reasons.some((x) => x.startsWith('flag_')), routing.reasons.join(','));
    retagged += routing.sentences_llm;
    total += routing.sentences;
    // A sentence's spans come from one route only: the LLM for re-tagged sentences, the encoder for the rest.
    for (const s of rec.spans) assert.equal(s.route, routing.llm_sentences.includes(s.sentence_index) ? 'llm' : 'encoder');
  }
  assert.ok(retagged > 0 && retagged < total, `some sentences, not all, were flagged and re-tagged (${retagged} of ${total})`);
});
