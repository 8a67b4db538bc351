/**
 * `npm run bench:scale` [-- --quick] [-- --only e2e,length,instances]
 *
 * How the pipeline scales, measured in one run and printed as one table and
 * one final JSON line (docs/benchmarks.md, "Scale"):
 *
 * 1. e2e: the router (composeRouter, encoder policy) through the embedded mock
 *    broker against raw onnxruntime `session.run` on the very windows of the
 *    same notes, same model and threads, in interleaved rounds; plus where the
 *    pipeline's wall time goes (model busy, model idle with and without queued
 *    windows, padding, batch fill).
 * 2. length: time, CPU and memory per note for notes of about 1k, 10k, 100k and
 *    1M characters (the last within input.maxNoteBytes), and the SVG curve.
 * 3. instances: one vs two router processes in one consumer group (3 input
 *    partitions): throughput, the rebalance pause when a member joins or
 *    leaves, and duplicates after SIGKILL of one member mid-stream.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import inspector from 'node:inspector/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { validateConfig } from '../src/config/load.js';
import { MockKafkaCluster, ensureMockKafkaBinary } from '../src/embedded/mock-cluster.js';
import { readTopics } from '../src/embedded/read-topic.js';
import { encodeNote } from '../src/ingest/decode.js';
import { createKafka, createProducer } from '../src/kafka/index.js';
import { composeRouter } from '../src/pipeline/compose.js';
import { decodeTaggedNote } from '../src/publish/tagged-note.js';
import { packageRoot } from '../src/schemas.js';
import { EncoderTagger } from '../src/taggers/encoder.js';
import { onnxSessionOptions } from '../src/taggers/onnx-backend.js';
import type { LogitsBackend } from '../src/taggers/token-classifier.js';
import { silentLogger } from '../src/telemetry/logger.js';
import { planWindows, prepareText, type TextWindow } from '../src/text/index.js';
import { BenchTable, feedsFor, loadBenchTexts, median, r2 } from './bench-util.js';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', default: 'e2e,length,instances' },
    notes: { type: 'string' },
    rounds: { type: 'string' },
    concurrency: { type: 'string' },
    svg: { type: 'string', default: 'docs/bench-length.svg' },
  },
});
const quick = args.quick === true;
const ONLY = new Set(String(args.only).split(','));
const PARTS = ['e2e', 'length', 'instances'];
if (ONLY.size === 0 || [...ONLY].some((p) => !PARTS.includes(p))) {
  process.stderr.write(`usage: npm run bench:scale -- [--quick] [--only ${PARTS.join(',')}] [--concurrency N] [--rounds N] [--svg PATH]\n`);
  process.exit(2);
}
const P = {
  notes: Number(args.notes ?? (quick ? 60 : 120)),
  rounds: Number(args.rounds ?? (quick ? 2 : 5)),
};
const THREADS = Number(process.env.BENCH_THREADS ?? 2);
const ENCODER_DIR = resolve(packageRoot, 'models/bc5cdr-encoder');

const results: Record<string, unknown> = { quick, threads: THREADS };
const table = new BenchTable();
const { row } = table;

/** What the encoder's backend did during one pipeline run. */
interface BackendTrace {
  batches: number;
  rows: number;
  cells: number;
  tokens: number;
  runMs: number;
  backendMs: number;
  /** Time between batches (ms). */
  idleMs: number;
  windows: number[][];
  /** The batches as run (ids per row), to replay them on a bare session. */
  batchRows: number[][][];
  /** Per batch: start ms, rows, cols, tokens, ms. */
  log: number[][];
}

/** Wraps the tagger's backend to record every batch, the model's own time and the gaps between batches. */
function traceBackend(tagger: EncoderTagger): { trace: () => BackendTrace; reset: (record: boolean) => void } {
  const backend = (tagger as unknown as { backend: LogitsBackend & { stats: { runMs: number } } }).backend;
  const origRun = backend.run.bind(backend);
  let t: BackendTrace;
  let record = false;
  let runMs0 = 0;
  // Time with no batch at the backend (the event loop has not yet sent the next one), counted when the next batch starts.
  let idleSince = 0;
  const reset = (rec: boolean): void => {
    record = rec;
    t = { batches: 0, rows: 0, cells: 0, tokens: 0, runMs: 0, backendMs: 0, idleMs: 0, windows: [], batchRows: [], log: [] };
    idleSince = performance.now();
    runMs0 = backend.stats.runMs;
  };
  reset(false);
  backend.run = async (rowsIn, signal) => {
    const start = performance.now();
    if (idleSince !== 0) t.idleMs += start - idleSince;
    idleSince = 0;
    t.batches++;
    t.rows += rowsIn.length;
    const cols = rowsIn.reduce((m, r) => Math.max(m, r.length), 0);
    const tokens = rowsIn.reduce((n, r) => n + r.length, 0);
    t.cells += rowsIn.length * cols;
    t.tokens += tokens;
    if (record) for (const r of rowsIn) t.windows.push([...r]);
    t.batchRows.push(rowsIn.map((r) => [...r]));
    try {
      return await origRun(rowsIn, signal);
    } finally {
      const end = performance.now();
      t.backendMs += end - start;
      t.log.push([Math.round(start), rowsIn.length, cols, tokens, Number((end - start).toFixed(1))]);
      idleSince = end;
    }
  };
  return {
    // Idle time after the last batch is not the model's: the last notes are being published.
    trace: () => {
      idleSince = 0;
      t.runMs = backend.stats.runMs - runMs0;
      return t;
    },
    reset,
  };
}

/** The windows of the notes' sentences in note order, as the tagger builds them (its private tokeniser cache and assembly). */
function windowsInNoteOrder(encoder: EncoderTagger, notes: string[]): number[][] {
  const priv = encoder as unknown as {
    piecesOf(word: string, afterSpace: boolean): number[];
    assemble(pieces: number[][], w: TextWindow): { ids: number[] };
    settings: { windowOverlapWords: number };
  };
  const maxPieces = encoder.maxSequenceLength - 2;
  return notes.flatMap((text) =>
    prepareText(text).sentences.flatMap((s) => {
      const pieces = s.tokens.map((w, i) => priv.piecesOf(w.text, i > 0 && s.tokens[i - 1].end < w.start).slice(0, maxPieces));
      return planWindows(
        pieces.map((p) => p.length),
        maxPieces,
        priv.settings.windowOverlapWords,
      ).map((w) => priv.assemble(pieces, w).ids);
    }),
  );
}

const chunk = <T>(xs: T[], size: number): T[][] => Array.from({ length: Math.ceil(xs.length / size) }, (_, i) => xs.slice(i * size, (i + 1) * size));

async function benchE2e(cluster: MockKafkaCluster, texts: string[]): Promise<void> {
  process.stderr.write('[e2e] router through the broker vs raw session.run on the same windows\n');
  const notes = Array.from({ length: P.notes }, (_, i) => texts[i % texts.length]);
  const sentences = notes.reduce((n, t) => n + prepareText(t).sentences.length, 0);
  const encoder = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: THREADS });
  const probe = traceBackend(encoder);
  const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers } }).kafka, silentLogger);
  const producer = createProducer(kafka);
  await producer.connect();
  let round = 0;
  const profile = process.env.BENCH_CPUPROF === undefined ? undefined : new inspector.Session();
  profile?.connect();
  const pipelineRound = async (rec: boolean, prof = false): Promise<{ ms: number; cpuMs: number; trace: BackendTrace; p50: number }> => {
    round++;
    const names = { input: `e2e-in-${round}`, output: `e2e-out-${round}`, dlq: `e2e-dlq-${round}` };
    for (const t of Object.values(names)) await cluster.createTopic(t, 1);
    const config = validateConfig({
      kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-scale' },
      input: { topic: names.input, groupId: `e2e-${round}`, maxWaitTimeMs: 100 },
      output: { topic: names.output, dlqTopic: names.dlq },
      encoder: { intraOpThreads: THREADS },
      routing: { policy: 'encoder' },
      ...(args.concurrency === undefined ? {} : { processing: { concurrency: Number(args.concurrency) } }),
      telemetry: { port: -1, tracesExporter: 'none' },
      logging: { level: 'silent' },
    });
    const messages = notes.map((text, i) => {
      const noteId = `e2e-${round}-${i}`;
      return { key: noteId, value: encodeNote({ noteId, text, source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json') };
    });
    await producer.send({ topic: names.input, messages });
    let firstAt = 0;
    let cpu0 = process.cpuUsage();
    let cpuMs = 0;
    let published = 0;
    const parts = await composeRouter(config, {
      logger: silentLogger,
      encoder,
      hooks: {
        noteReceived: () => {
          if (firstAt === 0) {
            firstAt = Date.now();
            cpu0 = process.cpuUsage();
            probe.reset(rec);
            if (prof) void profile?.post('Profiler.enable').then(() => profile.post('Profiler.start'));
          }
        },
        notePublished: () => {
          if (++published === notes.length) {
            const c = process.cpuUsage(cpu0);
            cpuMs = (c.user + c.system) / 1000;
            if (prof && profile !== undefined)
              void profile.post('Profiler.stop').then(({ profile: p }) => writeFileSync(String(process.env.BENCH_CPUPROF), JSON.stringify(p)));
          }
        },
      },
    });
    await parts.service.start();
    const records = await readTopics(kafka, [names.output], (rs) => rs.length >= notes.length, 600_000);
    const trace = probe.trace();
    await parts.close();
    if (records.length < notes.length) throw new Error(`only ${records.length} of ${notes.length} notes published`);
    const lastAt = Math.max(...records.map((r) => Number(r.timestamp)));
    const lat = records.map((r) => decodeTaggedNote(r.value as Buffer).timings.total_ms).sort((a, b) => a - b);
    return { ms: lastAt - firstAt, cpuMs, trace, p50: lat[Math.floor(lat.length / 2)] };
  };

  // Round 0 records the windows the raw contenders replay, and warms the broker, the group and the model.
  const first = await pipelineRound(true);
  const windows = windowsInNoteOrder(encoder, notes);
  if (windows.length !== first.trace.windows.length)
    throw new Error(`the pipeline ran ${first.trace.windows.length} windows, the notes have ${windows.length}`);
  const padId = (encoder as unknown as { bundle: { special: { pad: number } } }).bundle.special.pad;
  const session = await ort.InferenceSession.create(join(ENCODER_DIR, 'model.onnx'), onnxSessionOptions(THREADS));
  const tokenTypes = session.inputNames.includes('token_type_ids');
  const BATCH = 32;
  // Raw, sorted: every window of the run sorted by length, batches of 32 (the least padding any batcher can reach).
  const sorted = chunk(
    [...windows].sort((a, b) => a.length - b.length),
    BATCH,
  ).map((b) => feedsFor(b, padId, tokenTypes));
  const cellsOf = (bs: number[][][]): number => bs.reduce((n, b) => n + b.length * b.reduce((m, r) => Math.max(m, r.length), 0), 0);
  const sortedCells = cellsOf(
    chunk(
      [...windows].sort((a, b) => a.length - b.length),
      BATCH,
    ),
  );
  const orderedCells = cellsOf(chunk(windows, BATCH));
  const rawPass = async (feeds: Array<Record<string, ort.Tensor>>): Promise<{ ms: number; cpuMs: number }> => {
    const t = performance.now();
    const cpu0 = process.cpuUsage();
    for (const f of feeds) await session.run(f);
    const c = process.cpuUsage(cpu0);
    return { ms: performance.now() - t, cpuMs: (c.user + c.system) / 1000 };
  };
  await rawPass(sorted);

  // The batching before this bench (the shortest windows first, batchSize at a time): the backend without its cost.
  const backend = (encoder as unknown as { backend: { batchCost?: unknown; queuesAhead?: number } }).backend;
  const { batchCost, queuesAhead } = backend;
  const oldBatching = async <T>(fn: () => Promise<T>): Promise<T> => {
    backend.batchCost = undefined;
    backend.queuesAhead = 0;
    try {
      return await fn();
    } finally {
      backend.batchCost = batchCost;
      backend.queuesAhead = queuesAhead;
    }
  };
  type Run = { ms: number; cpuMs: number };
  type PipeRun = Run & { trace: BackendTrace; p50: number };
  const pipe: PipeRun[] = [];
  const old: PipeRun[] = [];
  const rawForPipe: Run[] = [];
  const rawForOld: Run[] = [];
  const replays: number[] = [];
  const mean = (x: Run, y: Run): Run => ({ ms: (x.ms + y.ms) / 2, cpuMs: (x.cpuMs + y.cpuMs) / 2 });
  for (let r = 0; r < P.rounds; r++) {
    // raw, router, raw, router with the old batching, raw: each router run is paired with the raw passes on either side of it.
    const a = await rawPass(sorted);
    pipe.push(await pipelineRound(false, r === 0));
    // The router's own batches replayed bare, beside the sorted ones: how much of the gap is batching, how much the rest.
    replays.push((await rawPass(pipe[r].trace.batchRows.map((b) => feedsFor(b, padId, tokenTypes)))).ms);
    const b = await rawPass(sorted);
    old.push(await oldBatching(() => pipelineRound(false)));
    const c = await rawPass(sorted);
    rawForPipe.push(mean(a, b));
    rawForOld.push(mean(b, c));
    process.stderr.write(
      `  round ${r + 1}: raw ${a.ms.toFixed(0)} / router ${pipe[r].ms.toFixed(0)} / raw ${b.ms.toFixed(0)} / router, old batching ${old[r].ms.toFixed(0)} / raw ${c.ms.toFixed(0)} ms\n`,
    );
  }
  profile?.disconnect();
  if (process.env.BENCH_TRACE !== undefined) writeFileSync(process.env.BENCH_TRACE, JSON.stringify(pipe.map((p) => p.trace.log)));
  await session.release();
  await producer.disconnect();
  await encoder.close();

  const rate = (ms: number): number => (sentences / ms) * 1000;
  // Throughput ratios: raw time over router time, per round, then the median.
  const ratio = (raw: Run[], runs: Run[], k: 'ms' | 'cpuMs'): number => median(raw.map((x, i) => x[k] / runs[i][k]));
  const ratioNew = ratio(rawForPipe, pipe, 'ms');
  const ratioOld = ratio(rawForOld, old, 'ms');
  const cpuNew = ratio(rawForPipe, pipe, 'cpuMs');
  const cpuOld = ratio(rawForOld, old, 'cpuMs');
  const pipeMs = pipe.map((p) => p.ms);
  const rawMs = [...rawForPipe, ...rawForOld].map((x) => x.ms);
  const pick = (runs: PipeRun[]): PipeRun => runs[runs.map((p) => p.ms).indexOf(median(runs.map((p) => p.ms)))] ?? runs[0];
  const mid = pick(pipe);
  const midOld = pick(old);
  const tr = mid.trace;
  const busy = tr.runMs / mid.ms;
  const padding = (t: BackendTrace): string => `${((t.cells / t.tokens - 1) * 100).toFixed(1)} %`;
  row(
    'e2e: router, encoder policy, through the broker',
    `${rate(median(pipeMs)).toFixed(0)} sent/s`,
    `${P.notes} notes (${((P.notes / median(pipeMs)) * 1000).toFixed(1)} notes/s), ${sentences} sentences, ${windows.length} windows; median of ${P.rounds} interleaved rounds`,
  );
  row(
    'e2e: raw session.run, the same windows sorted by length',
    `${rate(median(rawMs)).toFixed(0)} sent/s`,
    `batches of ${BATCH}, tensors prebuilt, padding ${((sortedCells / tr.tokens - 1) * 100).toFixed(1)} %`,
  );
  row('e2e: router / raw', `${ratioNew.toFixed(3)}x`, `throughput, paired per round; target >= 0.85x: ${ratioNew >= 0.85 ? 'met' : 'MISSED'}`);
  row('e2e: router / raw, CPU time', `${cpuNew.toFixed(3)}x`, 'raw CPU ms over router CPU ms (all threads of this process), paired per round');
  const batching = median(rawForPipe.map((x, i) => x.ms / replays[i]));
  const rest = median(replays.map((x, i) => x / pipe[i].ms));
  row(
    'e2e: the gap in two factors',
    `batching ${batching.toFixed(3)} x the rest ${rest.toFixed(3)}`,
    "raw sorted / the router's own batches replayed bare; that replay / the router (Kafka, text, decoding, the hop to the inference thread)",
  );
  row(
    'e2e: router with the old batching / raw',
    `${ratioOld.toFixed(3)}x`,
    `shortest windows first; CPU-time ratio ${cpuOld.toFixed(3)}x; padding ${padding(midOld.trace)}`,
  );
  row(
    'e2e: where the wall time goes (median round)',
    `onnxruntime busy ${tr.runMs.toFixed(0)} ms (${(busy * 100).toFixed(1)} %), no batch at the backend ${tr.idleMs.toFixed(0)} ms`,
    `of ${mid.ms.toFixed(0)} ms; ${tr.batches} batches, ${(tr.rows / tr.batches).toFixed(1)} windows a batch, padding ${((tr.cells / tr.tokens - 1) * 100).toFixed(1)} %`,
  );
  results.e2e = {
    notes: P.notes,
    sentences,
    windows: windows.length,
    rounds: P.rounds,
    concurrency: args.concurrency === undefined ? 8 : Number(args.concurrency),
    router_sent_per_s: r2(rate(median(pipeMs))),
    router_notes_per_s: r2((P.notes / median(pipeMs)) * 1000),
    raw_sent_per_s: r2(rate(median(rawMs))),
    ratio: Number(ratioNew.toFixed(3)),
    cpu_ratio: Number(cpuNew.toFixed(3)),
    batching_factor: Number(batching.toFixed(3)),
    rest_factor: Number(rest.toFixed(3)),
    old_batching_ratio: Number(ratioOld.toFixed(3)),
    old_batching_cpu_ratio: Number(cpuOld.toFixed(3)),
    old_batching_padding: Number((midOld.trace.cells / midOld.trace.tokens - 1).toFixed(4)),
    target_ratio: 0.85,
    p50_ms: r2(mid.p50),
    split_ms: {
      wall: r2(mid.ms),
      onnxruntime: r2(tr.runMs),
      no_batch_at_backend: r2(tr.idleMs),
    },
    batches: tr.batches,
    windows_per_batch: r2(tr.rows / tr.batches),
    padding: Number((tr.cells / tr.tokens - 1).toFixed(4)),
    padding_raw_sorted: Number((sortedCells / tr.tokens - 1).toFixed(4)),
    padding_note_order: Number((orderedCells / tr.tokens - 1).toFixed(4)),
  };
}

/** One long text of about `chars` characters from consecutive notes (cut at a space), its JSON record within `maxBytes`. */
function longNote(texts: string[], chars: number, offset: number, maxBytes: number, noteId: string): { text: string; value: Buffer } {
  const parts: string[] = [];
  let n = 0;
  for (let i = offset; n < chars; i++) {
    const t = texts[i % texts.length];
    parts.push(t);
    n += t.length + 2;
  }
  let text = parts.join('\n\n').slice(0, chars);
  const encode = (t: string): Buffer => encodeNote({ noteId, text: t, source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json');
  let value = encode(text);
  // JSON escapes and multi-byte characters make the record longer than the text: trim until it fits.
  while (value.length > maxBytes) {
    text = text.slice(0, Math.floor(text.length * (maxBytes / value.length)) - 64);
    value = encode(text);
  }
  const cut = text.lastIndexOf(' ');
  if (cut > text.length * 0.99) text = text.slice(0, cut);
  return { text, value: encode(text) };
}

export interface LengthPoint {
  chars: number;
  notes: number;
  sentences: number;
  ms_per_note: number;
  text_ms: number;
  encoder_ms: number;
  publish_ms: number;
  cpu_ms_per_note: number;
  rss_peak_mib: number;
  heap_peak_mib: number;
  output_bytes: number;
  us_per_char: number;
}

async function benchLength(cluster: MockKafkaCluster, texts: string[]): Promise<void> {
  process.stderr.write('[length] time and memory per note, 1k to 1M characters, one note at a time\n');
  const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers } }).kafka, silentLogger);
  const names = { input: 'len-in', output: 'len-out', dlq: 'len-dlq' };
  for (const t of Object.values(names)) await cluster.createTopic(t, 1);
  const config = validateConfig({
    kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-scale' },
    input: { topic: names.input, groupId: 'len', maxWaitTimeMs: 100 },
    output: { topic: names.output, dlqTopic: names.dlq },
    encoder: { intraOpThreads: THREADS },
    routing: { policy: 'encoder' },
    telemetry: { port: -1, tracesExporter: 'none' },
    logging: { level: 'silent' },
  });
  const maxBytes = config.input.maxNoteBytes;
  let cpuAt = process.cpuUsage();
  let publishedCpu = 0;
  let received = 0;
  let receivedAt = 0;
  let publishedAt = 0;
  const parts = await composeRouter(config, {
    logger: silentLogger,
    hooks: {
      noteReceived: () => {
        received++;
        receivedAt = performance.now();
        cpuAt = process.cpuUsage();
      },
      notePublished: () => {
        publishedAt = performance.now();
        const c = process.cpuUsage(cpuAt);
        publishedCpu = (c.user + c.system) / 1000;
      },
    },
  });
  await parts.service.start();
  const producer = createProducer(kafka);
  await producer.connect();
  const gc = (globalThis as { gc?: () => void }).gc;
  const sizes = [1_000, 10_000, 100_000, 1_000_000];
  const repeats = quick ? [6, 3, 1, 1] : [16, 6, 2, 1];
  const points: LengthPoint[] = [];
  let seq = 0;
  let offset = 0;
  const sendAndWait = async (value: Buffer, key: string): Promise<{ out: Buffer; ms: number; cpuMs: number; rss: number; heap: number }> => {
    gc?.();
    const base = process.memoryUsage();
    let rss = base.rss;
    let heap = base.heapUsed;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      rss = Math.max(rss, m.rss);
      heap = Math.max(heap, m.heapUsed);
    }, 10);
    const before = received;
    await producer.send({ topic: names.input, messages: [{ key, value }] });
    const records = await readTopics(kafka, [names.output, names.dlq], (rs) => rs.some((r) => r.key?.toString() === key), 300_000);
    clearInterval(sampler);
    const hit = records.find((r) => r.key?.toString() === key);
    if (hit === undefined || hit.topic !== names.output || hit.value === null || received === before)
      throw new Error(`note ${key} (${value.length} bytes) was not published${hit?.topic === names.dlq ? ' (dead-lettered)' : ''}`);
    return { out: hit.value, ms: publishedAt - receivedAt, cpuMs: publishedCpu, rss: (rss - base.rss) / 2 ** 20, heap: (heap - base.heapUsed) / 2 ** 20 };
  };
  // A warm-up note: the group join and the model's first shapes stay out of the figures.
  await sendAndWait(longNote(texts, 2000, 0, maxBytes, 'len-warm').value, 'len-warm');
  for (const [k, size] of sizes.entries()) {
    const acc = { ms: 0, text: 0, enc: 0, cpu: 0, rss: 0, heap: 0, out: 0, chars: 0, sentences: 0 };
    for (let r = 0; r < repeats[k]; r++) {
      const key = `len-${size}-${seq++}`;
      const note = longNote(texts, size, offset, maxBytes, key);
      offset += Math.max(1, Math.round(size / 4000));
      const res = await sendAndWait(note.value, key);
      const tagged = decodeTaggedNote(res.out);
      acc.ms += res.ms;
      acc.text += tagged.timings.text_ms;
      acc.enc += tagged.timings.encoder_ms;
      acc.cpu += res.cpuMs;
      acc.rss = Math.max(acc.rss, res.rss);
      acc.heap = Math.max(acc.heap, res.heap);
      acc.out += res.out.length;
      acc.chars += note.text.length;
      acc.sentences += tagged.routing.sentences;
    }
    const m = repeats[k];
    const point: LengthPoint = {
      chars: Math.round(acc.chars / m),
      notes: m,
      sentences: Math.round(acc.sentences / m),
      ms_per_note: r2(acc.ms / m),
      text_ms: r2(acc.text / m),
      encoder_ms: r2(acc.enc / m),
      publish_ms: r2((acc.ms - acc.text - acc.enc) / m),
      cpu_ms_per_note: r2(acc.cpu / m),
      rss_peak_mib: r2(acc.rss),
      heap_peak_mib: r2(acc.heap),
      output_bytes: Math.round(acc.out / m),
      us_per_char: r2((acc.ms / acc.chars) * 1000),
    };
    points.push(point);
    process.stderr.write(`  ${point.chars} chars: ${point.ms_per_note} ms/note, ${point.us_per_char} us/char, +${point.rss_peak_mib} MiB RSS\n`);
  }
  await producer.disconnect();
  await parts.close();
  const base = points[0];
  // Growth of the cost per character from one size to the next: 1.00 is linear (small notes pay a fixed cost per note).
  const steps = points.map((p, i) => (i === 0 ? 1 : p.us_per_char / points[i - 1].us_per_char));
  // The same in CPU time (all threads): steadier than wall time when other jobs share the cores.
  const cpuPerChar = (p: LengthPoint): number => p.cpu_ms_per_note / p.chars;
  const cpuSteps = points.map((p, i) => (i === 0 ? 1 : cpuPerChar(p) / cpuPerChar(points[i - 1])));
  for (const [i, p] of points.entries()) {
    row(
      `length: ${p.chars.toLocaleString('en-US')} chars (${p.sentences} sentences)`,
      `${p.ms_per_note.toFixed(1)} ms/note, ${p.us_per_char.toFixed(2)} us/char`,
      `text ${p.text_ms.toFixed(1)} / encoder ${p.encoder_ms.toFixed(1)} / rest ${p.publish_ms.toFixed(1)} ms; CPU ${p.cpu_ms_per_note.toFixed(0)} ms; peak +${p.rss_peak_mib.toFixed(1)} MiB RSS, +${p.heap_peak_mib.toFixed(1)} MiB heap${i === 0 ? '' : `; cost per char x${steps[i].toFixed(2)} the size before (CPU x${cpuSteps[i].toFixed(2)})`}`,
    );
  }
  const last = points[points.length - 1];
  const growth = steps[steps.length - 1];
  row(
    'length: cost per char, largest vs the size before',
    `${growth.toFixed(2)}x`,
    `1.00x is linear; the largest within input.maxNoteBytes (${maxBytes} bytes)`,
  );
  results.length = {
    points,
    growth_per_char_steps: steps.map(r2),
    cpu_growth_per_char_steps: cpuSteps.map(r2),
    growth_per_char_vs_1k: r2(last.us_per_char / base.us_per_char),
    max_note_bytes: maxBytes,
  };
  const svgPath = String(args.svg);
  if (svgPath !== '') {
    writeFileSync(resolve(svgPath), lengthSvg(points));
    row('length: curve', svgPath, 'time and peak memory per note against length, log-log, with the linear slope');
  }
}

const FONT = '-apple-system, BlinkMacSystemFont, Segoe UI, Helvetica, Arial, sans-serif';
const num = (v: number): string => String(Math.round(v * 100) / 100);

/** Two log-log panels (time per note, peak memory per note against length), each with a slope-1 line through the largest note; the frontier plot's style. */
export function lengthSvg(points: LengthPoint[]): string {
  const W = 760;
  const H = 360;
  const panelW = 300;
  const panelH = 220;
  const top = 78;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12" fill="#222">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="16" y="26" font-size="16" font-weight="600">Cost per note against note length (npm run bench:scale)</text>`,
    `<text x="16" y="44" fill="#555">encoder policy through the mock broker, one note at a time; dashed: linear growth through the largest note (slope 1)</text>`,
  ];
  const panel = (left: number, title: string, ys: number[], unit: string, colour: string): void => {
    const xs = points.map((p) => p.chars);
    const lx = (x: number): number => Math.log10(x);
    const linear = xs.map((x) => ys[ys.length - 1] * (x / xs[xs.length - 1]));
    // The range holds the slope-1 line too, so it is never clipped where it falls below the smallest notes' cost.
    const floorY = Math.max(1e-3, Math.min(...[...ys, ...linear].filter((y) => y > 0)));
    const [x0, x1] = [Math.floor(lx(Math.min(...xs))), Math.ceil(lx(Math.max(...xs)))];
    const [y0, y1] = [Math.floor(Math.log10(floorY)), Math.ceil(Math.log10(Math.max(...ys, floorY * 10)))];
    const sx = (x: number): number => left + ((lx(x) - x0) / (x1 - x0)) * panelW;
    const sy = (y: number): number => top + panelH - ((Math.log10(Math.max(y, floorY)) - y0) / (y1 - y0)) * panelH;
    out.push(`<text x="${left}" y="${top - 12}" font-weight="600">${title}</text>`);
    out.push('<g class="axes" stroke="#e3e3e3" stroke-width="1">');
    for (let e = x0; e <= x1; e++) out.push(`<line x1="${num(sx(10 ** e))}" y1="${top}" x2="${num(sx(10 ** e))}" y2="${top + panelH}"/>`);
    for (let e = y0; e <= y1; e++) out.push(`<line x1="${left}" y1="${num(sy(10 ** e))}" x2="${left + panelW}" y2="${num(sy(10 ** e))}"/>`);
    out.push('</g>');
    out.push(`<path d="M${left} ${top} L${left} ${top + panelH} L${left + panelW} ${top + panelH}" fill="none" stroke="#444"/>`);
    out.push('<g class="tick-labels" fill="#444" font-size="11">');
    const fmt = (v: number): string => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : String(v));
    for (let e = x0; e <= x1; e++) out.push(`<text x="${num(sx(10 ** e))}" y="${top + panelH + 16}" text-anchor="middle">${fmt(10 ** e)}</text>`);
    for (let e = y0; e <= y1; e++) out.push(`<text x="${left - 6}" y="${num(sy(10 ** e) + 4)}" text-anchor="end">${fmt(10 ** e)}</text>`);
    out.push('</g>');
    out.push(`<text x="${left + panelW / 2}" y="${top + panelH + 34}" text-anchor="middle" fill="#444">characters per note</text>`);
    out.push(
      `<text x="${left - 44}" y="${top + panelH / 2}" text-anchor="middle" fill="#444" transform="rotate(-90 ${left - 44} ${top + panelH / 2})">${unit}</text>`,
    );
    out.push(
      `<polyline points="${xs.map((x, i) => `${num(sx(x))},${num(sy(linear[i]))}`).join(' ')}" fill="none" stroke="#222" stroke-width="1.5" stroke-dasharray="5 4"/>`,
    );
    out.push(
      `<polyline points="${xs.map((x, i) => `${num(sx(x))},${num(sy(ys[i]))}`).join(' ')}" fill="none" stroke="${colour}" stroke-width="2" stroke-opacity="0.8"/>`,
    );
    for (const [i, x] of xs.entries()) {
      out.push(
        `<circle cx="${num(sx(x))}" cy="${num(sy(ys[i]))}" r="4" fill="${colour}" stroke="#fff" stroke-width="1"><title>${fmt(x)} chars: ${num(ys[i])} ${unit}</title></circle>`,
      );
      out.push(
        `<text x="${num(sx(x) + 6)}" y="${num(sy(ys[i]) - 8)}" font-size="11" fill="${colour}" paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round">${num(ys[i])}</text>`,
      );
    }
  };
  panel(
    80,
    'time per note',
    points.map((p) => p.ms_per_note),
    'ms',
    '#1f77b4',
  );
  panel(
    440,
    'peak extra memory per note (RSS)',
    points.map((p) => Math.max(p.rss_peak_mib, 0.01)),
    'MiB',
    '#d62728',
  );
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** One `bioner-router run` process (the CLI through tsx), its log lines watched for group events, its CPU and RSS read from /proc. */
class RouterProcess {
  readonly child: ChildProcess;
  /** When this member (re)joined its group, and how many partitions it got. */
  readonly joins: Array<{ at: number; partitions: number }> = [];
  private lines: Array<(line: string) => void> = [];
  private readonly messages: string[] = [];
  readonly exited: Promise<void>;

  constructor(configPath: string) {
    this.child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', '--import', 'tsx', 'src/cli/main.ts', 'run', '--config', configPath], {
      cwd: packageRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none' },
    });
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
      // The router's logs carry no note text (docs/operations.md); only the message is read here.
      this.messages.push(/"msg":"([^"]*)"/.exec(line)?.[1] ?? '(not a log line)');
      if (this.messages.length > 20) this.messages.shift();
      if (line.includes('"joined consumer group"')) this.joins.push({ at: Date.now(), partitions: Number(/"partitions":(\d+)/.exec(line)?.[1] ?? 0) });
      for (const f of this.lines) f(line);
    });
  }

  waitFor(message: string, timeoutMs = 120_000): Promise<number> {
    return new Promise((resolve, reject) => {
      // What the process said last, by message only (the router's logs carry no note text; this keeps even the fields out).
      const said = (): string => this.messages.slice(-5).join(' | ');
      const timer = setTimeout(() => reject(new Error(`router process: no "${message}" within ${timeoutMs} ms (last: ${said()})`)), timeoutMs);
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`router process exited (${this.child.exitCode ?? this.child.signalCode}) before "${message}" (last: ${said()})`));
      });
      this.lines.push((line) => {
        if (line.includes(`"${message}"`)) {
          clearTimeout(timer);
          resolve(Date.now());
        }
      });
    });
  }

  /** CPU ms (user + system, all threads) and RSS MiB, from /proc. */
  usage(): { cpuMs: number; rssMib: number } {
    try {
      const stat = readFileSync(`/proc/${this.child.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ticks = Number(fields[11]) + Number(fields[12]);
      const rssPages = Number(fields[21]);
      return { cpuMs: (ticks * 1000) / 100, rssMib: (rssPages * 4096) / 2 ** 20 };
    } catch {
      return { cpuMs: Number.NaN, rssMib: Number.NaN };
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}

async function benchInstances(cluster: MockKafkaCluster, texts: string[]): Promise<void> {
  process.stderr.write('[instances] one vs two router processes in one consumer group\n');
  const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers } }).kafka, silentLogger);
  const producer = createProducer(kafka);
  await producer.connect();
  const dir = await mkdtemp(join(tmpdir(), 'bioner-scale-'));
  const PARTITIONS = 4;
  let round = 0;
  const setUp = async (): Promise<{ names: { input: string; output: string; dlq: string }; configPath: string }> => {
    round++;
    const names = { input: `inst-in-${round}`, output: `inst-out-${round}`, dlq: `inst-dlq-${round}` };
    await cluster.createTopic(names.input, PARTITIONS);
    await cluster.createTopic(names.output, PARTITIONS);
    await cluster.createTopic(names.dlq, 1);
    const group = `inst-${round}`;
    const configPath = join(dir, `router-${round}.json`);
    await writeFile(
      configPath,
      JSON.stringify({
        kafka: { brokers: cluster.bootstrapServers, clientId: `bioner-scale-${round}` },
        // A 6 s session (Kafka's default group.min.session.timeout.ms): a killed member is noticed within it.
        input: { topic: names.input, groupId: group, maxWaitTimeMs: 100, sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000 },
        output: { topic: names.output, dlqTopic: names.dlq },
        encoder: { intraOpThreads: THREADS },
        routing: { policy: 'encoder' },
        telemetry: { port: -1, tracesExporter: 'none' },
        logging: { level: 'info' },
      }),
    );
    return { names, configPath };
  };
  // The mock broker has no DescribeGroups: the group is settled once the members' latest assignments cover every partition.
  const waitStable = async (procs: RouterProcess[]): Promise<void> => {
    const until = Date.now() + 120_000;
    for (;;) {
      const last = procs.map((p) => p.joins[p.joins.length - 1]);
      if (last.every((j) => j !== undefined && j.partitions > 0) && last.reduce((n, j) => n + (j?.partitions ?? 0), 0) === PARTITIONS) return;
      if (Date.now() > until) throw new Error(`the group never settled with ${procs.length} members`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const message = (i: number, tag: string): { key: string; value: Buffer } => {
    const noteId = `${tag}-${i}`;
    return {
      key: noteId,
      value: encodeNote({ noteId, text: texts[i % texts.length], source: 'mtsamples', latencyBudgetMs: null, patientId: null, metadata: null }, 'json'),
    };
  };
  const N = quick ? 120 : 240;

  // Throughput: all notes queued, then one or two members; from the first published record to the last.
  const throughput = async (members: number): Promise<{ notesPerS: number; cpuMsPerNote: number; rssMib: number[] }> => {
    const { names, configPath } = await setUp();
    const procs = Array.from({ length: members }, () => new RouterProcess(configPath));
    try {
      await Promise.all(procs.map((p) => p.waitFor('router started')));
      // A warm-up note per partition: the models are warm and every member has consumed once before the clock starts.
      await producer.send({ topic: names.input, messages: Array.from({ length: PARTITIONS }, (_, p) => ({ ...message(p, `warm-${round}`), partition: p })) });
      await readTopics(kafka, [names.output], (rs) => rs.length >= PARTITIONS, 120_000);
      await waitStable(procs);
      const cpu0 = procs.map((p) => p.usage().cpuMs);
      await producer.send({ topic: names.input, messages: Array.from({ length: N }, (_, i) => message(i, `n${round}`)) });
      const records = (await readTopics(kafka, [names.output], (rs) => rs.length >= N + PARTITIONS, 600_000)).filter(
        (r) => !r.key?.toString().startsWith('warm-'),
      );
      const ts = records.map((r) => Number(r.timestamp)).sort((a, b) => a - b);
      const usage = procs.map((p) => p.usage());
      const cpu = usage.reduce((n, u, i) => n + u.cpuMs - cpu0[i], 0);
      return {
        notesPerS: ((records.length - 1) / Math.max(1, ts[ts.length - 1] - ts[0])) * 1000,
        cpuMsPerNote: cpu / records.length,
        rssMib: usage.map((u) => u.rssMib),
      };
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
  };
  const one = await throughput(1);
  const two = await throughput(2);
  row(
    'instances: 1 process',
    `${one.notesPerS.toFixed(1)} notes/s`,
    `${N} notes, ${PARTITIONS} partitions; CPU ${one.cpuMsPerNote.toFixed(1)} ms/note; RSS ${one.rssMib.map((m) => m.toFixed(0)).join('/')} MiB`,
  );
  row(
    'instances: 2 processes, one group',
    `${two.notesPerS.toFixed(1)} notes/s`,
    `x${(two.notesPerS / one.notesPerS).toFixed(2)} of one process, on ${cpus().length} cores; CPU ${two.cpuMsPerNote.toFixed(1)} ms/note; RSS ${two.rssMib.map((m) => m.toFixed(0)).join('/')} MiB`,
  );

  // Rebalance pauses: a steady stream at half of one process's rate; a second member joins, later leaves (SIGTERM, a drained stop).
  const { names, configPath } = await setUp();
  const a = new RouterProcess(configPath);
  let b: RouterProcess | undefined;
  const rate = Math.max(2, one.notesPerS / 2);
  const seconds = quick ? 24 : 36;
  const events: Record<string, number> = {};
  try {
    await a.waitFor('router started');
    await producer.send({ topic: names.input, messages: Array.from({ length: PARTITIONS }, (_, p) => ({ ...message(p, `warm-${round}`), partition: p })) });
    await readTopics(kafka, [names.output], (rs) => rs.length >= PARTITIONS, 120_000);
    await waitStable([a]);
    const t0 = performance.now();
    const count = Math.round(rate * seconds);
    const sends: Array<Promise<unknown>> = [];
    const sentAt = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sentAt.set(`r${round}-${i}`, Date.now());
      sends.push(producer.send({ topic: names.input, messages: [message(i, `r${round}`)] }));
      if (i === Math.round(count / 3)) {
        events.join_started = Date.now();
        b = new RouterProcess(configPath);
      }
      if (i === Math.round((2 * count) / 3) && b !== undefined) {
        events.leave = Date.now();
        void b.stop('SIGTERM');
      }
    }
    await Promise.all(sends);
    const records = (await readTopics(kafka, [names.output], (rs) => rs.length >= count + PARTITIONS, 600_000)).filter((r) =>
      r.key?.toString().startsWith(`r${round}-`),
    );
    events.join = b?.joins[0]?.at ?? events.join_started;
    const ts = records.map((r) => Number(r.timestamp)).sort((x, y) => x - y);
    // The pause: the longest stretch with no record published, from the event to the next event (at most 15 s), against the steady gap.
    const pause = (at: number, until: number): number => {
      let most = 0;
      for (let i = 1; i < ts.length; i++) if (ts[i] >= at && ts[i - 1] <= until) most = Math.max(most, Math.min(ts[i], until) - Math.max(ts[i - 1], at));
      return most;
    };
    // Latency from the producer's send to the published record, so time spent waiting out a rebalance counts.
    const e2e = (from: number, to: number): number => {
      const ls = records
        .filter((r) => {
          const t = sentAt.get(r.key?.toString() ?? '') ?? 0;
          return t >= from && t < to;
        })
        .map((r) => Number(r.timestamp) - (sentAt.get(r.key?.toString() ?? '') ?? 0))
        .sort((x, y) => x - y);
      return ls.length === 0 ? Number.NaN : ls[Math.min(ls.length - 1, Math.floor(ls.length * 0.99))];
    };
    const steadyGap = 1000 / rate;
    const joinPause = pause(events.join, Math.min(events.leave, events.join + 15_000));
    const leavePause = pause(events.leave, events.leave + 15_000);
    const p99 = { before: e2e(0, events.join_started), join: e2e(events.join - 2000, events.leave), leave: e2e(events.leave - 1000, Number.POSITIVE_INFINITY) };
    row(
      'instances: rebalance, a member joins',
      `${joinPause.toFixed(0)} ms`,
      `longest stretch with no output after the join, stream at ${rate.toFixed(1)} notes/s (steady gap ${steadyGap.toFixed(0)} ms); p99 send-to-publish ${p99.before.toFixed(0)} ms before, ${p99.join.toFixed(0)} ms around the join`,
    );
    row(
      'instances: rebalance, a member leaves (SIGTERM)',
      `${leavePause.toFixed(0)} ms`,
      `the same after the drained stop; p99 send-to-publish ${p99.leave.toFixed(0)} ms around the leave`,
    );
    results.instances = {
      partitions: PARTITIONS,
      notes: N,
      one: { notes_per_s: r2(one.notesPerS), cpu_ms_per_note: r2(one.cpuMsPerNote), rss_mib: one.rssMib.map(r2) },
      two: { notes_per_s: r2(two.notesPerS), cpu_ms_per_note: r2(two.cpuMsPerNote), rss_mib: two.rssMib.map(r2) },
      scaling: r2(two.notesPerS / one.notesPerS),
      rebalance: {
        rate: r2(rate),
        join_pause_ms: Math.round(joinPause),
        leave_pause_ms: Math.round(leavePause),
        steady_gap_ms: Math.round(steadyGap),
        p99_send_to_publish_ms: { before: Math.round(p99.before), join: Math.round(p99.join), leave: Math.round(p99.leave) },
      },
    };
  } finally {
    await b?.stop();
    await a.stop();
  }

  // Duplicates after a SIGKILL: two members, all notes queued, one killed once a third are published.
  {
    const { names, configPath } = await setUp();
    const procs = [new RouterProcess(configPath), new RouterProcess(configPath)];
    try {
      await Promise.all(procs.map((p) => p.waitFor('router started')));
      await producer.send({ topic: names.input, messages: Array.from({ length: PARTITIONS }, (_, p) => ({ ...message(p, `warm-${round}`), partition: p })) });
      await readTopics(kafka, [names.output], (rs) => rs.length >= PARTITIONS, 120_000);
      await waitStable(procs);
      const K = 3 * N;
      await producer.send({ topic: names.input, messages: Array.from({ length: K }, (_, i) => message(i, `k${round}`)) });
      // A third of the way through, by the two-member rate measured above: mid-batch, with published but uncommitted notes.
      await new Promise((r) => setTimeout(r, (K / two.notesPerS / 3) * 1000));
      const killedAt = Date.now();
      await procs[1].stop('SIGKILL');
      const keys = (rs: Array<{ key: Buffer | null }>): string[] => rs.map((r) => r.key?.toString() ?? '').filter((k) => k.startsWith(`k${round}-`));
      const records = await readTopics(kafka, [names.output], (rs) => new Set(keys(rs)).size >= K, 600_000);
      const published = keys(records);
      const unique = new Set(published).size;
      const after = records
        .filter((r) => Number(r.timestamp) > killedAt)
        .map((r) => Number(r.timestamp))
        .sort((x, y) => x - y);
      const dupes = published.length - unique;
      const before = published.length - after.length;
      // The survivor's longest silence after the kill: its own partitions keep flowing, the killed member's wait for the session to expire.
      let gap = 0;
      for (let i = 1; i < after.length; i++) gap = Math.max(gap, after[i] - after[i - 1]);
      row(
        'instances: SIGKILL one of two mid-stream',
        `${dupes} duplicates`,
        `${published.length} records for ${unique} of ${K} notes (lost: ${K - unique}); ${before} published before the kill; longest gap after it ${(gap / 1000).toFixed(1)} s (session 6 s)`,
      );
      (results.instances as Record<string, unknown>).sigkill = {
        notes: K,
        records: published.length,
        unique,
        duplicates: dupes,
        lost: K - unique,
        published_before_kill: before,
        longest_gap_after_kill_ms: gap,
      };
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
  }
  await producer.disconnect();
  await rm(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const started = performance.now();
  const { source, texts } = await loadBenchTexts();
  process.stderr.write(`bench:scale: ${source}, ${THREADS} onnxruntime threads${quick ? ' (quick)' : ''}\n`);
  await ensureMockKafkaBinary();
  const cluster = await MockKafkaCluster.start({ brokers: 1 });
  try {
    if (ONLY.has('e2e')) await benchE2e(cluster, texts);
    if (ONLY.has('length')) await benchLength(cluster, texts);
    if (ONLY.has('instances')) await benchInstances(cluster, texts);
  } finally {
    await cluster.stop();
  }
  const lines = table.lines(`bioner-router bench:scale (${source}, ${THREADS} threads${quick ? ', quick' : ''})`);
  results.wall_s = r2((performance.now() - started) / 1000);
  lines.push(`bench:scale wall time ${results.wall_s} s`);
  process.stdout.write(`${lines.join('\n')}\n${JSON.stringify(results)}\n`);
}

// Run as a script only (the SVG writer is also imported to redraw a curve from a saved JSON line).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href)
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench:scale failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
