/**
 * `npm run bench` (add `--quick` for a ~1 minute run): throughput and overhead
 * figures measured in one process, printed as a table and one final JSON line.
 *
 * 1. Encoder: EncoderTagger vs raw onnxruntime `session.run` on the very
 *    batches the tagger built (recorded, then replayed on a second session).
 * 2. Pipeline: RouterService (encoder policy) on the embedded mock broker vs a
 *    bare kafkajs consume-then-produce passthrough of the same records.
 * 3. Router: Router.plan decisions/s per policy; route_ms share of note latency.
 * 4. LLM route: the generative decoder (models/bc5cdr-generative) against a bare
 *    onnxruntime greedy loop, the encoder and serve-llm (scripts/bench-generation.ts);
 *    the decoder classifier in-process vs serve-llm over HTTP (openai and vllm-pooling).
 *
 * 1b. transformers.js `pipeline('token-classification')` on the same model.onnx.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { validateConfig } from '../src/config/load.js';
import { MockKafkaCluster, ensureMockKafkaBinary } from '../src/embedded/mock-cluster.js';
import { readTopics, type ReadRecord } from '../src/embedded/read-topic.js';
import { encodeNote } from '../src/ingest/decode.js';
import { createKafka, createProducer } from '../src/kafka/index.js';
import { decodeTaggedNote } from '../src/publish/tagged-note.js';
import { POLICY_NAMES, type NoteBudget } from '../src/route/index.js';
import { packageRoot } from '../src/schemas.js';
import { EncoderTagger, loadOnnxTagger } from '../src/taggers/encoder.js';
import { createLlmTagger } from '../src/taggers/llm/index.js';
import type { LogitsBackend } from '../src/taggers/token-classifier.js';
import { toEntitySpans } from '../src/taggers/types.js';
import { onnxSessionOptions } from '../src/taggers/onnx-backend.js';
import type { Kafka } from 'kafkajs';
import { createLogger } from '../src/telemetry/logger.js';
import { prepareText } from '../src/text/index.js';
import { startLlmServer } from '../src/taggers/llm/reference-server.js';
import { benchGeneration } from './bench-generation.js';
import { composeRouter, loadRouter } from '../src/pipeline/compose.js';
import type { Sentence } from '../src/types.js';
import { BenchTable, feedsFor, loadBenchTexts, median, r2 } from './bench-util.js';

const quick = process.argv.includes('--quick');
const P = quick
  ? { notes: 12, encSentences: 200, rounds: 3, pipeNotes: 24, llmSentences: 40, httpSentences: 24, routerMs: 300, genSentences: 64, genRounds: 2 }
  : { notes: 60, encSentences: 500, rounds: 5, pipeNotes: 120, llmSentences: 100, httpSentences: 60, routerMs: 800, genSentences: 256, genRounds: 3 };
const THREADS = Number(process.env.BENCH_THREADS ?? 2);
const ENCODER_DIR = resolve(packageRoot, 'models/bc5cdr-encoder');
// The one-pass decoder classifier: the model the vllm-pooling path serves (the generative LLM route is in bench-generation.ts).
const LLM_DIR = resolve(packageRoot, 'models/bc5cdr-decoder-classifier');

const results: Record<string, unknown> = { quick, threads: THREADS };
const table = new BenchTable();
const { row } = table;
const pct = (sorted: number[], p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];

/** Wraps the tagger's backend to record the batches it sends and the time spent in them. */
function instrument(tagger: EncoderTagger): { batches: number[][][]; backendMs: () => number; runMs: () => number; reset: () => void } {
  // onnxruntime runs on the backend's inference thread, which times each run itself (OnnxBackend.stats).
  const backend = (tagger as unknown as { backend: LogitsBackend & { stats: { runMs: number } } }).backend;
  const batches: number[][][] = [];
  let backendMs = 0;
  let runMs0 = backend.stats.runMs;
  // A batch may wait at the backend behind the running one: count the time with at least one call out, not the sum.
  let inFlight = 0;
  let since = 0;
  const origRun = backend.run.bind(backend);
  backend.run = async (rowsIn, signal) => {
    batches.push(rowsIn.map((r) => [...r]));
    if (inFlight++ === 0) since = performance.now();
    try {
      return await origRun(rowsIn, signal);
    } finally {
      if (--inFlight === 0) backendMs += performance.now() - since;
    }
  };
  return {
    batches,
    backendMs: () => backendMs,
    runMs: () => backend.stats.runMs - runMs0,
    reset: () => {
      batches.length = 0;
      backendMs = 0;
      runMs0 = backend.stats.runMs;
    },
  };
}

/** Times `fn` once. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/**
 * transformers.js `pipeline('token-classification')` on the same ONNX file:
 * its loader wants `onnx/model.onnx` and a model_type it knows, so a temp
 * directory links the bundle's files under that layout with model_type "bert"
 * (the graph's inputs and output are BERT's). Undefined when the package is
 * not installed (it is a devDependency).
 */
async function transformersJsPipeline(
  modelDir: string,
): Promise<{ run: (texts: string[]) => Promise<unknown>; version: string; close: () => Promise<void> } | undefined> {
  let tjs: typeof import('@huggingface/transformers');
  try {
    tjs = await import('@huggingface/transformers');
  } catch {
    return undefined;
  }
  const root = await mkdtemp(join(tmpdir(), 'bioner-tjs-'));
  const dir = join(root, 'model');
  await mkdir(join(dir, 'onnx'), { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    if (existsSync(join(modelDir, f))) await symlink(join(modelDir, f), join(dir, f));
  }
  await symlink(join(modelDir, 'model.onnx'), join(dir, 'onnx', 'model.onnx'));
  const config = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'bert' }));
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = `${root}/`;
  const pipe = await tjs.pipeline('token-classification', 'model', { dtype: 'fp32', device: 'cpu', session_options: onnxSessionOptions(THREADS) });
  return {
    run: (texts) => pipe(texts),
    version: tjs.env.version,
    close: async () => {
      await pipe.dispose();
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function benchEncoder(sentences: Sentence[], sentenceTexts: string[]): Promise<void> {
  process.stderr.write('[1/4] encoder\n');
  const BATCH = 32;
  const tagger = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS, batchSize: BATCH });
  const probe = instrument(tagger);
  // A whole warm-up pass: onnxruntime allocates per input shape on first sight, and the batches below replay these shapes.
  await tagger.tagSentences(sentences);
  const batches = probe.batches.map((b) => b);
  const padId = (tagger as unknown as { bundle: { special: { pad: number } } }).bundle.special.pad;

  const session = await ort.InferenceSession.create(join(ENCODER_DIR, 'model.onnx'), onnxSessionOptions(THREADS));
  const tokenTypes = session.inputNames.includes('token_type_ids');
  const feeds = batches.map((b) => feedsFor(b, padId, tokenTypes));
  const rawPass = async (): Promise<void> => {
    for (const f of feeds) await session.run(f);
  };
  await rawPass();

  const tjs = await transformersJsPipeline(ENCODER_DIR);
  // Batched like ours (32 strings a call), and one sentence a call as the pipeline is most often used.
  const tjsPass = async (): Promise<void> => {
    for (let i = 0; i < sentenceTexts.length; i += BATCH) await tjs?.run(sentenceTexts.slice(i, i + BATCH));
  };
  const tjsSinglePass = async (): Promise<void> => {
    for (const text of sentenceTexts) await tjs?.run([text]);
  };
  if (tjs !== undefined) {
    await tjsPass();
    await tjsSinglePass();
  }

  // Interleaved rounds, medians: the three contenders see the same machine state.
  const taggerMs: number[] = [];
  const rawMs: number[] = [];
  const tjsMs: number[] = [];
  const tjs1Ms: number[] = [];
  const split = { run: [] as number[], backend: [] as number[] };
  for (let round = 0; round < P.rounds; round++) {
    probe.reset();
    taggerMs.push(await timed(() => tagger.tagSentences(sentences)));
    split.run.push(probe.runMs());
    split.backend.push(probe.backendMs());
    rawMs.push(await timed(rawPass));
    if (tjs !== undefined) {
      tjsMs.push(await timed(tjsPass));
      tjs1Ms.push(await timed(tjsSinglePass));
    }
  }
  await tagger.close();
  await session.release();
  await tjs?.close();

  const tMs = median(taggerMs);
  const rMs = median(rawMs);
  const jMs = median(tjsMs);
  const j1Ms = median(tjs1Ms);
  // Ratios are paired per round (the same few seconds of machine state), then the median is taken.
  const paired = (a: number[], b: number[]): number => median(a.map((x, i) => x / b[i]));
  const runMs = median(split.run);
  const backendMs = median(split.backend);
  const windows = batches.reduce((n, b) => n + b.length, 0);
  const rate = (ms: number): number => (sentences.length / ms) * 1000;
  const ratio = paired(taggerMs, rawMs);
  const speedup = paired(tjsMs, taggerMs);
  const speedup1 = paired(tjs1Ms, taggerMs);
  row(
    'encoder: EncoderTagger',
    `${rate(tMs).toFixed(1)} sent/s`,
    `${sentences.length} sentences, ${windows} windows, ${batches.length} batches of <= ${BATCH}; median of ${P.rounds} interleaved rounds`,
  );
  row('encoder: raw session.run', `${rate(rMs).toFixed(1)} sent/s`, 'the same padded batches, tensors prebuilt');
  row('encoder: overhead vs raw onnxruntime', `${ratio.toFixed(3)}x`, `target <= 1.15x: ${ratio <= 1.15 ? 'met' : 'MISSED'}`);
  row(
    'encoder: time split (median round)',
    `run ${runMs.toFixed(0)} ms / tensors+slice ${(backendMs - runMs).toFixed(0)} ms / tokenise+window+decode ${(tMs - backendMs).toFixed(0)} ms`,
    `of ${tMs.toFixed(0)} ms`,
  );
  if (tjs !== undefined) {
    row(
      `encoder: transformers.js ${tjs.version}, batched`,
      `${rate(jMs).toFixed(1)} sent/s`,
      `pipeline('token-classification'), same model.onnx and threads, ${BATCH} sentence strings a call`,
    );
    row('encoder: speed-up vs transformers.js batched', `${speedup.toFixed(2)}x`, `target >= 3x: ${speedup >= 3 ? 'met' : 'MISSED'}`);
    row(`encoder: transformers.js ${tjs.version}, one sentence a call`, `${rate(j1Ms).toFixed(1)} sent/s`, 'the same pipeline called per sentence');
    row('encoder: speed-up vs transformers.js per sentence', `${speedup1.toFixed(2)}x`, `target >= 3x: ${speedup1 >= 3 ? 'met' : 'MISSED'}`);
  } else {
    row('encoder: transformers.js', 'not installed', 'npm ci installs it (devDependency @huggingface/transformers)');
  }
  results.encoder = {
    sentences: sentences.length,
    windows,
    batches: batches.length,
    rounds: P.rounds,
    tagger_sent_per_s: r2(rate(tMs)),
    raw_sent_per_s: r2(rate(rMs)),
    overhead_ratio: Number(ratio.toFixed(3)),
    target_ratio: 1.15,
    session_run_ms: r2(runMs),
    tensor_and_slice_ms: r2(backendMs - runMs),
    tokenise_window_decode_ms: r2(tMs - backendMs),
    transformers_js:
      tjs === undefined
        ? null
        : {
            version: tjs.version,
            batched_sent_per_s: r2(rate(jMs)),
            batched_speedup: Number(speedup.toFixed(2)),
            single_sent_per_s: r2(rate(j1Ms)),
            single_speedup: Number(speedup1.toFixed(2)),
            target_speedup: 3,
          },
  };
}

/**
 * Consume-then-produce peers on bare kafkajs (eachMessage, one record at a
 * time, default auto-commit): `tag` runs the same text stage and EncoderTagger
 * and publishes the spans as JSON; without `tag` it forwards the value
 * unchanged. Returns the epoch ms at which the first record was handled.
 */
async function bareLoop(
  kafka: Kafka,
  from: string,
  to: string,
  tagger: EncoderTagger | undefined,
): Promise<{ firstAt: () => number; stop: () => Promise<void> }> {
  const producer = createProducer(kafka);
  await producer.connect();
  const consumer = kafka.consumer({ groupId: `bench-${from}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic: from, fromBeginning: true });
  let first = 0;
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (first === 0) first = Date.now();
      let value = message.value;
      if (tagger !== undefined && value !== null) {
        const note = JSON.parse(value.toString('utf8')) as { note_id: string; text: string };
        const { sentences } = prepareText(note.text);
        const spans = toEntitySpans(sentences, await tagger.tagSentences(sentences), 'encoder');
        value = Buffer.from(JSON.stringify({ note_id: note.note_id, spans }), 'utf8');
      }
      await producer.send({ topic: to, messages: [{ key: message.key, value }] });
    },
  });
  return {
    firstAt: () => first,
    stop: async () => {
      await consumer.disconnect();
      await producer.disconnect();
    },
  };
}

/** Epoch ms of the newest record (producer timestamp) once `count` records are there. */
async function lastTimestamp(kafka: Kafka, topics: string[], count: number): Promise<{ at: number; records: ReadRecord[] }> {
  const records = await readTopics(kafka, topics, (rs) => rs.length >= count, 600_000);
  if (records.length < count) throw new Error(`only ${records.length} of ${count} records arrived on ${topics.join(', ')}`);
  return { at: Math.max(...records.map((r) => Number(r.timestamp))), records };
}

async function benchPipeline(texts: string[]): Promise<number[]> {
  process.stderr.write('[2/4] pipeline\n');
  const logger = createLogger('warn');
  await ensureMockKafkaBinary();
  const t = {
    input: 'clinical-notes',
    output: 'tagged-notes',
    dlq: 'clinical-notes.dlq',
    bareIn: 'bare-in',
    bareOut: 'bare-out',
    ptIn: 'pt-in',
    ptOut: 'pt-out',
  };
  const cluster = await MockKafkaCluster.start({ brokers: 1, topics: Object.values(t).map((name) => ({ name, partitions: 1 })) });
  try {
    const config = validateConfig({
      kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-bench' },
      input: { topic: t.input, groupId: 'bioner-bench', format: 'json', maxWaitTimeMs: 100 },
      output: { topic: t.output, dlqTopic: t.dlq },
      encoder: { intraOpThreads: THREADS },
      routing: { policy: 'encoder' },
      logging: { level: 'warn' },
    });
    const kafka = createKafka(config.kafka, logger);
    const producer = createProducer(kafka);
    await producer.connect();
    const n = P.pipeNotes;
    const messages = Array.from({ length: n }, (_, i) => {
      const noteId = `bench-${String(i + 1).padStart(4, '0')}`;
      return {
        key: noteId,
        value: encodeNote({ noteId, text: texts[i % texts.length], source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
      };
    });
    for (const topic of [t.input, t.bareIn, t.ptIn]) await producer.send({ topic, messages });
    await producer.disconnect();
    // Each run is timed from its first record handled to its last output's timestamp: the group join is left out of all three.

    const pt = await bareLoop(kafka, t.ptIn, t.ptOut, undefined);
    const ptEnd = await lastTimestamp(kafka, [t.ptOut], n);
    const ptMs = Math.max(1, ptEnd.at - pt.firstAt());
    await pt.stop();

    const bareTagger = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS });
    await bareTagger.tagSentences(prepareText(texts[0]).sentences);
    const bare = await bareLoop(kafka, t.bareIn, t.bareOut, bareTagger);
    const bareEnd = await lastTimestamp(kafka, [t.bareOut], n);
    const bareMs = bareEnd.at - bare.firstAt();
    await bare.stop();
    await bareTagger.close();

    const encoder = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS });
    await encoder.tagSentences(prepareText(texts[0]).sentences);
    let firstAt = 0;
    const hooks = {
      noteReceived: () => {
        firstAt ||= Date.now();
      },
    };
    const parts = await composeRouter(config, { logger, hooks, encoder });
    await parts.service.start();
    const ours = await lastTimestamp(kafka, [t.output, t.dlq], n);
    const pipeMs = ours.at - firstAt;
    await parts.close();
    await encoder.close();

    const tagged = ours.records.filter((r) => r.topic === t.output && r.value !== null).map((r) => decodeTaggedNote(r.value as Buffer));
    const lat = tagged.map((x) => x.timings.total_ms).sort((a, b) => a - b);
    const sum = (f: (x: (typeof tagged)[number]) => number): number => tagged.reduce((acc, x) => acc + f(x), 0);
    const [textMs, routeMs, encMs, totalMs] = [
      sum((x) => x.timings.text_ms),
      sum((x) => x.timings.route_ms),
      sum((x) => x.timings.encoder_ms),
      sum((x) => x.timings.total_ms),
    ];
    const rate = (ms: number): number => (n / ms) * 1000;
    const ratio = pipeMs / bareMs;
    row(
      'pipeline: RouterService (encoder policy)',
      `${rate(pipeMs).toFixed(2)} notes/s`,
      `${tagged.length} notes; concurrency ${config.processing.concurrency}, Avro out, ordered commits, DLQ path`,
    );
    row('pipeline: bare kafkajs consume+tag+produce', `${rate(bareMs).toFixed(2)} notes/s`, 'eachMessage, same text stage and EncoderTagger, spans as JSON');
    row('pipeline: overhead vs bare loop', `${ratio.toFixed(3)}x`, `time ratio; target <= 1.2x: ${ratio <= 1.2 ? 'met' : 'MISSED'}`);
    row('pipeline: bare kafkajs passthrough', `${rate(ptMs).toFixed(1)} notes/s`, 'no inference: the broker round trip alone');
    row(
      'pipeline: note latency p50 / p95',
      `${pct(lat, 50).toFixed(0)} / ${pct(lat, 95).toFixed(0)} ms`,
      'timings.total_ms (receipt to publish), all notes queued at start',
    );
    row(
      'pipeline: latency split (sum over notes)',
      `text ${textMs.toFixed(0)} / route ${routeMs.toFixed(1)} / encoder ${encMs.toFixed(0)} / other ${(totalMs - textMs - routeMs - encMs).toFixed(0)} ms`,
      'other = waiting for a tagging slot + publish',
    );
    results.pipeline = {
      notes: n,
      router_notes_per_s: r2(rate(pipeMs)),
      bare_loop_notes_per_s: r2(rate(bareMs)),
      passthrough_notes_per_s: r2(rate(ptMs)),
      overhead_ratio: Number(ratio.toFixed(3)),
      target_ratio: 1.2,
      p50_ms: r2(pct(lat, 50)),
      p95_ms: r2(pct(lat, 95)),
      sum_text_ms: r2(textMs),
      sum_route_ms: r2(routeMs),
      sum_encoder_ms: r2(encMs),
      sum_total_ms: r2(totalMs),
    };
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
    const config = validateConfig({
      kafka: { brokers: ['127.0.0.1:9092'] },
      input: { topic: 'x', groupId: 'x' },
      output: { topic: 'y', dlqTopic: 'z' },
      routing: { policy },
      logging: { level: 'warn' },
    });
    const router = await loadRouter(config);
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
    row(
      `router: plan ${policy}`,
      `${Math.round(rate)} decisions/s`,
      `per note (mean ${(sentencesPerNote.reduce((a, s) => a + s.length, 0) / sentencesPerNote.length).toFixed(0)} sentences)`,
    );
  }
  const [routeMs, totalMs, notes] = routeShare;
  const share = totalMs > 0 ? routeMs / totalMs : 0;
  row(
    'router: share of note latency (encoder policy)',
    `${(share * 100).toFixed(3)} %`,
    `mean route_ms ${(routeMs / Math.max(1, notes)).toFixed(2)} ms per note, measured in the pipeline run`,
  );
  // The gain-based policies score every sentence (length estimate, costs): their plan against the same notes' mean latency.
  const meanNoteMs = totalMs / Math.max(1, notes);
  const planShare = meanNoteMs > 0 ? 1000 / Math.min(out['length-aware'], out.cascade) / meanNoteMs : 0;
  row(
    'router: plan time / note latency (length-aware, cascade)',
    `${(planShare * 100).toFixed(2)} %`,
    `slowest plan ${(1000 / Math.min(out['length-aware'], out.cascade)).toFixed(2)} ms vs mean note ${meanNoteMs.toFixed(0)} ms`,
  );
  results.router = { decisions_per_s: out, share_of_latency: Number(share.toFixed(5)), gain_policy_plan_share: Number(planShare.toFixed(5)) };
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
  row('llm classifier: in-process onnx', `${inRate.toFixed(1)} sent/s`, `${P.llmSentences} sentences`);
  const llm: Record<string, number> = { inprocess_sent_per_s: r2(inRate) };

  const server = await startLlmServer({ modelDir: LLM_DIR, port: 0, host: '127.0.0.1' });
  try {
    const sub = sentences.slice(0, P.httpSentences);
    for (const adapter of ['openai', 'vllm-pooling'] as const) {
      const config = validateConfig({
        kafka: { brokers: ['127.0.0.1:9092'] },
        input: { topic: 'x', groupId: 'x' },
        output: { topic: 'y', dlqTopic: 'z' },
        routing: { policy: 'llm' },
        llm: { adapter, baseUrl: server.url, modelDir: LLM_DIR },
        logging: { level: 'warn' },
      });
      const tagger = await createLlmTagger(config.llm, { modelDir: LLM_DIR, encoder: config.encoder });
      await tagger.tagSentences(sub.slice(0, 4));
      const before = server.stats.requests;
      const t1 = performance.now();
      await tagger.tagSentences(sub);
      const ms = performance.now() - t1;
      const reqs = server.stats.requests - before;
      await tagger.close();
      const rate = (sub.length / ms) * 1000;
      row(
        `llm classifier: HTTP ${adapter}`,
        `${rate.toFixed(1)} sent/s`,
        `${sub.length} sentences, ${reqs} requests, ${(inRate / rate).toFixed(2)}x slower than in-process`,
      );
      llm[`${adapter.replace('-', '_')}_sent_per_s`] = r2(rate);
      llm[`${adapter.replace('-', '_')}_requests`] = reqs;
    }
  } finally {
    await server.close();
  }
  results.llm = llm;

  const generation = await benchGeneration(sentences.slice(0, P.genSentences), { threads: THREADS, rounds: P.genRounds, httpSentences: P.httpSentences });
  for (const r of generation.rows) row(r.what, r.value, r.note);
  results.generation = generation.results;
}

async function main(): Promise<void> {
  const started = performance.now();
  const { source, texts: allTexts } = await loadBenchTexts();
  const texts = allTexts.slice(0, P.notes);
  const prepared = texts.map((t) => prepareText(t).sentences);
  const tp = performance.now();
  for (const t of texts) prepareText(t);
  const prepMs = performance.now() - tp;
  const all = prepared.flat();
  const sentences = all.slice(0, P.encSentences);
  // The same sentences as strings (the original note text), for transformers.js, which tokenises itself.
  const sentenceTexts = prepared.flatMap((ss, n) => ss.map((s) => texts[n].slice(s.start, s.end))).slice(0, P.encSentences);
  results.data = { source, notes: texts.length, sentences: all.length, prepare_text_ms_per_note: r2(prepMs / texts.length) };
  process.stderr.write(`bench: ${source}, ${texts.length} notes, ${all.length} sentences, ${THREADS} onnxruntime threads${quick ? ' (quick)' : ''}\n`);

  await benchEncoder(sentences, sentenceTexts);
  const share = await benchPipeline(texts);
  await benchRouter(prepared, share);
  await benchLlm(all);

  const lines = table.lines(`bioner-router bench (${source}, ${texts.length} notes, ${THREADS} threads${quick ? ', quick' : ''})`);
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
