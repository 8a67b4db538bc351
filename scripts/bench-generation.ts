/**
 * Generation speed of the in-process generative LLM route (issue 13 point 6):
 * `GenerativeLlmTagger` (queue, windows, tensors, constrained choice) against a
 * bare onnxruntime greedy loop over the same model, the same batches and the
 * same KV-cache tensors (recorded from the tagger, replayed on a second session
 * with the same options), in interleaved rounds. The tagger's generation runs
 * on the process's inference thread (a worker: GenerationSession in
 * src/taggers/onnx-backend.ts); the bare loop runs twice, on a worker of its
 * own (like for like: the ratio the target is about) and on the main thread
 * (as before the move). The sessions have the same options and never run at
 * the same time, so the worker-to-worker ratio is the tagger's own overhead
 * (queue, windows, probabilities, spans, the hop to the thread and back).
 * Also: the encoder on the same
 * sentences (the cost ratio the router trades on), and serve-llm + the openai
 * adapter over the same model.
 *
 *   npm run bench:generation [-- --quick]     (also part of `npm run bench`)
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { validateConfig } from '../src/config/load.js';
import { readMtsamplesCsv, readNotesFile } from '../src/eval/datasets.js';
import { packageRoot } from '../src/schemas.js';
import { EncoderTagger } from '../src/taggers/encoder.js';
import { type GenerativeConfig, GenerativeLlmTagger, type GenerationRow } from '../src/taggers/llm/generative.js';
import { createLlmTagger } from '../src/taggers/llm/index.js';
import { startLlmServer } from '../src/taggers/llm/reference-server.js';
import { onnxSessionOptions } from '../src/taggers/onnx-backend.js';
import { prepareText } from '../src/text/index.js';
import type { Sentence } from '../src/types.js';
import { median } from './bench-util.js';

export const GENERATIVE_DIR = resolve(packageRoot, 'models/bc5cdr-generative');
const ENCODER_DIR = resolve(packageRoot, 'models/bc5cdr-encoder');

export interface BenchRow {
  what: string;
  value: string;
  note: string;
}

const r2 = (x: number): number => Number(x.toFixed(2));

/**
 * The bare loop: per batch, step 0 feeds prompt + word 1 + [TAB], step k feeds
 * `[tag] [NL] word k [TAB]`, right-padded, the presents fed back as the pasts,
 * the tag the argmax over the label tokens (I-X only after B-X/I-X). Nothing
 * else: no queue, no windows, no probabilities, no spans.
 */
async function bareGreedy(session: ort.InferenceSession, c: GenerativeConfig, batch: readonly GenerationRow[]): Promise<number> {
  const labelIds = c.label_token_ids;
  const L = labelIds.length;
  const isI = c.labels.map((l) => l.startsWith('I-'));
  const typeOf = c.labels.map((l) => l.slice(2));
  const B = batch.length;
  const steps = Math.max(...batch.map((r) => r.pieces.length));
  const prev = new Int32Array(B).fill(-1);
  const nReal = new Int32Array(B);
  let mask = new BigInt64Array(0);
  let pastLen = 0;
  let past: Record<string, ort.Tensor> = {};
  for (let i = 0; i < c.n_layer; i++) {
    past[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), [B, c.n_head, 0, c.head_dim]);
    past[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), [B, c.n_head, 0, c.head_dim]);
  }
  let tags = 0;
  for (let k = 0; k < steps; k++) {
    const chunks = batch.map((r, b) => {
      if (k >= r.pieces.length) return [];
      if (k === 0) return [...c.prompt.prefix_ids, ...r.pieces.flat(), ...c.prompt.suffix_ids, ...r.pieces[0], c.tab_token_id];
      return [labelIds[prev[b]], c.newline_token_id, ...r.pieces[k], c.tab_token_id];
    });
    const T = Math.max(...chunks.map((x) => x.length));
    const S = pastLen + T;
    const ids = new BigInt64Array(B * T);
    const pos = new BigInt64Array(B * T);
    const next = new BigInt64Array(B * S);
    chunks.forEach((x, b) => {
      next.set(mask.subarray(b * pastLen, (b + 1) * pastLen), b * S);
      x.forEach((id, t) => {
        ids[b * T + t] = BigInt(id);
        pos[b * T + t] = BigInt(nReal[b] + t);
        next[b * S + pastLen + t] = 1n;
      });
    });
    mask = next;
    const out = await session.run({
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      attention_mask: new ort.Tensor('int64', mask, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, T]),
      ...past,
    });
    past = {};
    for (let i = 0; i < c.n_layer; i++) {
      past[`past_key_values.${i}.key`] = out[`present.${i}.key`];
      past[`past_key_values.${i}.value`] = out[`present.${i}.value`];
    }
    pastLen = S;
    const logits = out.logits.data as Float32Array;
    chunks.forEach((x, b) => {
      if (x.length === 0) return;
      nReal[b] += x.length;
      const at = (b * T + x.length - 1) * c.vocab_size;
      let best = -1;
      for (let j = 0; j < L; j++) {
        if (isI[j] && (prev[b] < 0 || c.labels[prev[b]] === 'O' || typeOf[prev[b]] !== typeOf[j])) continue;
        if (best < 0 || logits[at + labelIds[j]] > logits[at + labelIds[best]]) best = j;
      }
      prev[b] = best;
      tags++;
    });
  }
  return tags;
}

const BARE_WORKER = 'bionerBareGreedyWorker';

/** The bare loop on a worker thread of its own (as the tagger's generation runs), one batch per message. */
class BareGreedyWorker {
  private readonly worker: Worker;
  private waiting: ((tags: number) => void) | undefined;

  private constructor(worker: Worker) {
    this.worker = worker;
    this.worker.on('message', (tags: number) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.(tags);
    });
  }

  static async start(config: GenerativeConfig, threads: number): Promise<BareGreedyWorker> {
    const worker = new Worker(new URL(import.meta.url), { workerData: { [BARE_WORKER]: { config, threads } } });
    const bare = new BareGreedyWorker(worker);
    await new Promise<void>((ok, fail) => {
      worker.once('message', () => ok());
      worker.once('error', fail);
    });
    return bare;
  }

  /** One batch there; the tags generated back (timed by the caller, like the tagger, hop included). */
  run(batch: readonly GenerationRow[]): Promise<number> {
    return new Promise((ok) => {
      this.waiting = ok;
      this.worker.postMessage(batch.map((r) => r.pieces));
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

async function serveBareGreedy(port: NonNullable<typeof parentPort>, options: { config: GenerativeConfig; threads: number }): Promise<void> {
  const session = await ort.InferenceSession.create(resolve(GENERATIVE_DIR, 'model.onnx'), onnxSessionOptions(options.threads));
  let queue = Promise.resolve();
  port.on('message', (pieces: number[][][]) => {
    queue = queue.then(async () => {
      const tags = await bareGreedy(
        session,
        options.config,
        pieces.map((p) => ({ pieces: p })),
      );
      port.postMessage(tags);
    });
  });
  port.postMessage('ready');
}

const bareData = workerData as { [BARE_WORKER]?: { config: GenerativeConfig; threads: number } } | null;
if (!isMainThread && parentPort !== null && bareData?.[BARE_WORKER] !== undefined) await serveBareGreedy(parentPort, bareData[BARE_WORKER]);

export async function benchGeneration(
  sentences: readonly Sentence[],
  options: { threads: number; rounds: number; httpSentences: number },
): Promise<{ rows: BenchRow[]; results: Record<string, unknown> }> {
  const rows: BenchRow[] = [];
  const row = (what: string, value: string, note = ''): void => {
    rows.push({ what, value, note });
    process.stderr.write(`  ${what}: ${value} ${note}\n`);
  };
  const tagger = await GenerativeLlmTagger.load(GENERATIVE_DIR, { intraOpThreads: options.threads, batchSize: 32 });
  const bare = await ort.InferenceSession.create(resolve(GENERATIVE_DIR, 'model.onnx'), onnxSessionOptions(options.threads));
  const bareWorker = await BareGreedyWorker.start(tagger.decoder.config, options.threads);
  const encoder = await EncoderTagger.load(ENCODER_DIR, { intraOpThreads: options.threads });
  try {
    // Record the batches the tagger generates, to replay them bare.
    const decoder = tagger.decoder;
    const recorded: GenerationRow[][] = [];
    const generate = decoder.generate.bind(decoder);
    decoder.generate = async (batch, stop) => {
      recorded.push([...batch]);
      return generate(batch, stop);
    };
    const config = decoder.config;
    await tagger.tagSentences(sentences.slice(0, 8)); // warm-up: sessions, caches
    await bareGreedy(bare, config, recorded[0]);
    await bareWorker.run(recorded[0]);
    await encoder.tagSentences(sentences);

    const words = sentences.reduce((n, s) => n + s.tokens.length, 0);
    const taggerMs: number[] = [];
    const bareMs: number[] = [];
    const bareMainMs: number[] = [];
    const encoderMs: number[] = [];
    const ratios: number[] = [];
    const mainRatios: number[] = [];
    const costRatios: number[] = [];
    let fed = 0;
    let steps = 0;
    let runShare = 0;
    let batches: GenerationRow[][] = [];
    for (let r = 0; r < options.rounds; r++) {
      recorded.length = 0;
      const before = { ...decoder.stats };
      const t0 = performance.now();
      await tagger.tagSentences(sentences);
      const tMs = performance.now() - t0;
      batches = [...recorded];
      fed = decoder.stats.tokensFed - before.tokensFed;
      steps = decoder.stats.steps - before.steps;
      runShare = (decoder.stats.runMs - before.runMs) / tMs;
      const t1 = performance.now();
      for (const b of batches) await bareWorker.run(b);
      const bMs = performance.now() - t1;
      const t3 = performance.now();
      for (const b of batches) await bareGreedy(bare, config, b);
      const mMs = performance.now() - t3;
      const t2 = performance.now();
      await encoder.tagSentences(sentences);
      const eMs = performance.now() - t2;
      taggerMs.push(tMs);
      bareMs.push(bMs);
      bareMainMs.push(mMs);
      encoderMs.push(eMs);
      ratios.push(tMs / bMs);
      mainRatios.push(tMs / mMs);
      costRatios.push(tMs / eMs);
    }
    const tMs = median(taggerMs);
    const bMs = median(bareMs);
    const mMs = median(bareMainMs);
    const eMs = median(encoderMs);
    const ratio = median(ratios);
    const mainRatio = median(mainRatios);
    const costRatio = median(costRatios);
    row(
      'llm generative: GenerativeLlmTagger (generation on the inference thread)',
      `${((sentences.length / tMs) * 1000).toFixed(1)} sent/s`,
      `${sentences.length} sentences (${words} words), ${batches.length} batches, ${steps} KV-cache steps, ${((fed / tMs) * 1000).toFixed(0)} tokens fed/s`,
    );
    row(
      'llm generative: bare onnxruntime greedy loop, same batches (worker thread)',
      `${((sentences.length / bMs) * 1000).toFixed(1)} sent/s`,
      `${((fed / bMs) * 1000).toFixed(0)} tokens fed/s`,
    );
    row(
      'llm generative: bare onnxruntime greedy loop, same batches (main thread)',
      `${((sentences.length / mMs) * 1000).toFixed(1)} sent/s`,
      `${((fed / mMs) * 1000).toFixed(0)} tokens fed/s`,
    );
    row(
      'llm generative: tagger time / bare loop, both off the main thread',
      `${ratio.toFixed(3)}x`,
      `target <= 1.3x: ${ratio <= 1.3 ? 'met' : 'missed'}; median of ${options.rounds} interleaved rounds`,
    );
    row('llm generative: tagger time / bare loop on the main thread', `${mainRatio.toFixed(3)}x`, 'the comparison before the generation left the main thread');
    row(
      'llm generative: share of tagger time inside session.run',
      `${(runShare * 100).toFixed(1)} %`,
      'measured on the inference thread; the rest: tensors, tag choice, the hop to the thread, queue, windows, spans',
    );
    row('encoder on the same sentences', `${((sentences.length / eMs) * 1000).toFixed(1)} sent/s`, `${((eMs / sentences.length) * 1).toFixed(2)} ms/sentence`);
    row('llm generative cost / encoder cost per sentence', `${costRatio.toFixed(1)}x`, 'target >= 10x (the paper: 10-100x)');
    const results: Record<string, unknown> = {
      sentences: sentences.length,
      words,
      batches: batches.length,
      kv_steps: steps,
      tokens_fed: fed,
      tagger_sent_per_s: r2((sentences.length / tMs) * 1000),
      bare_sent_per_s: r2((sentences.length / bMs) * 1000),
      bare_main_thread_sent_per_s: r2((sentences.length / mMs) * 1000),
      tagger_tokens_per_s: Math.round((fed / tMs) * 1000),
      bare_tokens_per_s: Math.round((fed / bMs) * 1000),
      // Both generation loops on a worker thread; the main-thread figure is beside it.
      tagger_vs_bare: Number(ratio.toFixed(3)),
      tagger_vs_bare_main_thread: Number(mainRatio.toFixed(3)),
      session_run_share: Number(runShare.toFixed(3)),
      encoder_sent_per_s: r2((sentences.length / eMs) * 1000),
      llm_vs_encoder_cost: Number(costRatio.toFixed(2)),
    };

    // The same model and generation behind serve-llm, through the openai adapter.
    const server = await startLlmServer({ modelDir: GENERATIVE_DIR, port: 0, host: '127.0.0.1' });
    try {
      const sub = sentences.slice(0, options.httpSentences);
      const config = validateConfig({
        llm: { adapter: 'openai', baseUrl: server.url, modelDir: GENERATIVE_DIR, maxConcurrency: 8 },
        logging: { level: 'warn' },
      });
      const chat = await createLlmTagger(config.llm, { modelDir: GENERATIVE_DIR, encoder: config.encoder });
      await chat.tagSentences(sub.slice(0, 4));
      const t0 = performance.now();
      await chat.tagSentences(sub);
      const hMs = performance.now() - t0;
      const t1 = performance.now();
      await tagger.tagSentences(sub);
      const iMs = performance.now() - t1;
      await chat.close();
      row(
        'llm generative: serve-llm + openai adapter (regex structured outputs)',
        `${((sub.length / hMs) * 1000).toFixed(1)} sent/s`,
        `${sub.length} sentences, one request each, ${(hMs / iMs).toFixed(2)}x the in-process time`,
      );
      results.http_openai_sent_per_s = r2((sub.length / hMs) * 1000);
      results.http_vs_inprocess = r2(hMs / iMs);
    } finally {
      await server.close();
    }
    return { rows, results };
  } finally {
    await tagger.close();
    await bare.release();
    await bareWorker.close();
    await encoder.close();
  }
}

async function loadSentences(limit: number): Promise<Sentence[]> {
  const csv = resolve(packageRoot, '../shared/data/mtsamples/mtsamples.csv');
  const texts = existsSync(csv)
    ? await readMtsamplesCsv(csv)
    : (await readNotesFile(resolve(packageRoot, 'test/fixtures/mtsamples/notes.jsonl'))).map((n) => n.text);
  return texts
    .slice(0, 40)
    .flatMap((t) => prepareText(t).sentences)
    .slice(0, limit);
}

// A worker thread gets the parent's argv: only the main thread runs the bench.
if (isMainThread && import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.argv.includes('--quick');
  const threads = Number(process.env.BENCH_THREADS ?? 2);
  const sentences = await loadSentences(quick ? 64 : 256);
  const { rows, results } = await benchGeneration(sentences, { threads, rounds: quick ? 2 : 3, httpSentences: quick ? 16 : 48 });
  const w1 = Math.max(...rows.map((r) => r.what.length));
  const w2 = Math.max(...rows.map((r) => r.value.length));
  process.stdout.write(`bioner-router bench:generation (${sentences.length} mtsamples sentences, ${threads} threads${quick ? ', quick' : ''})\n`);
  for (const r of rows) process.stdout.write(`${r.what.padEnd(w1)}  ${r.value.padEnd(w2)}  ${r.note}\n`);
  process.stdout.write(`${JSON.stringify({ threads, quick, generation: results })}\n`);
}
