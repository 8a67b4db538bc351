import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Admin, Kafka } from 'kafkajs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { createRouterMetrics, METRIC_SERIES, serviceSources } from '../../src/telemetry/metrics.js';
import { PROMETHEUS_CONTENT_TYPE, routerReadiness, startTelemetryServer } from '../../src/telemetry/server.js';
import { committedCoversAll, fixtureNotes, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let admin: Admin;
let encoder: EncoderTagger | undefined;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  kafka = createKafka(testConfig(cluster.bootstrapServers, uniqueNames('mh-setup')).kafka, silentLogger);
  admin = kafka.admin();
  await admin.connect();
});

after(async () => {
  await admin?.disconnect();
  await encoder?.close();
  await cluster?.stop();
});

/** Value of one sample line: `name{labels} value`, every given label matching. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = new Map([...(m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got.get(k) === v)) return Number(m[4]);
  }
  return undefined;
}

function sumSamples(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function get(url: string): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

test('a real pipeline feeds /metrics; /readyz follows the service lifecycle; /healthz stays up', async () => {
  const names = uniqueNames('mh');
  await cluster.createTopic(names.input, 2);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const marker = 'PHIMARKER';
  const notes = fixtureNotes().slice(0, 5);
  const good = notes.map((n, i) => ({
    key: `mh-${i}`,
    value: encodeNote(
      {
        noteId: `${marker}-note-${i}`,
        text: `${n.text} ${marker}`,
        source: 'mtsamples',
        latencyBudgetMs: null,
        patientId: `${marker}-patient-${i}`,
        metadata: null,
      },
      'json',
    ),
  }));
  const bad = { key: 'mh-bad', value: Buffer.from('{"note_id": "bad-json", "text": "unterminated', 'utf8') };
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({ topic: names.input, messages: [...good.slice(0, 2), bad, ...good.slice(2)] });
  await producer.disconnect();

  const config = testConfig(cluster.bootstrapServers, names);
  const metrics = createRouterMetrics();
  let modelsLoaded = false;
  encoder = await loadEncoder(config.encoder);
  const service = new RouterService(config, createProcessor(config, encoder, metrics.hooks), silentLogger, metrics.hooks);
  metrics.observe(serviceSources(service));
  const server = await startTelemetryServer({ port: 0, host: '127.0.0.1', metrics, ready: routerReadiness(service, () => modelsLoaded) });
  try {
    assert.equal((await get(`${server.url}/healthz`)).status, 200);
    const before = await get(`${server.url}/readyz`);
    assert.equal(before.status, 503);
    assert.deepEqual((JSON.parse(before.body) as { failing: string[] }).failing.sort(), ['kafka', 'models']);
    modelsLoaded = true;
    const stillBefore = JSON.parse((await get(`${server.url}/readyz`)).body) as { failing: string[] };
    assert.deepEqual(stillBefore.failing, ['kafka']);

    await service.start();
    const running = await get(`${server.url}/readyz`);
    assert.equal(running.status, 200, running.body);
    assert.equal((await get(`${server.url}/healthz`)).status, 200);

    await readTopics(kafka, [names.output, names.dlq], (rs) => rs.length >= good.length + 1, 90_000);
    await waitFor(() => service.stats.published + service.stats.deadLettered >= good.length + 1, 20_000, 'the service to count every record');
    await waitFor(() => committedCoversAll(admin, names.group, names.input), 20_000, 'commits to cover the input');

    const scrape = await get(`${server.url}/metrics`);
    assert.equal(scrape.status, 200);
    assert.equal(scrape.type, PROMETHEUS_CONTENT_TYPE);
    const text = scrape.body;
    assert.equal(sample(text, METRIC_SERIES.notes, { outcome: 'published', policy: 'encoder' }), good.length);
    assert.equal(sample(text, METRIC_SERIES.notes, { outcome: 'dead_lettered' }), 1);
    assert.equal(sample(text, METRIC_SERIES.notesReceived), good.length + 1);
    assert.equal(sample(text, METRIC_SERIES.dlq, { code: 'DECODE_FAILED', stage: 'decode' }), 1);
    // Tagger histogram: one observation per encoder call (cross-note batching may join calls, never split a note's).
    const encoderCalls = sample(text, `${METRIC_SERIES.taggerDuration}_count`, { route: 'encoder', ok: 'true' }) ?? 0;
    assert.ok(encoderCalls >= 1 && encoderCalls <= good.length, `encoder calls ${encoderCalls}`);
    assert.ok((sample(text, `${METRIC_SERIES.taggerDuration}_sum`, { route: 'encoder' }) ?? 0) > 0);
    assert.equal(sample(text, `${METRIC_SERIES.taggerDuration}_bucket`, { route: 'encoder', le: '+Inf' }), encoderCalls);
    assert.equal(sample(text, `${METRIC_SERIES.noteDuration}_count`, { policy: 'encoder' }), good.length);
    // Sentences by route sum to the sentences of the published notes; the encoder policy sends none to the LLM.
    assert.ok(sumSamples(text, METRIC_SERIES.sentences, { route: 'encoder' }) >= good.length);
    assert.equal(sumSamples(text, METRIC_SERIES.sentences, { route: 'llm' }), 0);
    assert.equal(sample(text, `${METRIC_SERIES.llmShare}_sum`, { policy: 'encoder' }), 0);
    assert.equal(sample(text, `${METRIC_SERIES.effectiveBudget}_count`, { policy: 'encoder' }), good.length);
    assert.equal(sample(text, METRIC_SERIES.inFlight), 0);
    assert.equal(sample(text, METRIC_SERIES.consumerLag), 0);
    assert.equal(sample(text, METRIC_SERIES.circuitState), undefined, 'no LLM configured: no circuit gauge');
    // No PHI, no ids: neither the note ids, the text nor the patient ids reach the exposition.
    assert.ok(!text.includes(marker), 'no note id, text or patient id in /metrics');
    assert.ok(!/note_?id/i.test(text), 'no note id label');

    const closing = service.close();
    const during = await get(`${server.url}/readyz`);
    assert.equal(during.status, 503);
    assert.deepEqual((JSON.parse(during.body) as { failing: string[] }).failing, ['kafka']);
    assert.equal((await get(`${server.url}/healthz`)).status, 200);
    await closing;
    assert.equal((await get(`${server.url}/readyz`)).status, 503);
    assert.equal((await get(`${server.url}/healthz`)).status, 200);
    assert.equal((await get(`${server.url}/nope`)).status, 404);
  } finally {
    await service.close();
    await server.close();
    await metrics.shutdown();
  }
});

/** A port nothing listens on: connections are refused at once. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('an unreachable LLM shows up as fallbacks by code, encoder_fallback sentences, failed LLM calls and the circuit gauge', async () => {
  const names = uniqueNames('mh-llm');
  await cluster.createTopic(names.input, 1);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
  const notes = fixtureNotes().slice(0, 4);
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic: names.input,
    messages: notes.map((n, i) => ({
      key: `f-${i}`,
      value: encodeNote({ noteId: `f-${i}`, text: n.text, source: null, latencyBudgetMs: 8000, patientId: null, metadata: null }, 'json'),
    })),
  });
  await producer.disconnect();

  const base = testConfig(cluster.bootstrapServers, names);
  const config = {
    ...base,
    routing: { ...base.routing, policy: 'llm' as const },
    llm: { ...base.llm, adapter: 'openai' as const, baseUrl: `http://127.0.0.1:${await closedPort()}`, retries: 0 },
  };
  encoder ??= await loadEncoder(config.encoder);
  const router = await loadRouter(config);
  const llm = await loadLlm(config);
  assert.ok(llm !== undefined && llm.client !== undefined, 'a remote LLM adapter with an HTTP client');
  const metrics = createRouterMetrics();
  const service = new RouterService(config, createProcessor(config, encoder, metrics.hooks, llm, router), silentLogger, metrics.hooks);
  metrics.observe(serviceSources(service, llm));
  try {
    await service.start();
    await waitFor(() => service.stats.published >= notes.length, 60_000, 'every note to be published');
    const text = await metrics.collectPrometheus();
    assert.equal(sample(text, METRIC_SERIES.notes, { outcome: 'published', policy: 'llm' }), notes.length);
    const fallbacks = sumSamples(text, METRIC_SERIES.llmFallbacks);
    assert.equal(fallbacks, notes.length, 'one failed LLM call per note');
    const codes = new Set([...text.matchAll(/^bioner_llm_fallbacks_total\{code="([A-Z_]+)"/gm)].map((m) => m[1]));
    assert.ok([...codes].every((c) => c === 'LLM_UNAVAILABLE' || c === 'CIRCUIT_OPEN') && codes.size > 0, [...codes].join(','));
    assert.equal(sumSamples(text, `${METRIC_SERIES.taggerDuration}_count`, { route: 'llm', ok: 'false' }), notes.length);
    assert.ok(sumSamples(text, `${METRIC_SERIES.taggerDuration}_count`, { route: 'encoder_fallback', ok: 'true' }) >= 1);
    assert.ok(sumSamples(text, METRIC_SERIES.sentences, { route: 'encoder_fallback', policy: 'llm' }) >= notes.length);
    assert.equal(sumSamples(text, METRIC_SERIES.sentences, { route: 'llm' }), 0);
    const circuit = sample(text, METRIC_SERIES.circuitState);
    assert.ok(circuit !== undefined && [0, 1, 2].includes(circuit), `circuit gauge ${circuit}`);
    assert.equal(circuit, { closed: 0, 'half-open': 1, open: 2 }[llm.client.circuitState]);
  } finally {
    await service.close();
    await llm.close();
    await metrics.shutdown();
  }
});

test('the telemetry server answers 500 when collection fails, 503 when the ready callback throws, 405 for other methods', async () => {
  const server = await startTelemetryServer({
    port: 0,
    host: '127.0.0.1',
    metrics: { collectPrometheus: () => Promise.reject(new Error('boom')) },
    ready: () => {
      throw new Error('boom');
    },
  });
  try {
    assert.equal((await get(`${server.url}/metrics`)).status, 500);
    const ready = await get(`${server.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.deepEqual((JSON.parse(ready.body) as { failing: string[] }).failing, ['ready_callback']);
    assert.equal((await get(`${server.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 405);
  } finally {
    await server.close();
    await server.close(); // a second close is harmless
  }
});
