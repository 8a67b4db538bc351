/**
 * The embedded mock Kafka (librdkafka mock cluster behind build/mock-kafka)
 * works with kafkajs end to end, and its control commands behave.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { EmbeddedKafkaError } from '../../src/errors.js';
import { ApiKeys, KafkaErrorCodes, MockKafkaCluster, ensureMockKafkaBinary } from '../../src/embedded/mock-cluster.js';

const TOPIC = 'notes-mock-test';
const COUNT = 100;

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

describe('MockKafkaCluster', () => {
  let cluster: MockKafkaCluster;
  let kafka: Kafka;
  let producer: Producer | undefined;
  let consumer: Consumer | undefined;

  before(async () => {
    await ensureMockKafkaBinary(); // build time is not start time
    const t0 = performance.now();
    cluster = await MockKafkaCluster.start({ brokers: 3, topics: [{ name: TOPIC, partitions: 3 }] });
    console.log(`mock cluster started in ${(performance.now() - t0).toFixed(1)} ms: ${cluster.bootstrapServers.join(',')}`);
    kafka = new Kafka({ clientId: 'mock-cluster-test', brokers: cluster.bootstrapServers, logLevel: logLevel.NOTHING });
  });

  after(async () => {
    await consumer?.disconnect().catch(() => undefined);
    await producer?.disconnect().catch(() => undefined);
    await cluster?.stop();
  });

  test('reports one bootstrap address per broker', () => {
    assert.equal(cluster.bootstrapServers.length, 3);
    for (const b of cluster.bootstrapServers) assert.match(b, /^[\w.-]+:\d+$/);
  });

  test('kafkajs produces 100 records and a consumer group reads them all back', async () => {
    producer = kafka.producer();
    await producer.connect();
    const sent = Array.from({ length: COUNT }, (_, i) => `note-${i}`);
    await producer.send({ topic: TOPIC, messages: sent.map((v) => ({ key: v, value: v })) });

    const received = new Map<string, number>();
    const partitions = new Set<number>();
    // maxWaitTimeInMs: the mock holds an empty Fetch for the whole wait, see mock-cluster.ts
    consumer = kafka.consumer({ groupId: `g-${TOPIC}-${process.pid}`, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const v = message.value?.toString() ?? '';
        received.set(v, (received.get(v) ?? 0) + 1);
        partitions.add(partition);
      },
    });
    await waitFor(`${COUNT} records`, () => received.size >= COUNT, 30_000);
    assert.deepEqual([...received.keys()].sort(), [...sent].sort());
    assert.equal(partitions.size, 3, 'records spread over all 3 partitions');
  });

  test('down/up/rtt/errors/topic commands answer OK', async () => {
    await cluster.ping();
    await cluster.brokerDown(2);
    await cluster.brokerUp(2);
    await cluster.setRtt(1, 20);
    await cluster.setRtt(1, 0);
    await cluster.createTopic(`${TOPIC}-runtime`, 2);
    // One injected retriable Produce error: kafkajs retries and the send still succeeds.
    await cluster.pushRequestErrors(ApiKeys.Produce, [KafkaErrorCodes.NOT_LEADER_FOR_PARTITION]);
    const p = producer ?? kafka.producer();
    producer = p;
    await p.connect();
    await p.send({ topic: `${TOPIC}-runtime`, messages: [{ key: 'k', value: 'after-error' }] });
  });

  test('invalid commands reject with EmbeddedKafkaError', async () => {
    await assert.rejects(cluster.command('bogus 1'), EmbeddedKafkaError);
    await assert.rejects(cluster.command('down 99'), /broker id/); // checked by the launcher
    await assert.rejects(cluster.brokerDown(99), EmbeddedKafkaError); // checked in TS
    await assert.rejects(cluster.createTopic(TOPIC, 3), /already exists/);
    await assert.rejects(cluster.createTopic('bad name\nquit', 1), EmbeddedKafkaError);
    await assert.rejects(cluster.pushRequestErrors(ApiKeys.Fetch, []), EmbeddedKafkaError);
    await cluster.ping(); // still serving after the errors
  });

  test('stop() twice is fine and the child process is gone', async () => {
    const pid = cluster.pid;
    assert.ok(pid !== undefined);
    await consumer?.disconnect();
    consumer = undefined;
    await producer?.disconnect();
    producer = undefined;
    await Promise.all([cluster.stop(), cluster.stop()]);
    await cluster.stop();
    assert.equal(cluster.isRunning, false);
    assert.ok(processGone(pid), `mock-kafka pid ${pid} still alive`);
    await assert.rejects(cluster.ping(), EmbeddedKafkaError);
  });
});

describe('MockKafkaCluster failures', () => {
  let cluster: MockKafkaCluster | undefined;
  after(async () => {
    await cluster?.stop();
  });

  test('commands reject once the child dies unexpectedly', async () => {
    cluster = await MockKafkaCluster.start({ brokers: 1 });
    const pid = cluster.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    await waitFor('child exit', () => !cluster?.isRunning, 5_000);
    await assert.rejects(cluster.ping(), EmbeddedKafkaError);
    await cluster.stop(); // still fine after a crash
  });

  test('start() rejects for a missing binary', async () => {
    await assert.rejects(MockKafkaCluster.start({ binaryPath: '/nonexistent/mock-kafka' }), EmbeddedKafkaError);
  });

  test('start() rejects bad topic specs before spawning', async () => {
    await assert.rejects(MockKafkaCluster.start({ topics: [{ name: 't', partitions: 0 }] }), EmbeddedKafkaError);
  });
});
