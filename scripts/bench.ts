/**
 * `npm run bench` (add `--quick` for a ~1 minute run): throughput and overhead
 * figures measured in one process, printed as a table and one final JSON line.
 *
 * 1. Encoder: EncoderTagger vs raw onnxruntime `session.run` on the very
 *    batches the tagger built (recorded, then replayed on a second session).
 * 2. Pipeline: RouterService (encoder policy) on the embedded mock broker vs a
 *    bare kafkajs consume-then-produce passthrough of the same records.
 * 3. Router: Router.plan decisions/s per policy; route_ms share of note latency.
 * 4. LLM route: models/bc5cdr-llm in-process vs serve-llm over HTTP (openai and
 *    vllm-pooling adapters).
 *
 * transformers.js is not compared: see README "Benchmarks".
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { validateConfig } from '../src/config/load.js';
import { MockKafkaCluster, ensureMockKafkaBinary } from '../src/embedded/mock-cluster.js';
import { readTopics } from '../src/embedded/read-topic.js';
import { readMtsamplesCsv, readNotesFile } from '../src/eval/datasets.js';
import { encodeNote } from '../src/ingest/decode.js';
import { createKafka, createProducer } from '../src/ingest/kafka.js';
import { RouterService } from '../src/pipeline/service.js';
import { decodeTaggedNote } from '../src/publish/tagged-note.js';
import { createRouter, POLICY_NAMES, type NoteBudget } from '../src/route/index.js';
import { packageRoot } from '../src/schemas.js';
import { EncoderTagger, loadOnnxTagger } from '../src/taggers/encoder.js';
import { createLlmTagger } from '../src/taggers/llm/index.js';
import type { LogitsBackend } from '../src/taggers/token-classifier.js';
import { createLogger } from '../src/telemetry/logger.js';
import { prepareText } from '../src/text/index.js';
import { startLlmServer } from '../src/cli/serve-llm.js';
import { createProcessor, loadRouter } from '../src/cli/components.js';
import type { Sentence } from '../src/types.js';

const quick = process.argv.includes('--quick');
const P = quick
  ? { notes: 12, encSentences: 200, pipeNotes: 12, llmSentences: 40, httpSentences: 24, routerMs: 300 }
  : { notes: 30, encSentences: 500, pipeNotes: 30, llmSentences: 100, httpSentences: 60, routerMs: 800 };
const THREADS = Number(process.env.BENCH_THREADS ?? 2);
const ENCODER_DIR = resolve(packageRoot, 'models/bc5cdr-encoder');
const LLM_DIR = resolve(packageRoot, 'models/bc5cdr-llm');

const results: Record<string, unknown> = { quick, threads: THREADS };
const rows: Array<[string, string, string]> = [];
const notesOut: string[] = [];
const row = (what: string, value: string, note = ''): void => {
  rows.push([what, value, note]);
  process.stderr.write(`  ${what}: ${value} ${note}\n`);
};
const r2 = (x: number): number => Number(x.toFixed(2));
const pct = (sorted: number[], p: number): number => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);

async function loadTexts(): Promise<{ source: string; texts: string[] }> {
  const csv = resolve(packageRoot, '../shared/data/mtsamples/mtsamples.csv');
  if (existsSync(csv)) return { source: 'mtsamples.csv', texts: (await readMtsamplesCsv(csv)).slice(0, P.notes) };
  const jsonl = resolve(packageRoot, 'test/fixtures/mtsamples/notes.jsonl');
  return { source: 'fixtures notes.jsonl', texts: (await readNotesFile(jsonl)).map((n) => n.text).filter((t) => t.trim() !== '').slice(0, P.notes) };
}

/** Wraps the tagger's backend to record the batches it sends and the time spent in them. */
function instrument(tagger: EncoderTagger): { batches: number[][][]; backendMs: () => number; runMs: () => number; reset: () => void } {
  const backend = (tagger as unknown as { backend: LogitsBackend & { session: ort.InferenceSession } }).backend;
  const batches: number[][][] = [];
  let backendMs = 0;
  let runMs = 0;
  const origRun = backend.run.bind(backend);
  backend.run = async (rowsIn, signal) => {
    batches.push(rowsIn.map((r) => [...r]));
    const t = performance.now();
    try {
      return await origRun(rowsIn, signal);
    } finally {
      backendMs += performance.now() - t;
    }
  };
  const session = backend.session;
  const origSession = session.run.bind(session) as (feeds: ort.InferenceSession.FeedsType) => Promise<ort.InferenceSession.ReturnType>;
  (session as unknown as { run: typeof origSession }).run = async (feeds) => {
    const t = performance.now();
    try {
      return await origSession(feeds);
    } finally {
      runMs += performance.now() - t;
    }
  };
  return { batches, backendMs: () => backendMs, runMs: () => runMs, reset: () => { batches.length = 0; backendMs = 0; runMs = 0; } };
}

function feedsFor(batch: number[][], padId: number, tokenTypes: boolean): Record<string, ort.Tensor> {
  const rowsN = batch.length;
  const cols = batch.reduce((m, ids) => Math.max(m, ids.length), 0);
  const ids = new BigInt64Array(rowsN * cols).fill(BigInt(padId));
  const mask = new BigInt64Array(rowsN * cols);
  batch.forEach((r, i) => r.forEach((id, c) => { ids[i * cols + c] = BigInt(id); mask[i * cols + c] = 1n; }));
  const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', ids, [rowsN, cols]), attention_mask: new ort.Tensor('int64', mask, [rowsN, cols]) };
  if (tokenTypes) feeds.token_type_ids = new ort.Tensor('int64', new BigInt64Array(rowsN * cols), [rowsN, cols]);
  return feeds;
}

async function benchEncoder(sentences: Sentence[]): Promise<number> {
  process.stderr.write('[1/4] encoder\n');
  const tagger = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS, batchSize: 32 });
  const probe = instrument(tagger);
  await tagger.tagSentences(sentences.slice(0, 40)); // warm-up
  probe.reset();
  const t0 = performance.now();
  await tagger.tagSentences(sentences);
  const taggerMs = performance.now() - t0;
  const batches = probe.batches.map((b) => b);
  const backendMs = probe.backendMs();
  const runMs = probe.runMs();
  const padId = (tagger as unknown as { bundle: { special: { pad: number } } }).bundle.special.pad;
  await tagger.close();

  const session = await ort.InferenceSession.create(join(ENCODER_DIR, 'model.onnx'), { intraOpNumThreads: THREADS, graphOptimizationLevel: 'all' });
  const tokenTypes = session.inputNames.includes('token_type_ids');
  const feeds = batches.map((b) => feedsFor(b, padId, tokenTypes));
  await session.run(feeds[0]); // warm-up
  const t1 = performance.now();
  for (const f of feeds) await session.run(f);
  const rawMs = performance.now() - t1;
  await session.release();

  const windows = batches.reduce((n, b) => n + b.length, 0);
  const tagRate = (sentences.length / taggerMs) * 1000;
  const rawRate = (sentences.length / rawMs) * 1000;
  const ratio = taggerMs / rawMs;
  const otherMs = taggerMs - backendMs;
  row('encoder: EncoderTagger', `${tagRate.toFixed(1)} sent/s`, `${sentences.length} sentences, ${windows} windows, ${batches.length} batches`);
  row('encoder: raw session.run', `${rawRate.toFixed(1)} sent/s`, 'same padded batches, tensors prebuilt');
  row('encoder: overhead ratio', `${ratio.toFixed(3)}x`, `target <= 1.15x: ${ratio <= 1.15 ? 'met' : 'MISSED'}`);
  row('encoder: time split', `run ${runMs.toFixed(0)} ms / tensors+slice ${(backendMs - runMs).toFixed(0)} ms / tokenise+window+decode ${otherMs.toFixed(0)} ms`, `of ${taggerMs.toFixed(0)} ms`);
  results.encoder = { sentences: sentences.length, windows, batches: batches.length, tagger_sent_per_s: r2(tagRate), raw_sent_per_s: r2(rawRate), overhead_ratio: Number(ratio.toFixed(3)), target_ratio: 1.15, session_run_ms: r2(runMs), tensor_and_slice_ms: r2(backendMs - runMs), tokenise_window_decode_ms: r2(otherMs), raw_ms: r2(rawMs), tagger_ms: r2(taggerMs), transformers_js: 'not measured (see README)' };
  return taggerMs / sentences.length;
}

async function benchPipeline(texts: string[]): Promise<number[]> {
  process.stderr.write('[2/4] pipeline\n');
  const logger = createLogger('warn');
  await ensureMockKafkaBinary();
  const topics = { input: 'clinical-notes', output: 'tagged-notes', dlq: 'clinical-notes.dlq', ptIn: 'pt-in', ptOut: 'pt-out' };
  const cluster = await MockKafkaCluster.start({ brokers: 1, topics: [topics.input, topics.output, topics.dlq, topics.ptIn, topics.ptOut].map((name) => ({ name, partitions: 1 })) });
  try {
    const config = validateConfig({
      kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-bench' },
      input: { topic: topics.input, groupId: 'bioner-bench', format: 'json', maxWaitTimeMs: 100 },
      output: { topic: topics.output, dlqTopic: topics.dlq },
      encoder: { intraOpThreads: THREADS },
      routing: { policy: 'encoder' },
      logging: { level: 'warn' },
    });
    const kafka = createKafka(config.kafka, logger);
    const producer = createProducer(kafka);
    await producer.connect();
    const messages = Array.from({ length: P.pipeNotes }, (_, i) => {
      const noteId = `bench-${String(i + 1).padStart(4, '0')}`;
      return { key: noteId, value: encodeNote({ noteId, text: texts[i % texts.length], source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json') };
    });
    await producer.send({ topic: topics.input, messages });
    await producer.send({ topic: topics.ptIn, messages });

    // Bare passthrough: consume, produce the value unchanged.
    const pt0 = performance.now();
    const consumer = kafka.consumer({ groupId: 'bench-passthrough', maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic: topics.ptIn, fromBeginning: true });
    let firstPt = 0;
    await consumer.run({ eachMessage: async ({ message }) => {
      if (firstPt === 0) firstPt = performance.now();
      await producer.send({ topic: topics.ptOut, messages: [{ key: message.key, value: message.value }] });
    } });
    await readTopics(kafka, [topics.ptOut], (rs) => rs.length >= P.pipeNotes, 60_000);
    const ptMs = performance.now() - pt0;
    const ptSteadyMs = performance.now() - firstPt;
    await consumer.disconnect();

    // Encoder alone on the same notes in-process (text stage + tagging), for the floor.
    const enc = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS });
    await enc.tagSentences(prepareText(texts[0]).sentences.slice(0, 10));
    const e0 = performance.now();
    for (const m of messages) await enc.tagSentences(prepareText(texts[messages.indexOf(m) % texts.length]).sentences);
    const bareTagMs = performance.now() - e0;
    await enc.close();

    const encoder = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS });
    const router = await loadRouter(config, logger);
    const s0 = performance.now();
    const service = new RouterService(config, createProcessor(config, encoder, {}, undefined, router), logger);
    await service.start();
    const records = await readTopics(kafka, [topics.output, topics.dlq], (rs) => rs.length >= P.pipeNotes, 180_000);
    const pipeMs = performance.now() - s0;
    await service.close();
    await encoder.close();
    await producer.disconnect();

    const tagged = records.filter((r) => r.topic === topics.output && r.value !== null).map((r) => decodeTaggedNote(r.value as Buffer));
    const lat = tagged.map((t) => t.timings.total_ms).sort((a, b) => a - b);
    const routeMs = tagged.reduce((n, t) => n + t.timings.route_ms, 0);
    const textMs = tagged.reduce((n, t) => n + t.timings.text_ms, 0);
    const encMs = tagged.reduce((n, t) => n + t.timings.encoder_ms, 0);
    const totalMs = tagged.reduce((n, t) => n + t.timings.total_ms, 0);
    const pipeRate = (tagged.length / pipeMs) * 1000;
    const ptRate = (P.pipeNotes / ptMs) * 1000;
    const floorMs = ptMs + bareTagMs;
    const ratio = pipeMs / floorMs;
    row('pipeline: RouterService', `${pipeRate.toFixed(2)} notes/s`, `${tagged.length} notes, ${(pipeMs / 1000).toFixed(1)} s incl. group join`);
    row('pipeline: kafkajs passthrough', `${ptRate.toFixed(2)} notes/s`, `${(ptMs / 1000).toFixed(1)} s incl. group join; ${(ptSteadyMs / 1000).toFixed(2)} s after first record`);
    row('pipeline: bare tagging (no Kafka)', `${((P.pipeNotes / bareTagMs) * 1000).toFixed(2)} notes/s`, 'prepareText + EncoderTagger, one note at a time');
    row('pipeline: ratio vs passthrough', `${(pipeMs / ptMs).toFixed(2)}x`, 'not like for like: the passthrough does no inference');
    row('pipeline: ratio vs passthrough+bare tagging', `${ratio.toFixed(3)}x`, `target <= 1.2x: ${ratio <= 1.2 ? 'met' : 'MISSED'}`);
    row('pipeline: note latency p50 / p95', `${pct(lat, 50).toFixed(0)} / ${pct(lat, 95).toFixed(0)} ms`, 'timings.total_ms (receipt to publish)');
    row('pipeline: latency split (sum over notes)', `text ${textMs.toFixed(0)} / route ${routeMs.toFixed(1)} / encoder ${encMs.toFixed(0)} / other ${(totalMs - textMs - routeMs - encMs).toFixed(0)} ms`, 'other = queueing behind other notes + publish');
    results.pipeline = { notes: tagged.length, router_notes_per_s: r2(pipeRate), passthrough_notes_per_s: r2(ptRate), bare_tagging_notes_per_s: r2((P.pipeNotes / bareTagMs) * 1000), ratio_vs_passthrough: r2(pipeMs / ptMs), ratio_vs_passthrough_plus_tagging: Number(ratio.toFixed(3)), target_ratio: 1.2, p50_ms: r2(pct(lat, 50)), p95_ms: r2(pct(lat, 95)), sum_text_ms: r2(textMs), sum_route_ms: r2(routeMs), sum_encoder_ms: r2(encMs), sum_total_ms: r2(totalMs) };
    return [routeMs, totalMs, tagged.length];
  } finally {
    await cluster.stop();
  }
}

async function benchRouter(sentencesPerNote: Sentence[][], routeShare: number[]): Promise<void> {
  process.stderr.write('[3/4] router\n');
  const budget: NoteBudget = { budgetMs: 2000, source: 'default', effectiveMs: 2000, loadFactor: 1 };
  const out: Record<string, number> = {};
  for (const policy of POLICY_NAMES) {
    const config = validateConfig({ kafka: { brokers: ['127.0.0.1:9092'] }, input: { topic: 'x', groupId: 'x' }, output: { topic: 'y', dlqTopic: 'z' }, routing: { policy }, logging: { level: 'warn' } });
    let router;
    try {
      router = await loadRouter(config);
    } catch {
      router = createRouter({ policy, calibration: null });
    }
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < P.routerMs) {
      for (const sentences of sentencesPerNote) {
        router.plan({ sentences, budget, elapsedMs: 0 });
        n++;
      }
    }
    const rate = (n / (performance.now() - t0)) * 1000;
    out[policy] = Math.round(rate);
    row(`router: plan ${policy}`, `${Math.round(rate)} decisions/s`, `per note (mean ${(sentencesPerNote.reduce((a, s) => a + s.length, 0) / sentencesPerNote.length).toFixed(0)} sentences)`);
  }
  const [routeMs, totalMs, notes] = routeShare;
  const share = totalMs > 0 ? routeMs / totalMs : 0;
  row('router: share of note latency', `${(share * 100).toFixed(3)} %`, `mean route_ms ${(routeMs / Math.max(1, notes)).toFixed(2)} ms per note`);
  results.router = { decisions_per_s: out, share_of_latency: Number(share.toFixed(5)) };
}

async function benchLlm(sentences: Sentence[]): Promise<void> {
  process.stderr.write('[4/4] LLM route\n');
  const inproc = await loadOnnxTagger(LLM_DIR, 'llm', { intraOpThreads: THREADS });
  await inproc.tagSentences(sentences.slice(0, 8));
  const t0 = performance.now();
  await inproc.tagSentences(sentences.slice(0, P.llmSentences));
  const inMs = performance.now() - t0;
  await inproc.close();
  const inRate = (P.llmSentences / inMs) * 1000;
  row('llm: in-process onnx', `${inRate.toFixed(1)} sent/s`, `${P.llmSentences} sentences`);
  const llm: Record<string, number> = { inprocess_sent_per_s: r2(inRate) };

  const server = await startLlmServer({ modelDir: LLM_DIR, port: 0, host: '127.0.0.1' });
  try {
    const sub = sentences.slice(0, P.httpSentences);
    for (const adapter of ['openai', 'vllm-pooling'] as const) {
      const config = validateConfig({ kafka: { brokers: ['127.0.0.1:9092'] }, input: { topic: 'x', groupId: 'x' }, output: { topic: 'y', dlqTopic: 'z' }, routing: { policy: 'llm' }, llm: { adapter, baseUrl: server.url, modelDir: LLM_DIR }, logging: { level: 'warn' } });
      const tagger = await createLlmTagger(config.llm, { modelDir: LLM_DIR, encoder: config.encoder });
      await tagger.tagSentences(sub.slice(0, 4));
      const before = server.stats.requests;
      const t1 = performance.now();
      await tagger.tagSentences(sub);
      const ms = performance.now() - t1;
      const reqs = server.stats.requests - before;
      await tagger.close();
      const rate = (sub.length / ms) * 1000;
      row(`llm: HTTP ${adapter}`, `${rate.toFixed(1)} sent/s`, `${sub.length} sentences, ${reqs} requests, ${(inRate / rate).toFixed(2)}x slower than in-process`);
      llm[`${adapter.replace('-', '_')}_sent_per_s`] = r2(rate);
      llm[`${adapter.replace('-', '_')}_requests`] = reqs;
    }
  } finally {
    await server.close();
  }
  results.llm = llm;
}

async function main(): Promise<void> {
  const started = performance.now();
  const { source, texts } = await loadTexts();
  const prepared = texts.map((t) => prepareText(t).sentences);
  const tp = performance.now();
  for (const t of texts) prepareText(t);
  const prepMs = performance.now() - tp;
  const all = prepared.flat();
  const sentences = all.slice(0, P.encSentences);
  results.data = { source, notes: texts.length, sentences: all.length, prepare_text_ms_per_note: r2(prepMs / texts.length) };
  process.stderr.write(`bench: ${source}, ${texts.length} notes, ${all.length} sentences, ${THREADS} onnxruntime threads${quick ? ' (quick)' : ''}\n`);

  await benchEncoder(sentences);
  const share = await benchPipeline(texts);
  await benchRouter(prepared, share);
  await benchLlm(all);

  const w1 = Math.max(...rows.map((r) => r[0].length));
  const w2 = Math.max(...rows.map((r) => r[1].length));
  const lines = [`bioner-router bench (${source}, ${texts.length} notes, ${THREADS} threads${quick ? ', quick' : ''})`, `${'measure'.padEnd(w1)}  ${'value'.padEnd(w2)}  notes`, '-'.repeat(w1 + w2 + 40)];
  for (const [a, b, c] of rows) lines.push(`${a.padEnd(w1)}  ${b.padEnd(w2)}  ${c}`);
  for (const n of notesOut) lines.push(n);
  lines.push(`bench wall time ${((performance.now() - started) / 1000).toFixed(1)} s`);
  results.wall_s = r2((performance.now() - started) / 1000);
  process.stdout.write(lines.join('\n') + '\n');
  process.stdout.write(JSON.stringify(results) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
