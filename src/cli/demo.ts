import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { validateConfig } from '../config/load.js';
import { MockKafkaCluster, ensureMockKafkaBinary } from '../embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../embedded/read-topic.js';
import { readNotesFile } from '../eval/datasets.js';
import { encodeNote } from '../ingest/decode.js';
import { createKafka, createProducer } from '../ingest/kafka.js';
import { RouterService } from '../pipeline/service.js';
import { DlqHeaders, headerString } from '../publish/dlq.js';
import { decodeTaggedNote } from '../publish/tagged-note.js';
import { packageRoot } from '../schemas.js';
import { createLogger } from '../telemetry/logger.js';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from './components.js';
import type { PolicyName } from '../route/index.js';

export interface DemoOptions {
  notes: number;
  notesFile?: string;
  model?: string;
  format: 'json' | 'avro';
  /** `encoder` (default) or `llm`: every sentence to the LLM route (the in-process reference decoder, encoder fallback). */
  policy?: PolicyName;
  /** LLM bundle for `--policy llm` (default models/bc5cdr-llm). */
  llmModel?: string;
}

export const DEMO_FIXTURE = 'test/fixtures/mtsamples/notes.jsonl';

/** Malformed records the demo mixes in: each must end up in the DLQ with its code. */
export function malformedRecords(): Array<{ key: string; value: Buffer; expect: string }> {
  return [
    { key: 'bad-json', value: Buffer.from('{"note_id": "bad-json", "text": "unterminated', 'utf8'), expect: 'DECODE_FAILED' },
    { key: 'bad-missing-text', value: Buffer.from(JSON.stringify({ note_id: 'bad-missing-text' }), 'utf8'), expect: 'TEXT_MISSING' },
    { key: 'bad-empty-text', value: Buffer.from(JSON.stringify({ note_id: 'bad-empty-text', text: '   \n ' }), 'utf8'), expect: 'TEXT_EMPTY' },
    { key: 'bad-wrong-type', value: Buffer.from(JSON.stringify({ note_id: 'bad-wrong-type', text: 42 }), 'utf8'), expect: 'SCHEMA_MISMATCH' },
    { key: 'bad-utf8', value: Buffer.concat([Buffer.from('{"note_id":"bad-utf8","text":"fever ', 'utf8'), Buffer.from([0xc3, 0x28]), Buffer.from('"}', 'utf8')]), expect: 'INVALID_UTF8' },
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
  const logger = createLogger('warn');
  const source = opts.notesFile ?? resolve(packageRoot, DEMO_FIXTURE);
  const pool = (await readNotesFile(source)).filter((n) => n.text.trim() !== '');
  if (pool.length === 0) throw new Error(`no notes with text in ${source}`);
  const notes = Array.from({ length: opts.notes }, (_, i) => {
    const base = pool[i % pool.length];
    return { noteId: `demo-${String(i + 1).padStart(4, '0')}`, text: base.text, source: base.id ?? 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: { fixture: base.id ?? String(i % pool.length) } };
  });
  const bad = opts.format === 'json' ? malformedRecords() : malformedRecords().filter((b) => b.expect !== 'INVALID_UTF8');

  await ensureMockKafkaBinary();
  const topics = { input: 'clinical-notes', output: 'tagged-notes', dlq: 'clinical-notes.dlq' };
  const cluster = await MockKafkaCluster.start({ brokers: 3, topics: [{ name: topics.input, partitions: 3 }, { name: topics.output, partitions: 3 }, { name: topics.dlq, partitions: 1 }] });
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
    await producer.connect();
    await producer.send({
      topic: topics.input,
      messages: [
        ...notes.map((n) => ({ key: n.noteId, value: encodeNote(n, opts.format) })),
        ...(opts.format === 'json' ? bad.map((b) => ({ key: b.key, value: b.value })) : bad.map((b) => ({ key: b.key, value: Buffer.from([0x02, 0x41]) }))),
      ],
    });
    await producer.disconnect();

    const encoder = await loadEncoder(config.encoder);
    const llm = await loadLlm(config, logger);
    const router = await loadRouter(config, logger);
    const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), logger);
    await service.start();
    const expected = notes.length + bad.length;
    const records = await readTopics(kafka, [topics.output, topics.dlq], (rs) => rs.length >= expected, 120_000);
    await service.close();
    await encoder.close();
    await llm?.close();
    return printSummary(records, topics, notes.length, performance.now() - started);
  } finally {
    await cluster.stop();
  }
}

function printSummary(records: ReadRecord[], topics: { output: string; dlq: string }, notes: number, wallMs: number): Record<string, number> {
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
    lines.push(`${r.note_id.padEnd(10)} ${String(r.text_length).padStart(6)} ${labels.padEnd(34)} ${llmSentences.padEnd(10)} ${r.timings.total_ms.toFixed(1).padStart(7)}  ${r.routing.reasons.join(',')}`);
  }
  for (const d of dlq) {
    lines.push(`${(d.key?.toString() ?? '-').slice(0, 18).padEnd(18)} DLQ ${headerString(d.headers, DlqHeaders.errorCode) ?? '?'} at ${headerString(d.headers, DlqHeaders.stage) ?? '?'}: ${headerString(d.headers, DlqHeaders.errorMessage) ?? ''}`);
  }
  const latencies = rows.map((r) => r.timings.total_ms).sort((a, b) => a - b);
  const summary = {
    notes,
    published: rows.length,
    dlq: dlq.length,
    p50_ms: Number(percentile(latencies, 50).toFixed(1)),
    p95_ms: Number(percentile(latencies, 95).toFixed(1)),
    llm_share: Number((rows.reduce((n, r) => n + r.routing.sentences_llm, 0) / Math.max(1, rows.reduce((n, r) => n + r.routing.sentences, 0))).toFixed(3)),
  };
  process.stdout.write(lines.join('\n') + '\n');
  process.stdout.write(`demo wall time ${(wallMs / 1000).toFixed(1)} s\n`);
  process.stdout.write(JSON.stringify(summary) + '\n');
  return summary;
}

