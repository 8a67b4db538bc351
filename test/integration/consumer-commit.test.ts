import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { ConsumerLoop, createKafka, createProducer } from '../../src/kafka/index.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { validateConfig } from '../../src/config/load.js';
import { uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
});
after(async () => {
  await cluster?.stop();
});

test('finished records are committed while their batch still runs, so a member killed mid-batch leaves little to redo', async () => {
  const names = uniqueNames('commit');
  await cluster.createTopic(names.input, 1);
  const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers } }).kafka, silentLogger);
  const producer = createProducer(kafka);
  await producer.connect();
  const count = 40;
  await producer.send({ topic: names.input, messages: Array.from({ length: count }, (_, i) => ({ key: `k${i}`, value: `v${i}` })) });
  await producer.disconnect();
  const loop = new ConsumerLoop(
    kafka,
    {
      topic: names.input,
      groupId: names.group,
      fromBeginning: true,
      sessionTimeoutMs: 10000,
      heartbeatIntervalMs: 1000,
      maxWaitTimeMs: 100,
      partitionsConsumedConcurrently: 1,
      concurrency: 1,
      maxInFlight: 64,
    },
    silentLogger,
  );
  const admin = kafka.admin();
  await admin.connect();
  let handled = 0;
  let batchSizes = 0;
  try {
    // One record at a time, 100 ms each: the 40 records arrive as one batch that runs for about 4 s.
    await loop.start(async () => {
      if (handled === 0) batchSizes = loop.lag() ?? 0;
      await new Promise((r) => setTimeout(r, 100));
      handled++;
    });
    let committed = -1;
    await waitFor(
      async () => {
        const [offsets] = await admin.fetchOffsets({ groupId: names.group, topics: [names.input] });
        committed = Number(offsets.partitions[0]?.offset ?? -1);
        return committed > 0;
      },
      10_000,
      'an offset committed',
    );
    assert.ok(batchSizes >= count / 2, `the records came in a few large batches (first lag ${batchSizes})`);
    assert.ok(handled < count, `committed at ${committed} while the batch still ran (${handled} of ${count} handled)`);
    await waitFor(() => handled >= count, 20_000, 'every record handled');
  } finally {
    await loop.stop(5000);
    await loop.disconnect(5000);
    await admin.disconnect();
  }
});
