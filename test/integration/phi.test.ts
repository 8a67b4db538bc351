import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import type { Kafka } from 'kafkajs';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import type { RouterConfig } from '../../src/config/schema.js';
import { MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../../src/embedded/read-topic.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createKafka, createProducer } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { DlqHeaders, headerString } from '../../src/publish/dlq.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import { createRouterMetrics, type RouterMetrics } from '../../src/telemetry/metrics.js';
import { setupTracing, type Tracing } from '../../src/telemetry/tracing.js';
import { fixtureNotes, testConfig, uniqueNames } from '../helpers/pipeline.js';

/**
 * PHI never leaves through telemetry: notes carrying unique markers in their
 * text, patient id, source and metadata (and malformed records carrying them
 * in their bytes) go through the whole pipeline with tracing to memory, a
 * debug logger capturing every line and the metrics module's Prometheus
 * exposition; no marker may appear in any of them.
 */

const MARK = /ZQXMARKER|PATIENT-MARK/;

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;
let tracing: Tracing;
const exporter = new InMemorySpanExporter();
const logLines: string[] = [];

let metrics: RouterMetrics;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 1 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('phi-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
  tracing = setupTracing(config.telemetry, { exporter });
  metrics = createRouterMetrics();
});

after(async () => {
  await tracing?.shutdown();
  await metrics?.shutdown();
  await encoder?.close();
  await cluster?.stop();
});

/** Every string telemetry holds for a span: name, attributes, events, links, status, resource, scope. */
function spanStrings(s: ReadableSpan): string[] {
  const out: string[] = [s.name, s.status.message ?? '', s.instrumentationScope.name, s.instrumentationScope.version ?? ''];
  const attrs = (a: Record<string, unknown> | undefined): void => {
    for (const [k, v] of Object.entries(a ?? {})) out.push(k, Array.isArray(v) ? v.map(String).join('\u0000') : String(v));
  };
  attrs(s.attributes);
  attrs(s.resource.attributes);
  for (const e of s.events) {
    out.push(e.name);
    attrs(e.attributes);
  }
  for (const l of s.links) attrs(l.attributes);
  return out;
}

function assertClean(where: string, strings: string[]): void {
  for (const str of strings) assert.ok(!MARK.test(str), `${where} carries a marker: ${str.slice(0, 200)}`);
}

interface Run {
  records: ReadRecord[];
  expected: number;
}

async function runPipeline(
  config: RouterConfig,
  messages: Array<{ key: string; value: Buffer; headers?: Record<string, string> }>,
  withLlm: boolean,
): Promise<Run> {
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({ topic: config.input.topic, messages });
  await producer.disconnect();
  const logger = createLogger('debug', (line) => logLines.push(line));
  const hooks = metrics.hooks;
  const router = await loadRouter(config, logger);
  const llm = withLlm ? await loadLlm(config, logger) : undefined;
  const service = new RouterService(config, createProcessor(config, encoder, hooks, llm, router), logger, hooks);
  await service.start();
  const records = await readTopics(kafka, [config.output.topic, config.output.dlqTopic], (rs) => rs.length >= messages.length, 120_000);
  await service.close();
  await llm?.close();
  await tracing.forceFlush();
  return { records, expected: messages.length };
}

function markedNotes(prefix: string, count: number, offset: number): Array<{ key: string; value: Buffer }> {
  const pool = fixtureNotes();
  return Array.from({ length: count }, (_, i) => {
    const n = offset + i;
    const base = pool[n % pool.length].text;
    // Markers at the start, inside a drug mention, and at the end of the note.
    const text = `ZQXMARKER${n} reports pain. ${base.slice(0, 600)} Given ZQXMARKER${n}cisplatin for cancer. Seen by Dr ZQXMARKER${n}.`;
    return {
      key: `${prefix}-${n}`,
      value: encodeNote(
        {
          noteId: `${prefix}-${n}`,
          text,
          source: `ZQXMARKER${n}-source`,
          latencyBudgetMs: null,
          patientId: `PATIENT-MARK-${n}`,
          metadata: { mrn: `PATIENT-MARK-${n}`, ward: `ZQXMARKER${n}` },
        },
        'json',
      ),
    };
  });
}

function malformedMarked(prefix: string): Array<{ key: string; value: Buffer; expect: string }> {
  return [
    {
      key: `${prefix}-bad-json`,
      value: Buffer.from(`{"note_id": "${prefix}-bad-json", "patient_id": "PATIENT-MARK-90", "text": "ZQXMARKER90 unterminated`, 'utf8'),
      expect: 'DECODE_FAILED',
    },
    {
      key: `${prefix}-bad-type`,
      value: Buffer.from(JSON.stringify({ note_id: `${prefix}-bad-type`, text: ['ZQXMARKER91 in an array'], patient_id: 'PATIENT-MARK-91' }), 'utf8'),
      expect: 'SCHEMA_MISMATCH',
    },
    {
      key: `${prefix}-bad-empty`,
      value: Buffer.from(JSON.stringify({ note_id: `${prefix}-bad-empty`, text: '  ', patient_id: 'PATIENT-MARK-92', source: 'ZQXMARKER92' }), 'utf8'),
      expect: 'TEXT_EMPTY',
    },
  ];
}

async function topicsFor(names: { input: string; output: string; dlq: string }): Promise<void> {
  await cluster.createTopic(names.input, 2);
  await cluster.createTopic(names.output, 1);
  await cluster.createTopic(names.dlq, 1);
}

test('encoder policy: marked notes and marked malformed records leave no marker in spans, logs or metrics', async () => {
  exporter.reset();
  logLines.length = 0;
  const names = uniqueNames('phi-enc');
  await topicsFor(names);
  const config = testConfig(cluster.bootstrapServers, names);
  const bad = malformedMarked('phi');
  const messages = [...markedNotes('phi', 4, 0), ...bad.map(({ key, value }) => ({ key, value }))];
  const run = await runPipeline(config, messages, false);
  assert.equal(run.records.length, run.expected);
  const dlq = run.records.filter((r) => r.topic === names.dlq);
  assert.deepEqual(dlq.map((r) => headerString(r.headers, DlqHeaders.errorCode)).sort(), bad.map((b) => b.expect).sort());
  // Positive control: the markers did travel through the pipeline (the DLQ keeps the original bytes).
  assert.ok(
    dlq.some((r) => MARK.test(r.value?.toString('utf8') ?? '')),
    'the DLQ value holds the marked bytes',
  );

  const spans = exporter.getFinishedSpans();
  assert.ok(
    spans.some((s) => s.name.startsWith('tag encoder')),
    'tagger spans were recorded',
  );
  assert.ok(
    spans.filter((s) => s.name === `process ${names.input}` && s.attributes['error.type'] !== undefined).length === bad.length,
    'dead-lettered records have error.type',
  );
  assert.ok(
    spans.some((s) => s.events.some((e) => e.name === 'exception')),
    'exception events were recorded',
  );
  for (const s of spans) assertClean(`span ${s.name}`, spanStrings(s));
  assert.ok(logLines.length > 0 && logLines.some((l) => l.includes('"level":"debug"') || l.includes('dead-lettered')), 'logs were captured');
  assertClean('log line', logLines);
  for (const r of run.records)
    for (const [k, v] of Object.entries(r.headers)) if (k !== 'traceparent' && r.topic === names.output) assertClean(`output header ${k}`, [String(v)]);
  const text = await metrics.collectPrometheus();
  assert.ok(text.includes('bioner_dlq_total'), 'metrics were exposed');
  assertClean('metrics', [text]);
});

test('llm policy against a server that echoes the prompt in its errors: no marker in spans, exception events, logs or metrics', async (t) => {
  exporter.reset();
  logLines.length = 0;
  const names = uniqueNames('phi-llm');
  await topicsFor(names);
  // A hostile LLM server: answers 500 with the request body (the note text) in the error, or 200 with the prompt as content.
  let requests = 0;
  const srv: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests++;
      const body = Buffer.concat(chunks).toString('utf8');
      if (requests % 2 === 1) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `cannot handle ${body}`, code: 500 } }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ choices: [{ index: 0, message: { role: 'assistant', content: `{"garbage": ${JSON.stringify(body)}` } }] }));
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  try {
    const base = testConfig(cluster.bootstrapServers, names);
    const config: RouterConfig = {
      ...base,
      routing: { ...base.routing, policy: 'llm' },
      llm: {
        ...base.llm,
        adapter: 'openai',
        baseUrl: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
        retries: 0,
        circuit: { failureThreshold: 1000, resetTimeoutMs: 30_000 },
      },
    };
    const run = await runPipeline(config, markedNotes('phl', 4, 10), true);
    assert.equal(run.records.filter((r) => r.topic === names.output).length, 4);
    assert.ok(requests > 0, 'the LLM server was asked');
    const spans = exporter.getFinishedSpans();
    const failed = spans.filter((s) => s.name === 'tag llm' && s.attributes['error.type'] !== undefined);
    assert.ok(failed.length > 0, 'LLM failures were traced');
    t.diagnostic(`LLM failures traced: ${[...new Set(failed.map((s) => String(s.attributes['error.type'])))].join(', ')}; ${requests} requests`);
    assert.ok(
      spans.some((s) => s.name === 'tag encoder_fallback'),
      'the fallback was traced',
    );
    for (const s of spans) assertClean(`span ${s.name}`, spanStrings(s));
    assertClean('log line', logLines);
    assertClean('metrics', [await metrics.collectPrometheus()]);
  } finally {
    await new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  }
});
