import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import type { Kafka } from 'kafkajs';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import type { RouterConfig } from '../../src/config/schema.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { decodeTaggedNote } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { BionerAttr, MessagingAttr } from '../../src/telemetry/attributes.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { setupTracing, type Tracing } from '../../src/telemetry/tracing.js';
import { fixtureNotes, testConfig, uniqueNames } from '../helpers/pipeline.js';

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;
let tracing: Tracing;
const exporter = new InMemorySpanExporter();

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('tracing-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
  tracing = setupTracing(config.telemetry, { exporter });
  assert.ok(tracing.enabled);
});

after(async () => {
  await tracing?.shutdown();
  await encoder?.close();
  await cluster?.stop();
});

async function topicsFor(names: { input: string; output: string; dlq: string }): Promise<void> {
  await cluster.createTopic(names.input, 1);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
}

interface Input {
  id: string;
  text: string;
  headers?: Record<string, string>;
}

/** Produces the notes, runs the service until every one has an output record, and returns the output records and the spans of its input topic. */
async function run(config: RouterConfig, inputs: Input[], withLlm = false): Promise<{ outputs: ReadRecord[]; spans: ReadableSpan[] }> {
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic: config.input.topic,
    messages: inputs.map((n) => ({
      key: n.id,
      value: encodeNote({ noteId: n.id, text: n.text, source: null, latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
      headers: n.headers,
    })),
  });
  await producer.disconnect();
  const router = await loadRouter(config);
  const llm = withLlm ? await loadLlm(config) : undefined;
  if (withLlm) assert.ok(llm !== undefined, 'the policy loads an LLM tagger');
  const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), silentLogger);
  await service.start();
  const outputs = await readTopics(kafka, [config.output.topic], (rs) => rs.length >= inputs.length, 120_000);
  await service.close();
  await llm?.close();
  await tracing.forceFlush();
  const all = exporter.getFinishedSpans();
  const processSpans = all.filter((s) => s.name === `process ${config.input.topic}`);
  const traces = new Set(processSpans.map((s) => s.spanContext().traceId));
  return { outputs, spans: all.filter((s) => traces.has(s.spanContext().traceId)) };
}

const idOf = (s: ReadableSpan): string => s.spanContext().spanId;
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;
function childrenOf(spans: ReadableSpan[], parent: ReadableSpan): ReadableSpan[] {
  return spans.filter((s) => s.spanContext().traceId === parent.spanContext().traceId && parentOf(s) === idOf(parent));
}
function one(spans: ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `one span named ${name} (got ${spans.map((s) => s.name).join(', ')})`);
  return found[0];
}
function processSpanOf(spans: ReadableSpan[], topic: string, noteId: string): ReadableSpan {
  const found = spans.filter((s) => s.name === `process ${topic}` && s.attributes[BionerAttr.NOTE_ID] === noteId);
  assert.equal(found.length, 1, `one process span for ${noteId}`);
  return found[0];
}
function traceparentOf(r: ReadRecord): string | undefined {
  const v = r.headers.traceparent;
  return v === undefined ? undefined : Array.isArray(v) ? v[0].toString() : v.toString();
}

test('encoder-only notes: process -> text, route encoder -> tag encoder, send; producer context is the parent; output carries the trace', async () => {
  exporter.reset();
  const names = uniqueNames('trace-enc');
  await topicsFor(names);
  const config = testConfig(cluster.bootstrapServers, names);
  const texts = fixtureNotes().slice(0, 2);
  const producerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
  const producerSpan = '00f067aa0ba902b7';
  const inputs: Input[] = [
    { id: 'enc-0', text: texts[0].text, headers: { traceparent: `00-${producerTrace}-${producerSpan}-01` } },
    { id: 'enc-1', text: texts[1].text },
  ];
  const { outputs, spans } = await run(config, inputs);

  for (const input of inputs) {
    const proc = processSpanOf(spans, names.input, input.id);
    assert.equal(proc.kind, SpanKind.CONSUMER);
    assert.equal(proc.instrumentationScope.name, 'bioner-router');
    assert.equal(proc.attributes[MessagingAttr.SYSTEM], 'kafka');
    assert.equal(proc.attributes[MessagingAttr.DESTINATION_NAME], names.input);
    assert.equal(proc.attributes[MessagingAttr.DESTINATION_PARTITION_ID], '0');
    assert.equal(proc.attributes[MessagingAttr.OPERATION_TYPE], 'process');
    assert.equal(proc.attributes[MessagingAttr.CONSUMER_GROUP_NAME], names.group);
    assert.equal(typeof proc.attributes[MessagingAttr.KAFKA_OFFSET], 'number');
    // The broker it talks to: the first bootstrap server.
    const [bootHost, bootPort] = cluster.bootstrapServers[0].split(':');
    assert.equal(proc.attributes[MessagingAttr.SERVER_ADDRESS], bootHost);
    assert.equal(proc.attributes[MessagingAttr.SERVER_PORT], Number(bootPort));
    assert.notEqual(proc.status.code, SpanStatusCode.ERROR);
    const traceId = proc.spanContext().traceId;
    if (input.headers !== undefined) {
      assert.equal(traceId, producerTrace, 'the producer trace continues');
      assert.equal(parentOf(proc), producerSpan, 'the producer span is the parent');
    } else {
      assert.equal(parentOf(proc), undefined, 'no producer context: a root span');
    }

    const kids = childrenOf(spans, proc);
    const text = one(kids, 'text');
    assert.ok(Number(text.attributes[BionerAttr.TEXT_SENTENCES]) > 0 && Number(text.attributes[BionerAttr.TEXT_WORDS]) > 0);
    assert.equal(text.attributes[BionerAttr.NOTE_CHARS], input.text.length);
    const route = one(kids, 'route encoder');
    assert.equal(route.attributes[BionerAttr.ROUTE_POLICY], 'encoder');
    assert.equal(route.attributes[BionerAttr.ROUTE_CHOSEN], 'encoder');
    assert.equal(route.attributes[BionerAttr.ROUTE_BUDGET_SOURCE], 'default');
    assert.equal(route.attributes[BionerAttr.ROUTE_BUDGET_MS], 5000);
    assert.equal(route.attributes[BionerAttr.ROUTE_SENTENCES_LLM], 0);
    assert.deepEqual(route.attributes[BionerAttr.ROUTE_REASONS], ['encoder_policy']);
    const tag = one(childrenOf(spans, route), 'tag encoder');
    assert.equal(tag.attributes[BionerAttr.TAGGER_ROUTE], 'encoder');
    assert.equal(tag.attributes[BionerAttr.TAGGER_SENTENCES], text.attributes[BionerAttr.TEXT_SENTENCES]);
    assert.equal(tag.attributes[BionerAttr.TAGGER_OK], true);
    assert.equal(tag.attributes[BionerAttr.TAGGER_MODEL], encoder.model.id);
    assert.ok(Number(tag.attributes[BionerAttr.TAGGER_MS]) > 0);
    const send = one(kids, `send ${names.output}`);
    assert.equal(send.kind, SpanKind.PRODUCER);
    assert.equal(send.attributes[MessagingAttr.OPERATION_TYPE], 'send');
    assert.equal(send.attributes[MessagingAttr.DESTINATION_NAME], names.output);
    assert.equal(send.attributes[MessagingAttr.SERVER_ADDRESS], bootHost);
    assert.equal(send.attributes[MessagingAttr.SERVER_PORT], Number(bootPort));

    // The output record carries the send span's context: downstream consumers continue the same trace.
    const out = outputs.find((r) => r.key?.toString() === input.id);
    assert.ok(out !== undefined);
    assert.equal(traceparentOf(out), `00-${traceId}-${idOf(send)}-01`);
    assert.equal(decodeTaggedNote(out.value as Buffer).note_id, input.id);
  }
});

test('cascade: the route span carries the decision (after refine), tag encoder and tag llm children where sentences were re-tagged', async () => {
  exporter.reset();
  const names = uniqueNames('trace-cascade');
  await topicsFor(names);
  const base = testConfig(cluster.bootstrapServers, names);
  const config: RouterConfig = { ...base, routing: { ...base.routing, policy: 'cascade', defaultBudgetMs: 4000 } };
  const inputs = fixtureNotes()
    .slice(12, 16)
    .map((n, i) => ({ id: `cas-${i}`, text: n.text }));
  const { outputs, spans } = await run(config, inputs, true);
  let retagged = 0;
  for (const out of outputs) {
    const rec = decodeTaggedNote(out.value as Buffer);
    const proc = processSpanOf(spans, names.input, rec.note_id);
    const route = one(childrenOf(spans, proc), 'route cascade');
    const a = route.attributes;
    assert.equal(a[BionerAttr.ROUTE_POLICY], 'cascade');
    assert.equal(a[BionerAttr.ROUTE_CASCADE], true);
    assert.equal(a[BionerAttr.ROUTE_BUDGET_MS], 4000);
    assert.equal(a[BionerAttr.ROUTE_EFFECTIVE_BUDGET_MS], rec.routing.effective_budget_ms);
    assert.equal(a[BionerAttr.ROUTE_SENTENCES], rec.routing.sentences);
    assert.equal(a[BionerAttr.ROUTE_SENTENCES_LLM], rec.routing.sentences_llm);
    // The Avro record holds floats: equal to single precision.
    const near = (x: unknown, y: number): boolean => Math.abs(Number(x) - y) <= 1e-5 * Math.max(1, Math.abs(y));
    assert.ok(near(a[BionerAttr.ROUTE_ESTIMATED_GAIN], rec.routing.estimated_gain));
    assert.ok(near(a[BionerAttr.ROUTE_PREDICTED_LLM_MS], rec.routing.predicted_llm_ms));
    assert.ok(near(a[BionerAttr.ROUTE_PREDICTED_ENCODER_MS], rec.routing.predicted_encoder_ms));
    assert.deepEqual(a[BionerAttr.ROUTE_REASONS], rec.routing.reasons, 'the reasons include the refine step');
    assert.equal(
      a[BionerAttr.ROUTE_CHOSEN],
      rec.routing.sentences_llm === 0 ? 'encoder' : rec.routing.sentences_llm === rec.routing.sentences ? 'llm' : 'mixed',
    );
    const tags = childrenOf(spans, route);
    const enc = one(tags, 'tag encoder');
    assert.equal(enc.attributes[BionerAttr.TAGGER_SENTENCES], rec.routing.sentences);
    if (rec.routing.sentences_llm > 0) {
      retagged++;
      const llm = one(tags, 'tag llm');
      assert.equal(llm.attributes[BionerAttr.TAGGER_ROUTE], 'llm');
      assert.equal(llm.attributes[BionerAttr.TAGGER_SENTENCES], rec.routing.sentences_llm);
      assert.equal(llm.attributes[BionerAttr.TAGGER_OK], true);
      assert.ok(llm.startTime[0] * 1e9 + llm.startTime[1] >= enc.endTime[0] * 1e9 + enc.endTime[1], 'the LLM re-tags after the encoder pass');
    } else {
      assert.equal(tags.filter((s) => s.name === 'tag llm').length, 0);
    }
  }
  assert.ok(retagged > 0, 'at least one note had sentences re-tagged by the LLM');
});

test('fallback: a closed LLM port gives tag llm with status ERROR and error.type, then tag encoder_fallback', async () => {
  exporter.reset();
  const names = uniqueNames('trace-fallback');
  await topicsFor(names);
  // A port that was open a moment ago and is closed now: connections are refused.
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const base = testConfig(cluster.bootstrapServers, names);
  const config: RouterConfig = {
    ...base,
    routing: { ...base.routing, policy: 'llm' },
    llm: { ...base.llm, adapter: 'openai', baseUrl: `http://127.0.0.1:${port}`, retries: 0 },
  };
  const inputs = [{ id: 'fb-0', text: 'The patient developed acute renal failure after cisplatin. She was treated with furosemide for hypertension.' }];
  const { outputs, spans } = await run(config, inputs, true);
  const rec = decodeTaggedNote(outputs[0].value as Buffer);
  assert.ok(rec.routing.reasons.includes('llm_fallback:LLM_UNAVAILABLE'), rec.routing.reasons.join(','));
  const proc = processSpanOf(spans, names.input, 'fb-0');
  assert.notEqual(proc.status.code, SpanStatusCode.ERROR, 'a fallback is not a failed note');
  const route = one(childrenOf(spans, proc), 'route llm');
  assert.equal(route.attributes[BionerAttr.ROUTE_CHOSEN], 'llm');
  assert.equal(route.attributes[BionerAttr.ROUTE_FALLBACK], true);
  assert.equal(route.attributes[BionerAttr.ROUTE_FALLBACK_CODE], 'LLM_UNAVAILABLE');
  assert.equal(route.attributes[BionerAttr.ROUTE_SENTENCES_FALLBACK], 2);
  assert.equal(route.attributes[BionerAttr.ROUTE_ESTIMATED_GAIN], 0);
  const tags = childrenOf(spans, route).sort((x, y) => x.startTime[0] - y.startTime[0] || x.startTime[1] - y.startTime[1]);
  assert.deepEqual(
    tags.map((s) => s.name),
    ['tag llm', 'tag encoder_fallback'],
  );
  const [llm, fallback] = tags;
  assert.equal(llm.status.code, SpanStatusCode.ERROR);
  assert.equal(llm.status.message, 'LLM_UNAVAILABLE');
  assert.equal(llm.attributes['error.type'], 'LLM_UNAVAILABLE');
  assert.equal(llm.attributes[BionerAttr.TAGGER_OK], false);
  const exception = llm.events.find((e) => e.name === 'exception');
  assert.ok(exception !== undefined, 'the failure is recorded as an exception event');
  assert.equal(exception.attributes?.['exception.type'], 'LlmError');
  assert.equal(exception.attributes?.['exception.stacktrace'], undefined, 'no stack trace');
  // Under the tagger call, one CLIENT span per HTTP request (one per sentence, no retries here). The first refusal
  // fails the call, so the other request is either refused too or cancelled because the note stopped waiting.
  const requests = childrenOf(spans, llm);
  assert.ok(requests.length >= 1 && requests.length <= 2, `${requests.length} requests`);
  for (const r of requests) {
    assert.equal(r.name, 'POST /v1/chat/completions');
    assert.equal(r.attributes['server.port'], port);
    assert.ok(['LLM_UNAVAILABLE', 'LLM_BUDGET_EXCEEDED'].includes(String(r.attributes['error.type'])), String(r.attributes['error.type']));
    assert.equal(r.attributes['http.response.status_code'], undefined, 'no answer, no status');
  }
  assert.ok(
    requests.some((r) => r.attributes['error.type'] === 'LLM_UNAVAILABLE'),
    'the refused request says so',
  );
  assert.equal(fallback.attributes[BionerAttr.TAGGER_ROUTE], 'encoder_fallback');
  assert.equal(fallback.attributes[BionerAttr.TAGGER_OK], true);
  assert.equal(fallback.attributes[BionerAttr.TAGGER_SENTENCES], 2);
});

test('tracesExporter none registers nothing (the API stays a no-op)', () => {
  const base = testConfig(['localhost:9092'], uniqueNames('none'));
  const none = setupTracing({ ...base.telemetry, tracesExporter: 'none' });
  assert.equal(none.enabled, false);
  const disabled = setupTracing(base.telemetry, { env: { OTEL_SDK_DISABLED: 'true' } });
  assert.equal(disabled.enabled, false);
});

test('a dead-lettered record: process span with status ERROR and error.type = the DLQ code, a send span to the DLQ, original headers kept', async () => {
  exporter.reset();
  const names = uniqueNames('trace-dlq');
  await topicsFor(names);
  const config = testConfig(cluster.bootstrapServers, names);
  const original = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic: names.input,
    messages: [{ key: 'bad-1', value: Buffer.from('{"note_id": "bad-1", "text": "unterminated', 'utf8'), headers: { traceparent: original } }],
  });
  await producer.disconnect();
  const service = new RouterService(config, createProcessor(config, encoder), silentLogger);
  await service.start();
  const [dlq] = await readTopics(kafka, [names.dlq], (rs) => rs.length >= 1, 60_000);
  await service.close();
  await tracing.forceFlush();
  const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === '0af7651916cd43dd8448eb211c80319c');
  const proc = one(spans, `process ${names.input}`);
  assert.equal(proc.status.code, SpanStatusCode.ERROR);
  assert.equal(proc.attributes['error.type'], 'DECODE_FAILED');
  assert.equal(proc.attributes[BionerAttr.DLQ_STAGE], 'decode');
  assert.equal(proc.attributes[BionerAttr.NOTE_ID], undefined, 'no note id from an undecodable record');
  const exception = proc.events.find((e) => e.name === 'exception');
  assert.equal(exception?.attributes?.['exception.type'], 'InvalidRecordError');
  const send = one(childrenOf(spans, proc), `send ${names.dlq}`);
  assert.equal(send.kind, SpanKind.PRODUCER);
  assert.equal(childrenOf(spans, proc).filter((s) => s.name === 'text').length, 0);
  assert.equal(traceparentOf(dlq), original, 'the DLQ record keeps the original headers untouched');
});

// Last: it replaces the file's tracing registration and unregisters it at the end.
test('OTEL_SERVICE_NAME and OTEL_TRACES_SAMPLER_ARG win over the config; the sampler follows a sampled producer whatever the ratio', async () => {
  const base = testConfig(['localhost:9092'], uniqueNames('env'));
  const local = new InMemorySpanExporter();
  const second = setupTracing(
    { ...base.telemetry, sampleRatio: 1 },
    { exporter: local, env: { OTEL_SERVICE_NAME: 'router-from-env', OTEL_TRACES_SAMPLER_ARG: '0' } },
  );
  try {
    assert.deepEqual(second.sampling, { name: 'parentbased_traceidratio', ratio: 0 }, 'the sampler run logs at start-up');
    const t = trace.getTracer('bioner-router');
    const root = t.startSpan('root');
    assert.equal(root.isRecording(), false, 'ratio 0: a root span is not sampled');
    root.end();
    const remote = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
      isRemote: true,
    });
    const child = t.startSpan('child', {}, remote);
    assert.equal(child.isRecording(), true, 'a sampled remote parent is followed');
    child.end();
    await second.forceFlush();
    const [span] = local.getFinishedSpans();
    assert.equal(span.name, 'child');
    assert.equal(span.resource.attributes['service.name'], 'router-from-env');
  } finally {
    await second.shutdown();
  }
  // After shutdown the API is a no-op again.
  assert.equal(trace.getTracer('bioner-router').startSpan('after').isRecording(), false);
});

test('otlp: spans are POSTed to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces with the service name', async () => {
  const bodies: Array<{ url: string; body: string }> = [];
  const collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push({ url: req.url ?? '', body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', () => r()));
  const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
  try {
    const base = testConfig(['localhost:9092'], uniqueNames('otlp'));
    const otlp = setupTracing({ ...base.telemetry, serviceName: 'bioner-otlp-test' });
    assert.ok(otlp.enabled);
    trace.getTracer('bioner-router').startSpan('route encoder').end();
    await otlp.shutdown();
    assert.equal(bodies.length, 1);
    assert.equal(bodies[0].url, '/v1/traces');
    assert.ok(bodies[0].body.includes('bioner-otlp-test') && bodies[0].body.includes('route encoder'));
  } finally {
    if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
    await new Promise<void>((r) => collector.close(() => r()));
  }
});
