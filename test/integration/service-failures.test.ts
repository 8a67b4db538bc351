import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Admin, Kafka } from 'kafkajs';
import { loadEncoder } from '../../src/pipeline/compose.js';
import { ApiKeys, MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { ErrorCodes, errorCodeOf, TaggerError } from '../../src/errors.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { NoteProcessor } from '../../src/pipeline/processor.js';
import { RouterService } from '../../src/pipeline/service.js';
import { DlqHeaders, headerString } from '../../src/publish/dlq.js';
import { createRouter } from '../../src/route/index.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import type { Tagger, TagOptions } from '../../src/taggers/types.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import type { Sentence } from '../../src/types.js';
import { account, committedCoversAll, fixtureNotes, inputOffsets, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let admin: Admin;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 3 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('f'));
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

/** Fails notes whose text contains a trigger, with a retriable or a final error; tags the rest with the real encoder. */
class FailingTagger implements Tagger {
  readonly route = 'encoder' as const;
  calls = 0;
  constructor(
    private readonly trigger: string,
    private readonly retriable: boolean,
  ) {}
  get model() {
    return encoder.model;
  }
  async tagSentences(sentences: readonly Sentence[]) {
    if (sentences.some((s) => s.tokens.some((t) => t.text === this.trigger))) {
      this.calls++;
      throw new TaggerError(ErrorCodes.INFERENCE_FAILED, 'injected failure', { retriable: this.retriable });
    }
    return encoder.tagSentences(sentences);
  }
  async close() {}
}

async function setup(prefix: string, texts: string[]): Promise<ReturnType<typeof uniqueNames>> {
  const names = uniqueNames(prefix);
  await cluster.createTopic(names.input, 1);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic: names.input,
    messages: texts.map((text, i) => ({
      key: `n-${i}`,
      value: encodeNote({ noteId: `n-${i}`, text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
    })),
  });
  await producer.disconnect();
  return names;
}

const base = fixtureNotes()
  .slice(0, 6)
  .map((n) => n.text);

for (const retriable of [true, false]) {
  test(`a ${retriable ? 'retriable' : 'final'} tagging failure is ${retriable ? 'retried, then' : ''} dead-lettered; its neighbours are published`, async () => {
    const names = await setup(retriable ? 'retry' : 'final', [base[0], 'Zqxfail marker note .', base[1], base[2]]);
    const config = testConfig(cluster.bootstrapServers, names, { processing: { maxAttempts: 3 } });
    const tagger = new FailingTagger('Zqxfail', retriable);
    const service = new RouterService(config, new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder: tagger }), silentLogger);
    await service.start();
    const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= 4, 60_000);
    await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'commits');
    await service.close();
    const dlq = records.filter((r) => r.topic === names.dlq);
    assert.equal(dlq.length, 1);
    assert.equal(headerString(dlq[0].headers, DlqHeaders.errorCode), 'INFERENCE_FAILED');
    assert.equal(headerString(dlq[0].headers, DlqHeaders.stage), 'tag');
    assert.equal(headerString(dlq[0].headers, DlqHeaders.sourceOffset), '1');
    assert.equal(tagger.calls, retriable ? 3 : 1);
    assert.equal(service.stats.retries, retriable ? 2 : 0);
    assert.equal(records.filter((r) => r.topic === names.output).length, 3);
  });
}

/** Never answers a trigger note by itself: it waits until the caller's signal aborts, then rejects with the reason. */
class HangingTagger implements Tagger {
  readonly route = 'encoder' as const;
  calls = 0;
  cancelled: string[] = [];
  constructor(private readonly trigger: string) {}
  get model() {
    return encoder.model;
  }
  async tagSentences(sentences: readonly Sentence[], options: TagOptions = {}) {
    if (!sentences.some((s) => s.tokens.some((t) => t.text === this.trigger))) return encoder.tagSentences(sentences, options);
    this.calls++;
    const signal = options.signal;
    assert.ok(signal !== undefined, 'the service passes a signal down to the tagger');
    return new Promise<never>((_, reject) => {
      signal.addEventListener(
        'abort',
        () => {
          this.cancelled.push(errorCodeOf(signal.reason));
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }
  async close() {}
}

test('a note past processing.noteTimeoutMs has its tagging cancelled (NOTE_TIMEOUT), is retried, then dead-lettered; its neighbours are published', async () => {
  const names = await setup('timeout', [base[0], 'Zqxhang marker note .', base[1]]);
  const config = testConfig(cluster.bootstrapServers, names, {
    processing: { noteTimeoutMs: 600, maxAttempts: 2 },
    routing: { defaultBudgetMs: 500 },
    llm: { timeoutMs: 300 },
  });
  const tagger = new HangingTagger('Zqxhang');
  const service = new RouterService(config, new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder: tagger }), silentLogger);
  await service.start();
  try {
    const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= 3, 60_000);
    await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'commits');
    const dlq = records.filter((r) => r.topic === names.dlq);
    assert.equal(dlq.length, 1);
    assert.equal(headerString(dlq[0].headers, DlqHeaders.errorCode), 'NOTE_TIMEOUT');
    assert.equal(headerString(dlq[0].headers, DlqHeaders.errorRetriable), 'true');
    assert.equal(headerString(dlq[0].headers, DlqHeaders.sourceOffset), '1');
    assert.equal(records.filter((r) => r.topic === names.output).length, 2);
    // Each attempt's own work was cancelled by its timeout before the next attempt started.
    assert.equal(tagger.calls, 2);
    assert.deepEqual(tagger.cancelled, ['NOTE_TIMEOUT', 'NOTE_TIMEOUT']);
    assert.equal(service.stats.retries, 1);
  } finally {
    await service.close();
  }
});

test('a record the broker refuses for good (MESSAGE_TOO_LARGE) is dead-lettered, not retried forever', async () => {
  const names = await setup('toolarge', base.slice(0, 4));
  const config = testConfig(cluster.bootstrapServers, names);
  const service = new RouterService(config, new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder }), silentLogger);
  // The next Produce request (the first output record) is refused with MESSAGE_TOO_LARGE (10), a non-retriable broker error.
  await cluster.pushRequestErrors(ApiKeys.Produce, [10]);
  await service.start();
  const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= 4, 60_000);
  await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'commits');
  await service.close();
  const acc = account(records, names);
  for (const o of await inputOffsets(admin, names.input)) assert.equal((acc.published.get(o) ?? 0) + (acc.deadLettered.get(o)?.count ?? 0), 1, o);
  const dlq = [...acc.deadLettered.values()];
  assert.equal(dlq.length, 1);
  assert.equal(dlq[0].code, 'PUBLISH_FAILED');
});

test('stopping while a note waits to retry leaves it uncommitted for redelivery instead of dead-lettering it', async () => {
  const names = await setup('stopretry', [base[0], 'Zqxfail again .', base[1]]);
  const config = testConfig(cluster.bootstrapServers, names, { processing: { maxAttempts: 5 } });
  const tagger = new FailingTagger('Zqxfail', true);
  const service = new RouterService(config, new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder: tagger }), silentLogger);
  await service.start();
  await waitFor(() => tagger.calls >= 1, 30_000, 'the first failure');
  await service.close();
  assert.equal(service.stats.deadLettered, 0);
  const [committed] = await admin.fetchOffsets({ groupId: names.group, topics: [names.input] });
  assert.ok(Number(committed.partitions[0].offset) <= 1, `the failing note (offset 1) is not committed (committed ${committed.partitions[0].offset})`);
  // A healthy consumer in the same group picks it up.
  const healthy = new RouterService(config, new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder }), silentLogger);
  await healthy.start();
  await waitFor(() => committedCoversAll(admin, names.group, names.input), 30_000, 'the healthy consumer to finish');
  await healthy.close();
  // Offset 2 may have been published by the first consumer too (finished but not committable behind offset 1): at-least-once.
  const records = await readTopics(kafka, [names.output, names.dlq], (rs) => account(rs, names).published.size >= 3, 30_000);
  const acc = account(records, names);
  assert.ok(
    acc.published.has('0:1'),
    `the note that failed during the stop was published by the next consumer: ${JSON.stringify([...acc.published])} ${records.length}`,
  );
  assert.equal(acc.deadLettered.size, 0);
});
