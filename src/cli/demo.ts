import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { validateConfig } from '../config/load.js';
import { DataFormatError } from '../errors.js';
import { MockKafkaCluster, ensureMockKafkaBinary } from '../embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../embedded/read-topic.js';
import { readNotesFile } from '../eval/datasets.js';
import { encodeNote } from '../ingest/decode.js';
import { createKafka, createProducer } from '../kafka/index.js';
import { DlqHeaders, headerString } from '../publish/dlq.js';
import { decodeTaggedNote } from '../publish/tagged-note.js';
import { packageRoot } from '../schemas.js';
import { ATTR_ERROR_TYPE, BionerAttr } from '../telemetry/attributes.js';
import { createLogger } from '../telemetry/logger.js';
import { createRouterMetrics, metricsExporterNames, METRIC_SERIES, serviceSources } from '../telemetry/metrics.js';
import { SERVICE_VERSION, telemetryIdentity } from '../telemetry/otel-env.js';
import { setupTracing } from '../telemetry/tracing.js';
import { composeRouter } from '../pipeline/compose.js';
import type { PolicyName } from '../route/index.js';

export interface DemoOptions {
  notes: number;
  notesFile?: string;
  model?: string;
  format: 'json' | 'avro';
  /** `encoder` (default) or `llm`: every sentence to the LLM route (the in-process reference decoder, encoder fallback). */
  policy?: PolicyName;
  /** LLM bundle for `--policy llm` (default models/bc5cdr-generative). */
  llmModel?: string;
  /** Where the table and summaries go (default stdout); tests capture it. */
  write?: (text: string) => void;
  /** Where progress and the closing hints go, a line at a time (default stderr); counts and paths only, never note text. */
  progress?: (line: string) => void;
}

export const DEMO_FIXTURE = 'test/fixtures/mtsamples/notes.jsonl';

/** Malformed records the demo mixes in: each must end up in the DLQ with its code. */
export function malformedRecords(): Array<{ key: string; value: Buffer; expect: string }> {
  return [
    { key: 'bad-json', value: Buffer.from('{"note_id": "bad-json", "text": "unterminated', 'utf8'), expect: 'DECODE_FAILED' },
    { key: 'bad-missing-text', value: Buffer.from(JSON.stringify({ note_id: 'bad-missing-text' }), 'utf8'), expect: 'TEXT_MISSING' },
    { key: 'bad-empty-text', value: Buffer.from(JSON.stringify({ note_id: 'bad-empty-text', text: '   \n ' }), 'utf8'), expect: 'TEXT_EMPTY' },
    { key: 'bad-wrong-type', value: Buffer.from(JSON.stringify({ note_id: 'bad-wrong-type', text: 42 }), 'utf8'), expect: 'SCHEMA_MISMATCH' },
    {
      key: 'bad-utf8',
      value: Buffer.concat([Buffer.from('{"note_id":"bad-utf8","text":"fever ', 'utf8'), Buffer.from([0xc3, 0x28]), Buffer.from('"}', 'utf8')]),
      expect: 'INVALID_UTF8',
    },
  ];
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * `bioner-router demo`: everything embedded. Starts the mock Kafka cluster,
 * produces N notes plus a few malformed records, runs the router, reads the
 * output and DLQ topics back and prints a table, then one JSON summary line.
 */
export async function demoCommand(opts: DemoOptions): Promise<Record<string, number>> {
  const started = performance.now();
  const progress = opts.progress ?? ((line: string) => process.stderr.write(line + '\n'));
  const logger = createLogger('warn');
  const source = opts.notesFile ?? resolve(packageRoot, DEMO_FIXTURE);
  const pool = (await readNotesFile(source)).filter((n) => n.text.trim() !== '');
  if (pool.length === 0) throw new DataFormatError(`no notes with text in ${source}`);
  const notes = Array.from({ length: opts.notes }, (_, i) => {
    const base = pool[i % pool.length];
    return {
      noteId: `demo-${String(i + 1).padStart(4, '0')}`,
      text: base.text,
      source: base.id ?? 'mtsamples',
      latencyBudgetMs: null,
      patientId: null,
      metadata: { fixture: base.id ?? String(i % pool.length) },
    };
  });
  const bad = opts.format === 'json' ? malformedRecords() : malformedRecords().filter((b) => b.expect !== 'INVALID_UTF8');

  progress('demo: starting embedded Kafka (3 brokers)...');
  await ensureMockKafkaBinary();
  const topics = { input: 'clinical-notes', output: 'tagged-notes', dlq: 'clinical-notes.dlq' };
  const cluster = await MockKafkaCluster.startForPipeline(topics);
  try {
    const config = validateConfig({
      kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-demo' },
      input: { topic: topics.input, groupId: 'bioner-demo', format: opts.format, maxWaitTimeMs: 100 },
      output: { topic: topics.output, dlqTopic: topics.dlq },
      encoder: opts.model === undefined ? {} : { modelDir: opts.model },
      routing: { policy: opts.policy ?? 'encoder' },
      llm: opts.llmModel === undefined ? {} : { modelDir: opts.llmModel },
      logging: { level: 'warn' },
    });
    const kafka = createKafka(config.kafka, logger);
    const producer = createProducer(kafka);
    progress(`demo: producing ${notes.length} notes and ${bad.length} malformed records...`);
    await producer.connect();
    await producer.send({
      topic: topics.input,
      messages: [
        ...notes.map((n) => ({ key: n.noteId, value: encodeNote(n, opts.format) })),
        ...(opts.format === 'json' ? bad.map((b) => ({ key: b.key, value: b.value })) : bad.map((b) => ({ key: b.key, value: Buffer.from([0x02, 0x41]) }))),
      ],
    });
    await producer.disconnect();

    progress('demo: loading models...');
    // The demo traces to memory and records metrics as `run` does, then summarises the routing from both.
    const spans = new InMemorySpanExporter();
    const identity = telemetryIdentity(config.telemetry);
    const tracing = setupTracing(config.telemetry, { exporter: spans, identity, alsoFromEnv: true });
    // The demo's summary reads the Prometheus view, so that one is always on; OTEL_METRICS_EXPORTER may add push exporters.
    const metrics = createRouterMetrics({ ...identity, runtime: true, exporters: [...new Set(['prometheus' as const, ...metricsExporterNames()])] });
    try {
      const parts = await composeRouter(config, { logger, hooks: metrics.hooks });
      metrics.observe(serviceSources(parts.service, parts.llm));
      metrics.observe({ build: () => ({ serviceVersion: SERVICE_VERSION, encoderModel: parts.encoder.model, llmModel: parts.llm?.model }) });
      await parts.service.start();
      const expected = notes.length + bad.length;
      const tally = taggingProgress(notes.length, topics.output, progress);
      const records = await readTopics(kafka, [topics.output, topics.dlq], (rs) => tally(rs) && rs.length >= expected, 120_000);
      await parts.close();
      await tracing.forceFlush();
      const summaries = [...routingSummary(spans.getFinishedSpans(), topics.input), ...metricsSummary(await metrics.collectPrometheus())];
      const summary = printSummary(records, topics, notes.length, performance.now() - started, summaries, opts.write);
      for (const line of DEMO_NEXT_STEPS) progress(line);
      return summary;
    } finally {
      await metrics.shutdown();
      await tracing.shutdown();
    }
  } finally {
    await cluster.stop();
  }
}

const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

/**
 * A few lines on how the notes were routed, computed from the spans the run
 * recorded: notes per chosen route with their mean estimated gain, tagger
 * calls per route with their mean time, LLM fallbacks and dead-lettered
 * records by code.
 */
export function routingSummary(spans: readonly ReadableSpan[], inputTopic: string): string[] {
  const routeSpans = spans.filter((s) => s.name.startsWith('route '));
  const byChosen = new Map<string, number[]>();
  for (const s of routeSpans) {
    const chosen = String(s.attributes[BionerAttr.ROUTE_CHOSEN] ?? '?');
    const gains = byChosen.get(chosen) ?? [];
    gains.push(Number(s.attributes[BionerAttr.ROUTE_ESTIMATED_GAIN] ?? 0));
    byChosen.set(chosen, gains);
  }
  const calls = new Map<string, { ms: number[]; failed: number }>();
  for (const s of spans.filter((x) => x.name.startsWith('tag '))) {
    const route = String(s.attributes[BionerAttr.TAGGER_ROUTE] ?? s.name.slice(4));
    const entry = calls.get(route) ?? { ms: [], failed: 0 };
    entry.ms.push(Number(s.attributes[BionerAttr.TAGGER_MS] ?? 0));
    if (s.status.code === SpanStatusCode.ERROR) entry.failed++;
    calls.set(route, entry);
  }
  const fallbacks = new Map<string, number>();
  for (const s of routeSpans) {
    if (s.attributes[BionerAttr.ROUTE_FALLBACK] !== true) continue;
    const code = String(s.attributes[BionerAttr.ROUTE_FALLBACK_CODE] ?? '?');
    fallbacks.set(code, (fallbacks.get(code) ?? 0) + 1);
  }
  const dead = new Map<string, number>();
  for (const s of spans.filter((x) => x.name === `process ${inputTopic}` && x.status.code === SpanStatusCode.ERROR)) {
    const code = String(s.attributes[ATTR_ERROR_TYPE] ?? '?');
    dead.set(code, (dead.get(code) ?? 0) + 1);
  }
  const list = (m: Map<string, number>): string => [...m].map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const policies = [...new Set(routeSpans.map((s) => String(s.attributes[BionerAttr.ROUTE_POLICY] ?? '?')))].join(',') || '-';
  return [
    `routing from traces (${spans.length} spans, policy ${policies}):`,
    `  notes by route chosen: ${[...byChosen].map(([r, g]) => `${r} ${g.length} (mean est. gain ${mean(g) >= 0 ? '+' : ''}${mean(g).toFixed(4)})`).join(', ') || 'none'}`,
    `  tagger calls: ${[...calls].map(([r, c]) => `${r} ${c.ms.length} (mean ${mean(c.ms).toFixed(1)} ms${c.failed > 0 ? `, ${c.failed} failed` : ''})`).join(', ') || 'none'}`,
    `  LLM fallbacks: ${list(fallbacks)}; dead-lettered: ${list(dead)}`,
  ];
}

interface Sample {
  name: string;
  labels: Map<string, string>;
  value: number;
}

/** Samples of a Prometheus text exposition (what our own serializer writes: no timestamps, no exemplars). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (m === null) continue;
    const labels = new Map([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/**
 * What the run's metrics recorded (the series `run` serves on /metrics), as a
 * few lines: notes by outcome, sentences by route, tagger calls by route with
 * their mean time, DLQ and fallbacks by code, budget overruns, and how many
 * series were exported. Labels are codes only, so nothing here can be PHI.
 */
export function metricsSummary(exposition: string): string[] {
  const samples = parseExposition(exposition);
  const byLabel = (name: string, label: string): Map<string, number> => {
    const out = new Map<string, number>();
    for (const s of samples) if (s.name === name) out.set(s.labels.get(label) ?? '?', (out.get(s.labels.get(label) ?? '?') ?? 0) + s.value);
    return out;
  };
  const total = (name: string): number => samples.filter((s) => s.name === name).reduce((n, s) => n + s.value, 0);
  const list = (m: Map<string, number>): string => [...m].map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const callCounts = byLabel(`${METRIC_SERIES.taggerDuration}_count`, 'route');
  const callMs = byLabel(`${METRIC_SERIES.taggerDuration}_sum`, 'route');
  const calls = [...callCounts].map(([r, n]) => `${r} ${n} (mean ${(n > 0 ? (callMs.get(r) ?? 0) / n : 0).toFixed(1)} ms)`).join(', ') || 'none';
  const dlq = new Map<string, number>();
  for (const s of samples) if (s.name === METRIC_SERIES.dlq) dlq.set(`${s.labels.get('code') ?? '?'}@${s.labels.get('stage') ?? '?'}`, s.value);
  const families = new Set(samples.map((s) => s.name.replace(/_(bucket|sum|count)$/, '')));
  return [
    `metrics recorded (${samples.length} series in ${families.size} families, as served on /metrics):`,
    `  notes: ${list(byLabel(METRIC_SERIES.notes, 'outcome'))} (received ${total(METRIC_SERIES.notesReceived)})`,
    `  sentences by route: ${list(byLabel(METRIC_SERIES.sentences, 'route'))}`,
    `  tagger calls: ${calls}`,
    `  DLQ: ${list(dlq)}; LLM fallbacks: ${list(byLabel(METRIC_SERIES.llmFallbacks, 'code'))}; budget overruns: ${total(METRIC_SERIES.budgetOverruns)}`,
  ];
}

function printSummary(
  records: ReadRecord[],
  topics: { output: string; dlq: string },
  notes: number,
  wallMs: number,
  routing: string[] = [],
  write: (text: string) => void = (t) => process.stdout.write(t),
): Record<string, number> {
  const outputs = records.filter((r) => r.topic === topics.output && r.value !== null).map((r) => decodeTaggedNote(r.value as Buffer));
  const dlq = records.filter((r) => r.topic === topics.dlq);
  const rows = outputs.sort((a, b) => a.note_id.localeCompare(b.note_id));
  const header = `${'note'.padEnd(10)} ${'chars'.padStart(6)} ${'spans by label'.padEnd(34)} ${'LLM sent.'.padEnd(10)} ${'ms'.padStart(7)}  reasons`;
  const lines = [header, '-'.repeat(header.length)];
  for (const r of rows) {
    const byLabel = new Map<string, number>();
    for (const s of r.spans) byLabel.set(s.label, (byLabel.get(s.label) ?? 0) + 1);
    const labels = [...byLabel].map(([l, n]) => `${l}:${n}`).join(' ') || '-';
    const llmSentences = `${r.routing.sentences_llm}/${r.routing.sentences}`;
    lines.push(
      `${r.note_id.padEnd(10)} ${String(r.text_length).padStart(6)} ${labels.padEnd(34)} ${llmSentences.padEnd(10)} ${r.timings.total_ms.toFixed(1).padStart(7)}  ${r.routing.reasons.join(',')}`,
    );
  }
  for (const d of dlq) {
    lines.push(
      `${(d.key?.toString() ?? '-').slice(0, 18).padEnd(18)} DLQ ${headerString(d.headers, DlqHeaders.errorCode) ?? '?'} at ${headerString(d.headers, DlqHeaders.stage) ?? '?'}: ${headerString(d.headers, DlqHeaders.errorMessage) ?? ''}`,
    );
  }
  const latencies = rows.map((r) => r.timings.total_ms).sort((a, b) => a - b);
  const summary = {
    notes,
    published: rows.length,
    dlq: dlq.length,
    p50_ms: Number(percentile(latencies, 50).toFixed(1)),
    p95_ms: Number(percentile(latencies, 95).toFixed(1)),
    llm_share: Number(
      (
        rows.reduce((n, r) => n + r.routing.sentences_llm, 0) /
        Math.max(
          1,
          rows.reduce((n, r) => n + r.routing.sentences, 0),
        )
      ).toFixed(3),
    ),
  };
  write(lines.join('\n') + '\n');
  if (routing.length > 0) write(routing.join('\n') + '\n');
  write(`demo wall time ${(wallMs / 1000).toFixed(1)} s\n`);
  // Tests parse this: it stays the last line.
  write(JSON.stringify(summary) + '\n');
  return summary;
}

/**
 * Reports "tagging N notes: k/N" as published records arrive (about ten
 * lines whatever N is); returns a readTopics predicate part that is always
 * true, so the caller's own condition decides when reading stops.
 */
export function taggingProgress(total: number, outputTopic: string, progress: (line: string) => void): (records: readonly ReadRecord[]) => true {
  const step = Math.max(1, Math.ceil(total / 10));
  let counted = 0;
  let published = 0;
  let shown = -1;
  const show = (): void => {
    if (published === shown || (published % step !== 0 && published < total)) return;
    shown = published;
    progress(`demo: tagging ${total} notes: ${Math.min(published, total)}/${total}`);
  };
  show();
  return (records) => {
    // readTopics passes its growing list: look only at what is new since the last call.
    for (; counted < records.length; counted++) {
      if (records[counted].topic === outputTopic) {
        published++;
        show();
      }
    }
    return true;
  };
}

/** What the demo ends with (on the progress stream, after the JSON line): where to go from here. */
export const DEMO_NEXT_STEPS: readonly string[] = [
  'what to try next:',
  '  bioner-router tag FILE                                  tag a text file of your own (or stdin) and print its spans as JSON',
  '  bioner-router run --config deploy/router.example.yaml   the same router against a real Kafka (set kafka.brokers first)',
  '  bioner-router <command> --help                          every command and option',
  '  README.md "CLI" explains this table and the JSON line; docs/reliability.md "Output" the records; docs/operations.md "Tracing" the summaries',
];
