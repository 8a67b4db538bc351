import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Admin, Kafka } from 'kafkajs';
import { loadEncoder } from '../../src/pipeline/compose.js';
import { NoteProcessor } from '../../src/pipeline/processor.js';
import { createRouter } from '../../src/route/index.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { createKafka } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import type { Tagger } from '../../src/taggers/types.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import type { Sentence } from '../../src/types.js';
import { account, produceFixtureNotes, startRouterCli, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let admin: Admin;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 3 });
  kafka = createKafka(testConfig(cluster.bootstrapServers, uniqueNames('sd')).kafka, silentLogger);
  admin = kafka.admin();
  await admin.connect();
});
after(async () => {
  await admin?.disconnect();
  await cluster?.stop();
});

async function setup(prefix: string, count: number, partitions: number, marker = ''): Promise<ReturnType<typeof uniqueNames>> {
  const names = uniqueNames(prefix);
  await cluster.createTopic(names.input, partitions);
  await cluster.createTopic(names.output, 3);
  await cluster.createTopic(names.dlq, 1);
  await produceFixtureNotes(kafka, names.input, 'n', count, { marker });
  return names;
}

async function sumOffsets(topic: string): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

async function committedSum(group: string, topic: string): Promise<number> {
  const [c] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  return c.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
}

function startCli(names: ReturnType<typeof uniqueNames>, dir: string): Promise<{ child: ChildProcess; stderr: () => string }> {
  const config = {
    kafka: { brokers: cluster.bootstrapServers },
    input: { topic: names.input, groupId: names.group, maxWaitTimeMs: 100, sessionTimeoutMs: 10000, heartbeatIntervalMs: 1000 },
    output: { topic: names.output, dlqTopic: names.dlq },
    processing: { concurrency: 2, maxInFlight: 4 },
    logging: { level: 'debug' },
    telemetry: { port: 0, tracesExporter: 'none' },
  };
  return startRouterCli(config, dir).then(({ child, output }) => ({ child, stderr: output }));
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

/** One /readyz answer: the status code, or the error code once the server has closed (connection refused or reset). */
async function readyz(url: string): Promise<number | string> {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return cause?.code ?? (err instanceof Error ? err.name : 'error');
  }
}

/** Polls /readyz every 20 ms until `stop` says so (checked after each answer); at least one answer. */
async function pollReadyz(url: string, stop: (answers: Array<number | string>) => boolean, timeoutMs: number): Promise<Array<number | string>> {
  const answers: Array<number | string> = [];
  const deadline = Date.now() + timeoutMs;
  do {
    answers.push(await readyz(url));
    if (stop(answers)) break;
    await new Promise((r) => setTimeout(r, 20));
  } while (Date.now() < deadline);
  return answers;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('SIGTERM drains: finished notes are published and committed, then a new consumer finishes the rest', async (t) => {
  const marker = 'PHIMARKER7731';
  const names = await setup('sigterm', 60, 3, marker);
  const dir = await mkdtemp(join(tmpdir(), 'bioner-sigterm-'));
  // The spawned CLI inherits these: its metrics must name the service from the env, not the config (the same identity as its traces).
  const savedEnv = { name: process.env.OTEL_SERVICE_NAME, attrs: process.env.OTEL_RESOURCE_ATTRIBUTES };
  process.env.OTEL_SERVICE_NAME = 'bioner-sigterm-env';
  process.env.OTEL_RESOURCE_ATTRIBUTES = 'deployment.environment=shutdown-test';
  let started: Awaited<ReturnType<typeof startCli>>;
  try {
    started = await startCli(names, dir);
  } finally {
    if (savedEnv.name === undefined) delete process.env.OTEL_SERVICE_NAME;
    else process.env.OTEL_SERVICE_NAME = savedEnv.name;
    if (savedEnv.attrs === undefined) delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    else process.env.OTEL_RESOURCE_ATTRIBUTES = savedEnv.attrs;
  }
  const { child, stderr } = started;
  let alive = true;
  const exited = exitOf(child).then((code) => {
    alive = false;
    return code;
  });
  // Start-up: the server listens before the models load and the group is joined (~3 s on the mock), so /readyz must say 503 first.
  let url: string | undefined;
  for (const deadline = Date.now() + 60_000; url === undefined && alive && Date.now() < deadline; await sleep(10)) {
    url = /"msg":"telemetry server listening".*?"url":"([^"]+)"/.exec(stderr())?.[1];
  }
  assert.ok(url !== undefined, `run logs its telemetry URL; log tail: ${stderr().slice(-800)}`);
  const startup = await pollReadyz(url, (a) => a.at(-1) === 200 || !alive, 60_000);
  assert.equal(startup.at(-1), 200, `ready at last; answers ${startup.join(',')}`);
  assert.equal(startup[0], 503, `not ready at first; answers ${startup.join(',')}`);
  assert.ok(
    startup.slice(0, -1).every((a) => a === 503),
    `only 503 before the first 200; answers ${startup.join(',')}`,
  );
  await waitFor(async () => (await sumOffsets(names.output)) >= 8, 60_000, 'the CLI consumer to publish some notes');
  // The running CLI serves its health and metrics endpoints.
  assert.equal((await fetch(`${url}/readyz`)).status, 200);
  assert.equal((await fetch(`${url}/healthz`)).status, 200);
  const metricsText = await (await fetch(`${url}/metrics`)).text();
  assert.match(metricsText, /bioner_notes_total\{[^}]*outcome="published"/);
  const target = /^target_info\{(.*)\} 1$/m.exec(metricsText)?.[1] ?? '';
  assert.match(target, /service_name="bioner-sigterm-env"/, 'OTEL_SERVICE_NAME names the metrics too');
  assert.match(target, /deployment_environment="shutdown-test"/, 'OTEL_RESOURCE_ATTRIBUTES reaches the metrics resource');
  child.kill('SIGTERM');
  // Once the drain has begun (logged just before close() marks the service stopping), /readyz never says 200 again.
  for (const deadline = Date.now() + 30_000; alive && !stderr().includes('"msg":"draining before exit"') && Date.now() < deadline; await sleep(5));
  const draining = await pollReadyz(url, () => !alive, 60_000);
  assert.ok(
    draining.every((a) => a !== 200),
    `never ready while draining; answers ${draining.join(',')}`,
  );
  assert.ok(
    draining.every((a) => a === 503 || typeof a === 'string'),
    `503, or the connection refused once the server closed; answers ${draining.join(',')}`,
  );
  const count = (answers: Array<number | string>): string => [...new Set(answers)].map((a) => `${a} x${answers.filter((b) => b === a).length}`).join(', ');
  t.diagnostic(`/readyz during start-up: ${count(startup)}; while draining: ${count(draining)}`);
  const code = await exited;
  assert.equal(code, 0, `clean exit after drain; log tail: ${stderr().slice(-800)}`);
  assert.match(stderr(), /"msg":"router stopped"/);
  assert.ok(!stderr().includes(marker), 'logs never contain note text or patient ids');

  const published = await sumOffsets(names.output);
  const committed = await committedSum(names.group, names.input);
  assert.ok(published < 60, 'stopped mid-stream');
  // Drain commits exactly what was published: nothing finished is left uncommitted, nothing uncommitted was published.
  assert.equal(committed, published);

  const { child: second } = await startCli(names, dir);
  const secondExit = exitOf(second);
  const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= 60, 90_000);
  second.kill('SIGTERM');
  assert.equal(await secondExit, 0);
  const acc = account(records, names);
  assert.equal(acc.published.size, 60);
  assert.ok(
    [...acc.published.values()].every((n) => n === 1),
    'no note published twice',
  );
});

test('a second signal forces exit without waiting for the drain', async () => {
  const names = await setup('sigkill2', 40, 1);
  const dir = await mkdtemp(join(tmpdir(), 'bioner-sig2-'));
  const { child, stderr } = await startCli(names, dir);
  const exited = exitOf(child);
  await waitFor(() => stderr().includes('"msg":"router started"'), 60_000, 'the CLI to start');
  // Two different signals (identical pending signals would coalesce into one); the kernel may deliver them in either order.
  child.kill('SIGTERM');
  child.kill('SIGINT');
  const code = await exited;
  assert.ok(code === 128 + 2 || code === 128 + 15, `exit code is 128 + the second signal, got ${code}`);
  assert.match(stderr(), /second signal/);
});

/** Wraps the real encoder with a fixed delay: a deliberately slow stage. Counts calls running at once. */
class SlowTagger implements Tagger {
  readonly route = 'encoder' as const;
  running = 0;
  maxRunning = 0;
  constructor(
    private readonly inner: EncoderTagger,
    private readonly delayMs: number,
  ) {}
  get model() {
    return this.inner.model;
  }
  async tagSentences(sentences: readonly Sentence[]) {
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await new Promise((r) => setTimeout(r, this.delayMs));
      return await this.inner.tagSentences(sentences);
    } finally {
      this.running--;
    }
  }
  async close() {}
}

test('a slow stage: bounded concurrency, fetching pauses at the in-flight bound, heartbeats keep the group stable, nothing is lost', async () => {
  const names = await setup('slow', 30, 1);
  // One partition, one batch of 30 notes at 2 x 500 ms: about 7.5 s of work inside one batch, above the 6 s session timeout.
  const config = testConfig(cluster.bootstrapServers, names, {
    input: { sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000 },
    processing: { concurrency: 2, maxInFlight: 4 },
  });
  const lines: string[] = [];
  const logger = createLogger('info', (l) => lines.push(l));
  const encoder = await loadEncoder(config.encoder);
  const pauses: boolean[] = [];
  const slowTagger = new SlowTagger(encoder, 500);
  const slow = new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder: slowTagger });
  const service = new RouterService(config, slow, logger, { inFlightChanged: (e) => pauses.push(e.paused) });
  const started = Date.now();
  await service.start();
  try {
    await waitFor(() => service.stats.published >= 30, 60_000, 'all notes through the slow stage');
  } finally {
    await service.close();
    await encoder.close();
  }
  assert.ok(Date.now() - started > 6000, 'the batch outlasted the session timeout');
  assert.equal(slowTagger.maxRunning, 2, 'tagging concurrency is bounded by processing.concurrency');
  assert.ok(pauses.includes(true) && pauses.includes(false), 'fetching paused at the in-flight bound and resumed');
  const joins = lines.filter((l) => l.includes('"msg":"joined consumer group"')).length;
  assert.equal(joins, 1, 'no rebalance while the slow batch ran');
  assert.equal(service.stats.published, 30);
  assert.equal(service.stats.deadLettered, 0);
});
