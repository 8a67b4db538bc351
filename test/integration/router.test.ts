import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { Kafka } from 'kafkajs';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { decodeTaggedNote, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { createRouter, loadCalibration } from '../../src/route/index.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { prepareText } from '../../src/text/index.js';
import { fixtureNotes, testConfig, uniqueNames } from '../helpers/pipeline.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

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
      value: encodeNote(
        {
          noteId: p.id,
          text: p.text,
          source: 'mtsamples',
          latencyBudgetMs: p.kind === 'note-small' ? 2 : p.kind === 'note-large' ? 8000 : null,
          patientId: null,
          metadata: null,
        },
        'json',
      ),
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
      assert.deepEqual(
        routing.llm_sentences,
        Array.from({ length: routing.sentences }, (_, i) => i),
      );
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
  await producer.send({
    topic: names.input,
    messages: notes.map((n, i) => ({
      key: `c-${i}`,
      value: encodeNote({ noteId: `c-${i}`, text: n.text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
    })),
  });
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
    if (routing.sentences_llm > 0)
      assert.ok(
        routing.reasons.some((x) => x.startsWith('flag_')),
        routing.reasons.join(','),
      );
    retagged += routing.sentences_llm;
    total += routing.sentences;
    // A sentence's spans come from one route only: the LLM for re-tagged sentences, the encoder for the rest.
    for (const s of rec.spans) assert.equal(s.route, routing.llm_sentences.includes(s.sentence_index) ? 'llm' : 'encoder');
  }
  assert.ok(retagged > 0 && retagged < total, `some sentences, not all, were flagged and re-tagged (${retagged} of ${total})`);
});

test('load shedding over the broker: a burst above routing.load.inFlightHigh shrinks budgets and cuts LLM work with load_shed; a lone note later keeps its budget', async () => {
  const names = uniqueNames('shed');
  await cluster.createTopic(names.input, 1);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  // Shedding starts above one note in flight; with 8 in flight a note keeps 1/8 of its budget.
  const config = testConfig(cluster.bootstrapServers, names, {
    processing: { maxInFlight: 8, concurrency: 8 },
    routing: { policy: 'llm', load: { inFlightHigh: 1, minFactor: 0.1 } },
  });
  // Calibrated costs held fixed (a prior no observation can move, no memory of failed calls), so each plan below is known in advance:
  // what is tested is the budget shrinking under load, not how the cost model drifts on a busy machine.
  const router = createRouter({
    policy: 'llm',
    calibration: await loadCalibration(join(ROOT, config.routing.calibrationFile), config.routing.domain),
    costModel: { priorWeight: 1e9, failureMemoryMs: 0 },
  });
  const tokensOf = (text: string): number => prepareText(text).sentences.reduce((n, s) => n + s.tokens.length, 0);
  const allLlmMs = (text: string): number => router.costs.predict('llm', tokensOf(text));
  // Notes long enough that halving the plan matters (over 100 words each).
  const texts = fixtureNotes()
    .map((n) => n.text)
    .filter((t) => tokensOf(t) >= 100)
    .slice(0, 16);
  assert.equal(texts.length, 16);
  // Each budget is four times the note's all-LLM plan (plus room for the text stage): it all fits unshed, and cannot at 1/4 of it or less.
  const budgetOf = (text: string): number => Math.ceil(4 * allLlmMs(text) + 40);
  const note = (id: string, text: string): { key: string; value: Buffer } => ({
    key: id,
    value: encodeNote({ noteId: id, text, source: null, latencyBudgetMs: budgetOf(text), patientId: null, metadata: null }, 'json'),
  });
  const producer = createProducer(kafka);
  await producer.connect();
  // All at once, before the service starts: its first fetch holds them all, and in-flight work climbs to processing.maxInFlight.
  await producer.send({ topic: names.input, messages: texts.map((t, i) => note(`s-${i}`, t)) });

  const llm = await loadLlm(config);
  assert.ok(llm !== undefined);
  const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), silentLogger);
  const byId = new Map<string, TaggedNoteRecord>();
  const collect = (rs: ReadRecord[]): Map<string, TaggedNoteRecord> => {
    for (const r of rs) if (r.value !== null) byId.set(r.key?.toString() ?? '', decodeTaggedNote(r.value));
    return byId;
  };
  try {
    await service.start();
    await readTopics(kafka, [names.output], (rs) => collect(rs).size >= texts.length, 120_000);
    assert.equal(byId.size, texts.length);
    // The burst is done: one more note now finds nothing else in flight.
    await producer.send({ topic: names.input, messages: [note('lone', texts[0])] });
    await readTopics(kafka, [names.output], (rs) => collect(rs).has('lone'), 60_000);
  } finally {
    await producer.disconnect();
    await service.close();
    await llm.close();
  }

  const burst = texts.map((t, i) => ({ text: t, rec: byId.get(`s-${i}`) }));
  let shedCut = 0;
  for (const { text, rec } of burst) {
    assert.ok(rec !== undefined);
    const { routing } = rec;
    assert.equal(routing.budget_ms, budgetOf(text));
    assert.ok(routing.load_factor > 0 && routing.load_factor <= 1);
    assert.ok(Math.abs(routing.effective_budget_ms - routing.budget_ms * routing.load_factor) <= 1, `${rec.note_id}: effective = budget x load factor`);
    if (routing.effective_budget_ms + 1 < allLlmMs(text)) {
      // The shrunk budget cannot hold the all-LLM plan: LLM work was cut (to the encoder), and the record says load did it.
      shedCut++;
      assert.ok(routing.load_factor < 1);
      assert.ok(routing.sentences_llm < routing.sentences, `${rec.note_id}: ${routing.sentences_llm} of ${routing.sentences} on the LLM`);
      assert.ok(routing.reasons.includes('budget_exhausted') && routing.reasons.includes('load_shed'), `${rec.note_id}: ${routing.reasons.join(',')}`);
      assert.ok(
        routing.predicted_llm_ms < allLlmMs(text) && routing.predicted_encoder_ms > 0,
        `${rec.note_id}: the plan moved words from the LLM to the encoder`,
      );
    }
    if (routing.load_factor === 1) assert.ok(!routing.reasons.includes('load_shed'), `${rec.note_id}: no shedding without load`);
  }
  const shed = burst.filter(({ rec }) => rec !== undefined && rec.routing.load_factor < 1 && rec.routing.effective_budget_ms < rec.routing.budget_ms);
  assert.ok(shed.length >= texts.length / 2, `most of the burst ran shed (${shed.length} of ${texts.length})`);
  assert.ok(shedCut >= 3, `shedding cut the LLM on several notes (${shedCut})`);
  // Same text and budget, no load: the full budget, and the all-LLM plan fits.
  const lone = byId.get('lone');
  assert.ok(lone !== undefined);
  assert.equal(lone.routing.load_factor, 1);
  assert.equal(lone.routing.effective_budget_ms, lone.routing.budget_ms);
  assert.ok(!lone.routing.reasons.includes('load_shed') && !lone.routing.reasons.includes('budget_exhausted'), lone.routing.reasons.join(','));
  // Its plan is the whole note on the LLM (whether the in-process LLM then answers in time is not what this test is about).
  // predicted_llm_ms is an Avro float: compare to float precision.
  assert.ok(
    Math.abs(lone.routing.predicted_llm_ms - allLlmMs(texts[0])) <= 1e-5 * allLlmMs(texts[0]) && lone.routing.predicted_encoder_ms === 0,
    `planned LLM ${lone.routing.predicted_llm_ms} ms, encoder ${lone.routing.predicted_encoder_ms} ms`,
  );
});
