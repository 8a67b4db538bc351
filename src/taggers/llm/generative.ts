import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { z } from 'zod';
import { ErrorCodes, ModelLoadError, TaggerError } from '../../errors.js';
import { planWindows } from '../../text/windows.js';
import type { Sentence, TokenSpan } from '../../types.js';
import { entityTypes, spansFromLabelIndices, splitTag } from '../bio.js';
import { readJson, TokenizerConfigSchema, TokenizerJsonSchema } from '../model-bundle.js';
import { GenerationSession } from '../onnx-backend.js';
import { abortError, BatchQueue } from '../batch-queue.js';
import type { ModelInfo, SentenceTagging, TagOptions } from '../types.js';
import { type GenerationModel, type GenerationOutput, type GenerationRow, packBatch } from './generation-loop.js';
import type { LlmHttpClient } from './http.js';
import type { LlmTagger } from './index.js';

/**
 * The in-process generative LLM route: a decoder-only causal LM
 * (training/train_generative.py) that writes the paper's answer, one
 * `word [TAB] tag [NL]` line per input word, each tag conditioned on the tags
 * already written. It runs one forward step per generated tag with a KV cache
 * (past/present key-values as ONNX inputs/outputs, the Hugging Face / Optimum
 * names), batched across sentences and notes. Decoding is constrained as
 * vLLM's structured outputs constrain a served model: the copy of each input
 * word is forced, and each tag is chosen among the label set only (`I-X` only
 * after `B-X`/`I-X`).
 */

export const GENERATIVE_MODEL_TYPE = 'bioner-generative-decoder';

const must = (what: string) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? 'is missing' : `must be ${what}`) });
const id = z.int(must('a token id')).nonnegative(must('a token id'));
const count = z.int(must('a positive integer')).positive(must('a positive integer'));

/** config.json of a generative bundle, as far as decoding reads it. */
export const GenerativeConfigSchema = z.object(
  {
    model_type: z.literal(GENERATIVE_MODEL_TYPE, must(`"${GENERATIVE_MODEL_TYPE}"`)),
    n_layer: count,
    n_head: count,
    head_dim: count,
    vocab_size: count,
    max_position_embeddings: count,
    bos_token_id: id,
    eos_token_id: id,
    sep_token_id: id,
    tab_token_id: id,
    newline_token_id: id,
    unk_token_id: id,
    labels: z.array(z.string(must('a label string')), must('a list of labels')).min(1, must('a non-empty list of labels')),
    label_token_ids: z.array(id, must('a list of token ids')),
    prompt: z.object(
      {
        prefix_ids: z.array(id, must('a list of token ids')),
        suffix_ids: z.array(id, must('a list of token ids')),
        bio_constraint: z.boolean(must('true or false')).optional(),
      },
      must('an object'),
    ),
    bioner: z.object({ name: z.string(must('a string')).optional(), version: z.string(must('a string')).optional() }, must('an object')).optional(),
  },
  must('a JSON object'),
);
export type GenerativeConfig = z.infer<typeof GenerativeConfigSchema>;

/** True when `dir/config.json` declares a generative decoder bundle (not a token-classification export). */
export async function isGenerativeBundle(dir: string): Promise<boolean> {
  try {
    const raw: unknown = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    return typeof raw === 'object' && raw !== null && (raw as Record<string, unknown>).model_type === GENERATIVE_MODEL_TYPE;
  } catch {
    return false;
  }
}

/** config.json of a generative bundle, checked (the label ids must pair with the labels). */
async function readGenerativeConfig(dir: string): Promise<GenerativeConfig> {
  const config = await readJson(dir, 'config.json', GenerativeConfigSchema, true);
  if (config.label_token_ids.length !== config.labels.length)
    throw new ModelLoadError(`config.json in ${dir}: ${config.labels.length} labels but ${config.label_token_ids.length} label_token_ids`);
  return config;
}

function generativeModelInfo(config: GenerativeConfig): ModelInfo {
  return { id: config.bioner?.name ?? 'generative-decoder', version: config.bioner?.version ?? '0', entityTypes: entityTypes(config.labels) };
}

/** Labels and model name of a generative bundle, for adapters that need nothing else (the `openai` adapter's prompt). */
export async function readGenerativeLabels(dir: string): Promise<{ labels: string[]; model: ModelInfo }> {
  const config = await readGenerativeConfig(resolve(dir));
  return { labels: config.labels, model: generativeModelInfo(config) };
}

/** Feeds and outputs of the KV-cache graph. */
function graphNames(layers: number): { inputs: string[]; outputs: string[] } {
  const inputs = ['input_ids', 'attention_mask', 'position_ids'];
  const outputs = ['logits'];
  for (let i = 0; i < layers; i++) {
    inputs.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
    outputs.push(`present.${i}.key`, `present.${i}.value`);
  }
  return { inputs, outputs };
}

export type { GenerationRow };

/** One decoded row: the chosen label index per word, and per word the softmax over the label tokens. */
export interface GenerationResult {
  tags: Int32Array;
  probs: Float32Array;
}

export interface GenerationStats {
  batches: number;
  rows: number;
  /** Forward calls of the graph (one per generated tag position, per batch). */
  steps: number;
  /** Tokens fed (real, not padding) and positions computed (padding included). */
  tokensFed: number;
  positionsComputed: number;
  /**
   * Milliseconds inside `session.run` (on the inference thread), and in the
   * whole generation as the caller waits for it (tensor building, tag choice,
   * the hop to the inference thread and any wait there included).
   */
  runMs: number;
  totalMs: number;
}

/**
 * The model and its constrained greedy generation, without queues: what both
 * the tagger and the reference server run, and what the benchmark compares
 * with a bare onnxruntime loop. The session and the generation loop
 * (generation-loop.ts) run on the process's inference thread
 * (GenerationSession), so a generation's steps never block the event loop.
 */
export class GenerativeDecoder {
  readonly labels: readonly string[];
  readonly model: ModelInfo;
  readonly stats: GenerationStats = { batches: 0, rows: 0, steps: 0, tokensFed: 0, positionsComputed: 0, runMs: 0, totalMs: 0 };
  private closed = false;
  /** What the generation loop needs of the model, sent with every batch. */
  private readonly constants: GenerationModel;
  private readonly pieceCache = new Map<string, number[]>();

  private constructor(
    readonly dir: string,
    readonly config: GenerativeConfig,
    readonly tokenizer: Tokenizer,
    private readonly session: GenerationSession,
  ) {
    this.labels = config.labels;
    this.model = generativeModelInfo(config);
    const split = config.labels.map(splitTag);
    const L = split.length;
    const constrain = config.prompt.bio_constraint !== false;
    // Row j: after which previous label label j may follow; column L stands for "sentence start". I-X only after B-X or I-X.
    const follows = new Uint8Array(L * (L + 1)).fill(1);
    split.forEach((cur, j) => {
      if (!constrain || cur.prefix !== 'I') return;
      for (let p = 0; p <= L; p++) follows[j * (L + 1) + p] = p < L && split[p].prefix !== 'O' && split[p].type === cur.type ? 1 : 0;
    });
    this.constants = {
      layers: config.n_layer,
      heads: config.n_head,
      headDim: config.head_dim,
      vocab: config.vocab_size,
      tab: config.tab_token_id,
      newline: config.newline_token_id,
      prefix: Int32Array.from(config.prompt.prefix_ids),
      suffix: Int32Array.from(config.prompt.suffix_ids),
      labelIds: Int32Array.from(config.label_token_ids),
      follows,
    };
  }

  static async load(dir: string, options: { intraOpThreads?: number } = {}): Promise<GenerativeDecoder> {
    const modelDir = resolve(dir);
    const config = await readGenerativeConfig(modelDir);
    const tokenizerJson = await readJson(modelDir, 'tokenizer.json', TokenizerJsonSchema, true);
    const tokenizerConfig = (await readJson(modelDir, 'tokenizer_config.json', TokenizerConfigSchema, false)) ?? {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new ModelLoadError(`tokenizer.json in ${modelDir} could not be loaded: ${(err as Error).message}`, { cause: err });
    }
    let session: GenerationSession;
    try {
      session = await GenerationSession.load(join(modelDir, 'model.onnx'), options.intraOpThreads ?? 0);
    } catch (err) {
      throw new ModelLoadError(`model.onnx in ${modelDir} could not be loaded by onnxruntime: ${(err as Error).message}`, { cause: err });
    }
    const want = graphNames(config.n_layer);
    const missing = want.inputs.filter((n) => !session.inputNames.includes(n)).concat(want.outputs.filter((n) => !session.outputNames.includes(n)));
    if (missing.length > 0) {
      await session.release();
      throw new ModelLoadError(`model.onnx in ${modelDir} is not a KV-cache decoder: it lacks ${missing.join(', ')}`);
    }
    return new GenerativeDecoder(modelDir, config, tokenizer, session);
  }

  /** Longest row, in tokens (prompt plus answer), the model was built for. */
  get maxPositions(): number {
    return this.config.max_position_embeddings;
  }

  /** Sub-word ids of one word, cached (clinical vocabulary repeats); a word the normaliser erases becomes [UNK]. */
  piecesOf(word: string): number[] {
    const cached = this.pieceCache.get(word);
    if (cached !== undefined) return cached;
    const encoded: number[] = this.tokenizer.encode(word, { add_special_tokens: false }).ids;
    const ids = encoded.length === 0 ? [this.config.unk_token_id] : encoded;
    if (this.pieceCache.size >= 200_000) this.pieceCache.clear();
    this.pieceCache.set(word, ids);
    return ids;
  }

  /** Token count of a text with the tokenizer's specials (the server's usage figures). */
  countTokens(text: string): number {
    return this.tokenizer.encode(text, { add_special_tokens: true }).ids.length;
  }

  /** Tokens a row costs: prompt (prefix, pieces, suffix) plus answer (pieces, TAB, tag, NL per word). */
  rowLength(pieces: readonly (readonly number[])[]): number {
    let n = this.config.prompt.prefix_ids.length + this.config.prompt.suffix_ids.length + 1;
    for (const p of pieces) n += 2 * p.length + 3;
    return n;
  }

  /**
   * Constrained greedy generation of a batch (generateBatch in
   * generation-loop.ts, on the inference thread). `stop` ends it between two
   * steps once aborted (the words not reached keep tag 0 and zero
   * probabilities): the abort sets a flag the thread reads before each step.
   */
  async generate(rows: readonly GenerationRow[], stop?: AbortSignal): Promise<GenerationResult[]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'the generative decoder is closed');
    const started = performance.now();
    const B = rows.length;
    const L = this.labels.length;
    const steps = rows.reduce((m, r) => Math.max(m, r.pieces.length), 0);
    if (B === 0 || steps === 0) return rows.map((r) => ({ tags: new Int32Array(r.pieces.length), probs: new Float32Array(r.pieces.length * L) }));

    const batch = packBatch(rows, L);
    // Row offsets, read before the batch's arrays are handed over to the inference thread.
    const rowWords = batch.rowWords.slice();
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const cancelNow = (): void => {
      Atomics.store(cancel, 0, 1);
    };
    if (stop?.aborted === true) cancelNow();
    else stop?.addEventListener('abort', cancelNow, { once: true });
    let out: GenerationOutput;
    try {
      out = await this.session.generate({ model: this.constants, batch }, cancel);
    } finally {
      stop?.removeEventListener('abort', cancelNow);
    }
    this.stats.runMs += out.runMs;
    this.stats.steps += out.steps;
    this.stats.tokensFed += out.tokensFed;
    this.stats.positionsComputed += out.positionsComputed;
    this.stats.batches++;
    this.stats.rows += B;
    this.stats.totalMs += performance.now() - started;
    // Views on the two arrays that came back: they are ours alone.
    return rows.map((_, b) => ({
      tags: out.tags.subarray(rowWords[b], rowWords[b + 1]),
      probs: out.probs.subarray(rowWords[b] * L, rowWords[b + 1] * L),
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.session.release();
  }
}

export interface GenerativeTaggerOptions {
  /** Rows (sentence windows) per generation, gathered across notes. */
  batchSize?: number;
  /** How long a partial batch waits for more rows. */
  batchWaitMs?: number;
  /** Pieces per window: longer sentences are split into overlapping windows, each generated alone. */
  maxWindowPieces?: number;
  windowOverlapWords?: number;
}

/** Tagging with the word probabilities behind each tag (what the reference server reports as logprobs). */
export interface GeneratedTagging extends SentenceTagging {
  /** Chosen label index per word. */
  tags: Int32Array;
  /** Row-major words x labels: softmax over the label tokens at each tag position. */
  probs: Float32Array;
}

/**
 * The `onnx` LLM adapter over a generative bundle: sentences -> word pieces ->
 * windows -> batches across notes (similar lengths together) -> one
 * generation at a time (parallel runs only contend for the cores) -> spans.
 */
export class GenerativeLlmTagger implements LlmTagger {
  readonly route = 'llm' as const;
  readonly client: LlmHttpClient | undefined = undefined;
  readonly model: ModelInfo;
  readonly labels: readonly string[];
  private readonly queue: BatchQueue<GenerationRow, GenerationResult>;
  private closed = false;
  private readonly settings: Required<Pick<GenerativeTaggerOptions, 'maxWindowPieces' | 'windowOverlapWords'>>;

  constructor(
    readonly decoder: GenerativeDecoder,
    options: GenerativeTaggerOptions = {},
  ) {
    this.model = decoder.model;
    this.labels = decoder.labels;
    this.settings = {
      maxWindowPieces: options.maxWindowPieces ?? 192,
      windowOverlapWords: options.windowOverlapWords ?? 16,
    };
    // One generation at a time: parallel runs only contend for the cores.
    this.queue = new BatchQueue<GenerationRow, GenerationResult>(
      { kind: 'generation', batchSize: options.batchSize ?? 32, batchWaitMs: options.batchWaitMs ?? 2, maxConcurrentBatches: 1 },
      (rows, stop) => decoder.generate(rows, stop),
    );
  }

  /** Rows generated, and rows dropped before running because their caller gave up. */
  get stats(): { rowsRun: number; rowsDropped: number } {
    return { rowsRun: this.queue.stats.run, rowsDropped: this.queue.stats.dropped };
  }

  static async load(dir: string, options: GenerativeTaggerOptions & { intraOpThreads?: number } = {}): Promise<GenerativeLlmTagger> {
    return new GenerativeLlmTagger(await GenerativeDecoder.load(dir, options), options);
  }

  /** The largest row the server accepts, in tokens. */
  get maxSequenceLength(): number {
    return this.decoder.maxPositions;
  }

  async tagSentences(sentences: readonly Sentence[], options: TagOptions = {}): Promise<TokenSpan[][]> {
    return (await this.tagSentencesDetailed(sentences, options)).map((t) => t.spans);
  }

  async tagSentencesDetailed(sentences: readonly Sentence[], options: TagOptions = {}): Promise<SentenceTagging[]> {
    return this.tagWords(
      sentences.map((s) => s.tokens.map((t) => t.text)),
      options.signal,
    );
  }

  /**
   * Tags word lists; `allowed` restricts every tag to those labels (the
   * server's regex constraint), as structured outputs restrict a served model.
   */
  async tagWords(words: readonly (readonly string[])[], signal?: AbortSignal, allowed?: readonly string[]): Promise<GeneratedTagging[]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'llm tagger is closed');
    if (signal?.aborted === true) throw abortError(signal);
    const mask = allowed === undefined ? undefined : Uint8Array.from(this.labels, (l) => (allowed.includes(l) ? 1 : 0));
    return Promise.all(words.map((w) => this.tagOne(w, signal, mask)));
  }

  private async tagOne(words: readonly string[], signal: AbortSignal | undefined, allowed: Uint8Array | undefined): Promise<GeneratedTagging> {
    const L = this.labels.length;
    const n = words.length;
    const tags = new Int32Array(n);
    const probs = new Float32Array(n * L);
    if (n === 0) return { spans: [], minConfidence: 1, tags, probs };
    const max = this.settings.maxWindowPieces;
    const pieces = words.map((w) => {
      const p = this.decoder.piecesOf(w);
      return p.length > max ? p.slice(0, max) : p;
    });
    const windows = planWindows(
      pieces.map((p) => p.length),
      max,
      this.settings.windowOverlapWords,
    );
    await Promise.all(
      windows.map(async (w) => {
        const rowPieces = pieces.slice(w.start, w.end);
        const r = await this.queue.enqueue({ pieces: rowPieces, allowed }, this.decoder.rowLength(rowPieces), signal);
        // Each window owns a word range, so overlaps never yield split or duplicated spans.
        for (let word = w.ownStart; word < w.ownEnd; word++) {
          tags[word] = r.tags[word - w.start];
          probs.set(r.probs.subarray((word - w.start) * L, (word - w.start + 1) * L), word * L);
        }
      }),
    );
    let least = 1;
    for (let word = 0; word < n; word++) least = Math.min(least, probs[word * L + tags[word]]);
    return { spans: spansFromLabelIndices(probs, tags, this.labels), minConfidence: least, tags, probs };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.close();
    await this.decoder.close();
  }
}
