import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import type { EachBatchPayload, Kafka } from 'kafkajs';
import { ConsumerLoop } from '../../src/kafka/consumer.js';
import { createRouterMetrics, METRIC_SERIES, serviceSources } from '../../src/telemetry/metrics.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { routerReadiness, startTelemetryServer } from '../../src/telemetry/server.js';

/** One request over a real socket (the probes the kubelet sends are plain HTTP GETs). */
function call(url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('/startupz answers 503 until the models are loaded and 200 after, whatever Kafka does; /readyz still needs Kafka', async () => {
  const service = { isReady: false };
  let modelsLoaded = false;
  const metrics = { collectPrometheus: () => Promise.resolve('') };
  const server = await startTelemetryServer({
    port: 0,
    host: '127.0.0.1',
    metrics,
    ready: routerReadiness(service, () => modelsLoaded),
    started: () => modelsLoaded,
  });
  try {
    assert.equal((await call(`${server.url}/healthz`)).status, 200, '/healthz is up before the models load: why it cannot be the startup probe');
    const before = await call(`${server.url}/startupz`);
    assert.equal(before.status, 503);
    assert.deepEqual(JSON.parse(before.body), { status: 'starting' });
    assert.equal((await call(`${server.url}/startupz`, 'HEAD')).status, 503);

    modelsLoaded = true;
    const after = await call(`${server.url}/startupz`);
    assert.equal(after.status, 200);
    assert.deepEqual(JSON.parse(after.body), { status: 'started' });
    const ready = await call(`${server.url}/readyz`);
    assert.equal(ready.status, 503, 'Kafka is not connected: not ready, but started');
    assert.deepEqual((JSON.parse(ready.body) as { failing: string[] }).failing, ['kafka']);

    service.isReady = true;
    assert.equal((await call(`${server.url}/readyz`)).status, 200);
    assert.equal((await call(`${server.url}/startupz`, 'POST')).status, 405);
  } finally {
    await server.close();
  }
});

test('/startupz without a started callback follows the readiness `models` check; a throwing callback means not started', async () => {
  let models = false;
  const metrics = { collectPrometheus: () => Promise.resolve('') };
  const derived = await startTelemetryServer({ port: 0, host: '127.0.0.1', metrics, ready: routerReadiness({ isReady: false }, () => models) });
  const throwing = await startTelemetryServer({
    port: 0,
    host: '127.0.0.1',
    metrics,
    ready: () => ({ ok: true, checks: {} }),
    started: () => {
      throw new Error('boom');
    },
  });
  try {
    assert.equal((await call(`${derived.url}/startupz`)).status, 503);
    models = true;
    assert.equal((await call(`${derived.url}/startupz`)).status, 200);
    assert.equal((await call(`${throwing.url}/startupz`)).status, 503);
  } finally {
    await derived.close();
    await throwing.close();
  }
});

/** The `bioner_consumer_lag` samples of an exposition: `topic/partition` -> value. */
function lagSeries(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^bioner_consumer_lag\{([^}]*)\} (\S+)$/.exec(line);
    if (m === null) continue;
    const labels = new Map([...m[1].matchAll(/([a-z_]+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    out.set(`${labels.get('topic') ?? '?'}/${labels.get('partition') ?? '?'}`, Number(m[2]));
  }
  return out;
}

/** Just enough of a kafkajs consumer to drive ConsumerLoop's batch and group-join paths without a broker. */
function fakeKafka(): { kafka: Kafka; batch: (partition: number, offsetLag: number, messages: number) => Promise<void>; join: (partitions: number[]) => void } {
  const listeners = new Map<string, (e: { payload: Record<string, unknown> }) => void>();
  let eachBatch: ((p: EachBatchPayload) => Promise<void>) | undefined;
  const consumer = {
    events: { CRASH: 'consumer.crash', GROUP_JOIN: 'consumer.group_join' },
    on: (event: string, listener: (e: { payload: Record<string, unknown> }) => void) => listeners.set(event, listener),
    connect: () => Promise.resolve(),
    subscribe: () => Promise.resolve(),
    run: (opts: { eachBatch: (p: EachBatchPayload) => Promise<void> }) => {
      eachBatch = opts.eachBatch;
      return Promise.resolve();
    },
    pause: () => undefined,
    resume: () => undefined,
  };
  const kafka = { consumer: () => consumer } as unknown as Kafka;
  return {
    kafka,
    async batch(partition, offsetLag, count) {
      assert.ok(eachBatch !== undefined, 'start() ran the consumer');
      const messages = Array.from({ length: count }, (_, i) => ({
        offset: String(i),
        key: null,
        value: Buffer.from('{}'),
        headers: {},
        timestamp: '0',
        attributes: 0,
      }));
      const payload = {
        batch: { topic: 'clinical-notes', partition, messages, offsetLag: () => String(offsetLag) },
        resolveOffset: () => undefined,
        heartbeat: () => Promise.resolve(),
        commitOffsetsIfNecessary: () => Promise.resolve(),
        uncommittedOffsets: () => ({ topics: [] }),
        isRunning: () => true,
        isStale: () => false,
      } as unknown as EachBatchPayload;
      await eachBatch(payload);
    },
    join(partitions) {
      listeners.get(consumer.events.GROUP_JOIN)?.({ payload: { groupId: 'g', memberAssignment: { 'clinical-notes': partitions } } });
    },
  };
}

test("bioner_consumer_lag: one series per owned partition, and a revoked partition's series disappears at the next scrape", async () => {
  const fake = fakeKafka();
  const loop = new ConsumerLoop(
    fake.kafka,
    {
      topic: 'clinical-notes',
      groupId: 'g',
      fromBeginning: true,
      sessionTimeoutMs: 30000,
      heartbeatIntervalMs: 3000,
      maxWaitTimeMs: 100,
      partitionsConsumedConcurrently: 1,
      concurrency: 2,
      maxInFlight: 10,
    },
    silentLogger,
  );
  // Records finish at once: a batch leaves its partition at offsetLag (the records behind the batch's last one).
  await loop.start(() => Promise.resolve());
  // The shape RouterService hands serviceSources (its consumerLag / consumerLagByPartition read this loop).
  const service = { stats: { inFlight: 0, paused: false }, consumerLag: () => loop.lag(), consumerLagByPartition: () => loop.lagByKey() };
  const metrics = createRouterMetrics({ serviceName: 'test' });
  metrics.observe(serviceSources(service));
  try {
    assert.deepEqual(lagSeries(await metrics.collectPrometheus()), new Map(), 'absent before the first batch');
    assert.doesNotMatch(await metrics.collectPrometheus(), new RegExp(`^${METRIC_SERIES.consumerLag}`, 'm'));

    fake.join([0, 1, 2]);
    await fake.batch(0, 40, 3);
    await fake.batch(1, 7, 2);
    await fake.batch(2, 0, 1);
    assert.deepEqual(
      lagSeries(await metrics.collectPrometheus()),
      new Map([
        ['clinical-notes/0', 40],
        ['clinical-notes/1', 7],
        ['clinical-notes/2', 0],
      ]),
    );
    assert.match(await metrics.collectPrometheus(), /^# TYPE bioner_consumer_lag gauge$/m);
    assert.match(await metrics.collectPrometheus(), /^bioner_consumer_lag\{topic="clinical-notes",partition="0",otel_scope_name="bioner-router"\} 40$/m);

    // A rebalance hands partitions 0 and 2 to another member: their series must not linger here.
    fake.join([1]);
    assert.deepEqual(lagSeries(await metrics.collectPrometheus()), new Map([['clinical-notes/1', 7]]));
    await fake.batch(1, 2, 1);
    assert.deepEqual(lagSeries(await metrics.collectPrometheus()), new Map([['clinical-notes/1', 2]]));
    // Losing every partition leaves no series at all (not a stale 0).
    fake.join([]);
    assert.deepEqual(lagSeries(await metrics.collectPrometheus()), new Map());
  } finally {
    await metrics.shutdown();
  }
});

test('bioner_consumer_lag: a source with only a total still reports one unlabelled series', async () => {
  const metrics = createRouterMetrics({ serviceName: 'test' });
  let total: number | null = null;
  metrics.observe(serviceSources({ stats: { inFlight: 0, paused: false }, consumerLag: () => total }));
  try {
    assert.doesNotMatch(await metrics.collectPrometheus(), /^bioner_consumer_lag/m);
    total = 12;
    assert.match(await metrics.collectPrometheus(), /^bioner_consumer_lag\{otel_scope_name="bioner-router"\} 12$/m);
  } finally {
    await metrics.shutdown();
  }
});
