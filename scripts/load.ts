/**
 * `npm run bench:load` [-- --policy encoder|cascade --rates 50%,80% --seconds 40 --notes-file F]
 *
 * Open-loop load through the embedded mock broker: the router (composeRouter,
 * as `run` builds it, in this process) consumes mtsamples notes produced at a
 * fixed rate, not all at once. First a closed-loop burst measures the
 * maximum rate; then each requested rate (a share of that maximum, or notes/s)
 * runs for a fixed time. Per rate it prints p50/p95/p99 note latency (receipt
 * to published record, from the records), consumer lag sampled every second,
 * CPU ms per note (process.cpuUsage over the run, all threads, so onnxruntime's
 * too) and RSS (sampled every second): the figures the chart's requests and
 * limits are set from. Ends with one JSON line.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { validateConfig } from '../src/config/load.js';
import { UsageError } from '../src/errors.js';
import { MockKafkaCluster } from '../src/embedded/mock-cluster.js';
import { readTopics } from '../src/embedded/read-topic.js';
import { readMtsamplesCsv, readNotesFile } from '../src/eval/datasets.js';
import { encodeNote } from '../src/ingest/decode.js';
import { createKafka, createProducer } from '../src/kafka/index.js';
import { composeRouter } from '../src/pipeline/compose.js';
import { decodeTaggedNote } from '../src/publish/tagged-note.js';
import { packageRoot } from '../src/schemas.js';
import { silentLogger } from '../src/telemetry/logger.js';

const { values: args } = parseArgs({
  options: {
    policy: { type: 'string', default: 'encoder' },
    rates: { type: 'string', default: '50%,80%' },
    seconds: { type: 'string', default: '40' },
    'burst-notes': { type: 'string', default: '120' },
    'notes-file': { type: 'string' },
  },
});
const POLICY = String(args.policy);
if (POLICY !== 'encoder' && POLICY !== 'cascade' && POLICY !== 'llm' && POLICY !== 'length-aware') {
  process.stderr.write('usage: npm run bench:load -- [--policy encoder|cascade|llm|length-aware] [--rates 50%,80%|N,...] [--seconds S] [--burst-notes N]\n');
  process.exit(2);
}
const SECONDS = Number(args.seconds);
const BURST = Number(args['burst-notes']);

async function loadTexts(): Promise<string[]> {
  const shared = resolve(packageRoot, '../shared/data/mtsamples/mtsamples.csv');
  if (args['notes-file'] !== undefined) return (await readNotesFile(args['notes-file'])).map((n) => n.text).filter((t) => t.trim() !== '');
  if (existsSync(shared)) return (await readMtsamplesCsv(shared)).filter((t) => t.trim() !== '');
  return (await readNotesFile(resolve(packageRoot, 'test/fixtures/mtsamples/notes.jsonl'))).map((n) => n.text);
}

const quantile = (sorted: number[], q: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface RateResult {
  rate: number;
  notes: number;
  seconds: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_lag: number;
  lag_series: number[];
  cpu_ms_per_note: number;
  cpu_cores: number;
  rss_mb_p50: number;
  rss_mb_max: number;
  llm_share: number;
}

async function main(): Promise<void> {
  const texts = await loadTexts();
  const cluster = await MockKafkaCluster.start({ brokers: 1 });
  const results: RateResult[] = [];
  try {
    const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers } }).kafka, silentLogger);
    let round = 0;
    const runOnce = async (count: number, rate: number | undefined): Promise<{ result: RateResult; wallMs: number }> => {
      round++;
      const names = { input: `load-in-${round}`, output: `load-out-${round}`, dlq: `load-dlq-${round}` };
      for (const t of Object.values(names)) await cluster.createTopic(t, t.includes('dlq') ? 1 : 3);
      const config = validateConfig({
        kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-load' },
        input: { topic: names.input, groupId: `load-${round}`, maxWaitTimeMs: 100, sessionTimeoutMs: 30000 },
        output: { topic: names.output, dlqTopic: names.dlq },
        routing: { policy: POLICY },
        telemetry: { port: -1, tracesExporter: 'none' },
        logging: { level: 'silent' },
      });
      const parts = await composeRouter(config, { logger: silentLogger });
      const producer = createProducer(kafka);
      await producer.connect();
      const messages = Array.from({ length: count }, (_, i) => {
        const noteId = `load-${round}-${i}`;
        return {
          key: noteId,
          value: encodeNote({ noteId, text: texts[i % texts.length], source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
        };
      });
      await parts.service.start();
      // One warm-up note first, so the group has joined and the models are warm before the clock starts.
      await producer.send({
        topic: names.input,
        messages: [
          {
            key: 'warm-up',
            value: encodeNote({ noteId: 'warm-up', text: texts[0], source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
          },
        ],
      });
      await readTopics(kafka, [names.output], (rs) => rs.length >= 1, 120_000);
      const lagSeries: number[] = [];
      const rss: number[] = [];
      const sampler = setInterval(() => {
        lagSeries.push(parts.service.consumerLag() ?? 0);
        rss.push(process.memoryUsage.rss() / 2 ** 20);
      }, 1000);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      if (rate === undefined) await producer.send({ topic: names.input, messages });
      else {
        // Open loop: each note is sent at its scheduled time, whatever the router is doing.
        for (let i = 0; i < count; i++) {
          const due = t0 + (i * 1000) / rate;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          await producer.send({ topic: names.input, messages: [messages[i]] });
        }
      }
      const records = (await readTopics(kafka, [names.output], (rs) => rs.length >= count + 1, 600_000)).filter((r) => r.key?.toString() !== 'warm-up');
      const wallMs = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      clearInterval(sampler);
      await producer.disconnect();
      await parts.close();
      const tagged = records.filter((r) => r.value !== null).map((r) => decodeTaggedNote(r.value as Buffer));
      const lat = tagged.map((r) => r.timings.total_ms).sort((a, b) => a - b);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      const sortedRss = [...rss].sort((a, b) => a - b);
      const sentences = tagged.reduce((n, r) => n + r.routing.sentences, 0);
      return {
        wallMs,
        result: {
          rate: rate ?? (count / wallMs) * 1000,
          notes: tagged.length,
          seconds: wallMs / 1000,
          p50_ms: quantile(lat, 0.5),
          p95_ms: quantile(lat, 0.95),
          p99_ms: quantile(lat, 0.99),
          max_lag: Math.max(0, ...lagSeries),
          lag_series: lagSeries,
          cpu_ms_per_note: cpuMs / Math.max(1, tagged.length),
          cpu_cores: cpuMs / wallMs,
          rss_mb_p50: quantile(sortedRss, 0.5),
          rss_mb_max: sortedRss[sortedRss.length - 1] ?? Number.NaN,
          llm_share: sentences > 0 ? tagged.reduce((n, r) => n + r.routing.sentences_llm, 0) / sentences : 0,
        },
      };
    };

    process.stderr.write(`[load] policy ${POLICY}: closed-loop burst of ${BURST} notes to find the maximum rate\n`);
    const burst = await runOnce(BURST, undefined);
    const max = burst.result.rate;
    results.push(burst.result);
    for (const spec of String(args.rates)
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')) {
      const rate = spec.endsWith('%') ? (max * Number(spec.slice(0, -1))) / 100 : Number(spec);
      if (!(rate > 0)) throw new UsageError(`bad rate ${spec}: a share of the maximum (50%) or notes/s`);
      const count = Math.max(10, Math.round(rate * SECONDS));
      process.stderr.write(`[load] ${spec} = ${rate.toFixed(2)} notes/s for ${SECONDS} s (${count} notes)\n`);
      results.push((await runOnce(count, rate)).result);
    }
  } finally {
    await cluster.stop();
  }
  const fmt = (n: number, d = 1): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
  const rows = [
    ['run', 'notes/s', 'notes', 'p50 ms', 'p95 ms', 'p99 ms', 'max lag', 'CPU ms/note', 'cores busy', 'RSS MiB p50/max', 'LLM share'],
    ...results.map((r, i) => [
      i === 0 ? 'max (burst)' : `open loop`,
      fmt(r.rate, 2),
      String(r.notes),
      fmt(r.p50_ms),
      fmt(r.p95_ms),
      fmt(r.p99_ms),
      String(r.max_lag),
      fmt(r.cpu_ms_per_note),
      fmt(r.cpu_cores, 2),
      `${fmt(r.rss_mb_p50, 0)}/${fmt(r.rss_mb_max, 0)}`,
      fmt(r.llm_share, 3),
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows) process.stdout.write(r.map((v, c) => v.padStart(widths[c])).join('  ') + '\n');
  process.stdout.write(JSON.stringify({ policy: POLICY, results: results.map(({ lag_series, ...r }) => ({ ...r, lag_series })) }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:load failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
