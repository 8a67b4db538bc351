import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';
import { ErrorCodes, ModelLoadError, TaggerError } from '../errors.js';
import { planWindows, type TextWindow } from '../text/windows.js';
import type { Sentence, TokenSpan } from '../types.js';
import { decodeBio, entityTypes, parseLabels } from './bio.js';
import type { ModelInfo, Tagger } from './types.js';

export interface EncoderOptions {
  /** Pieces per window incl. [CLS]/[SEP]; defaults to the model's limit (max_position_embeddings / model_max_length, at most 512). */
  maxSequenceLength?: number;
  windowOverlapWords?: number;
  /** Windows per onnxruntime call, gathered across notes. */
  batchSize?: number;
  /** How long a partial batch waits for more windows. */
  batchWaitMs?: number;
  /** onnxruntime intra-op threads; 0 lets onnxruntime choose. */
  intraOpThreads?: number;
  decode?: 'viterbi' | 'argmax';
}

interface HfConfig {
  id2label?: Record<string, string>;
  max_position_embeddings?: number;
  _name_or_path?: string;
  bioner?: { name?: string; version?: string };
}

interface TokenizerConfig {
  model_max_length?: number;
  cls_token?: string | { content: string };
  sep_token?: string | { content: string };
  pad_token?: string | { content: string };
  [key: string]: unknown;
}

/** One window of one sentence waiting for the model. */
interface WindowJob {
  ids: number[];
  /** Position in `ids` of each word's first piece, for words window.start..window.end. */
  firstPiece: Int32Array;
  resolve: (probs: Float32Array) => void;
  reject: (err: unknown) => void;
}

function tokenContent(t: string | { content: string } | undefined): string | undefined {
  return typeof t === 'string' ? t : t?.content;
}

const PIECE_CACHE_LIMIT = 200_000;

/**
 * Token classifier over any Hugging Face token-classification export
 * (config.json with id2label, tokenizer.json, model.onnx). Sentences from
 * concurrent notes are windowed, queued and run together in batches; each word
 * takes the prediction of its first sub-word (the HF convention), and BIO tags
 * are decoded per sentence into spans.
 */
export class EncoderTagger implements Tagger {
  readonly route = 'encoder' as const;
  readonly model: ModelInfo;
  readonly labels: readonly string[];
  readonly maxSequenceLength: number;

  private readonly queue: WindowJob[] = [];
  private readonly pieceCache = new Map<string, number[]>();
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly needsTokenTypeIds: boolean;
  /** Byte-level BPE vocabularies mark a preceding space inside the piece ("Ġword"). */
  private readonly spacePrefixed: boolean;

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly tokenizer: Tokenizer,
    private readonly special: { cls: number; sep: number; pad: number; unk: number },
    model: ModelInfo,
    labels: string[],
    maxSequenceLength: number,
    spacePrefixed: boolean,
    private readonly options: Required<Omit<EncoderOptions, 'maxSequenceLength'>>,
  ) {
    this.model = model;
    this.labels = labels;
    this.maxSequenceLength = maxSequenceLength;
    this.spacePrefixed = spacePrefixed;
    this.needsTokenTypeIds = session.inputNames.includes('token_type_ids');
  }

  static async load(dir: string, options: EncoderOptions = {}): Promise<EncoderTagger> {
    const modelDir = resolve(dir);
    const readJson = async <T>(name: string, required: boolean): Promise<T | undefined> => {
      try {
        return JSON.parse(await readFile(join(modelDir, name), 'utf8')) as T;
      } catch (err) {
        if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new ModelLoadError(`cannot read ${name} in model directory ${modelDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, err);
      }
    };
    const config = (await readJson<HfConfig>('config.json', true)) as HfConfig;
    const tokenizerJson = (await readJson<Record<string, unknown>>('tokenizer.json', true)) as Record<string, unknown>;
    const tokenizerConfig = (await readJson<TokenizerConfig>('tokenizer_config.json', false)) ?? {};
    if (config.id2label === undefined) throw new ModelLoadError(`config.json in ${modelDir} has no id2label: not a token-classification export`);
    const labels = parseLabels(config.id2label);

    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new ModelLoadError(`tokenizer.json in ${modelDir} could not be loaded: ${(err as Error).message}`, err);
    }
    const idOf = (candidates: Array<string | undefined>, role: string): number => {
      for (const c of candidates) {
        if (c === undefined) continue;
        const id = tokenizer.token_to_id(c);
        if (id !== undefined) return id;
      }
      throw new ModelLoadError(`tokenizer in ${modelDir} has no ${role} token`);
    };
    const special = {
      cls: idOf([tokenContent(tokenizerConfig.cls_token), '[CLS]', '<s>'], 'CLS/<s>'),
      sep: idOf([tokenContent(tokenizerConfig.sep_token), '[SEP]', '</s>'], 'SEP/</s>'),
      pad: idOf([tokenContent(tokenizerConfig.pad_token), '[PAD]', '<pad>'], 'PAD'),
      unk: idOf([tokenContent(tokenizerConfig.unk_token as string | undefined), '[UNK]', '<unk>'], 'UNK'),
    };

    const modelLimit = Math.min(
      config.max_position_embeddings ?? 512,
      tokenizerConfig.model_max_length !== undefined && tokenizerConfig.model_max_length < 1e6 ? tokenizerConfig.model_max_length : 512,
      512,
    );
    const maxSequenceLength = options.maxSequenceLength ?? modelLimit;
    if (maxSequenceLength < 4) throw new ModelLoadError(`maxSequenceLength ${maxSequenceLength} is too small`);

    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(join(modelDir, 'model.onnx'), {
        intraOpNumThreads: options.intraOpThreads ?? 0,
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      throw new ModelLoadError(`model.onnx in ${modelDir} could not be loaded by onnxruntime: ${(err as Error).message}`, err);
    }
    for (const input of ['input_ids', 'attention_mask']) {
      if (!session.inputNames.includes(input)) throw new ModelLoadError(`model.onnx in ${modelDir} lacks the input "${input}" (has ${session.inputNames.join(', ')})`);
    }
    const preTokenizer = JSON.stringify(tokenizerJson.pre_tokenizer ?? null);
    const model: ModelInfo = {
      id: config.bioner?.name ?? (config._name_or_path !== undefined && config._name_or_path !== '' ? basename(config._name_or_path) : basename(modelDir)),
      version: config.bioner?.version ?? '0',
      entityTypes: entityTypes(labels),
    };
    return new EncoderTagger(session, tokenizer, special, model, labels, maxSequenceLength, preTokenizer.includes('ByteLevel'), {
      windowOverlapWords: options.windowOverlapWords ?? 16,
      batchSize: options.batchSize ?? 32,
      batchWaitMs: options.batchWaitMs ?? 2,
      intraOpThreads: options.intraOpThreads ?? 0,
      decode: options.decode ?? 'viterbi',
    });
  }

  /** Sub-word ids of one word, cached: clinical vocabulary repeats heavily. */
  private piecesOf(word: string, afterSpace: boolean): number[] {
    const key = afterSpace && this.spacePrefixed ? ` ${word}` : word;
    const cached = this.pieceCache.get(key);
    if (cached !== undefined) return cached;
    const encoded: number[] = this.tokenizer.encode(key, { add_special_tokens: false }).ids;
    // A word the normaliser erases entirely still needs a position to carry a label.
    const ids = encoded.length === 0 ? [this.special.unk] : encoded;
    if (this.pieceCache.size >= PIECE_CACHE_LIMIT) this.pieceCache.clear();
    this.pieceCache.set(key, ids);
    return ids;
  }

  async tagSentences(sentences: readonly Sentence[]): Promise<TokenSpan[][]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'encoder tagger is closed', false);
    return Promise.all(sentences.map((s) => this.tagSentence(s)));
  }

  private async tagSentence(sentence: Sentence): Promise<TokenSpan[]> {
    const words = sentence.tokens;
    if (words.length === 0) return [];
    const maxPieces = this.maxSequenceLength - 2;
    const pieces = words.map((w, i) => {
      const ids = this.piecesOf(w.text, i > 0 && words[i - 1].end < w.start);
      return ids.length > maxPieces ? ids.slice(0, maxPieces) : ids;
    });
    const windows = planWindows(pieces.map((p) => p.length), maxPieces, this.options.windowOverlapWords);
    const numLabels = this.labels.length;
    const probs = new Float32Array(words.length * numLabels);
    await Promise.all(
      windows.map(async (w) => {
        const windowProbs = await this.enqueue(pieces, w);
        // Keep only the words this window owns, so overlaps never yield duplicated or split spans.
        for (let word = w.ownStart; word < w.ownEnd; word++) {
          const from = (word - w.start) * numLabels;
          probs.set(windowProbs.subarray(from, from + numLabels), word * numLabels);
        }
      }),
    );
    return decodeBio(probs, words.length, this.labels, this.options.decode);
  }

  private enqueue(pieces: number[][], w: TextWindow): Promise<Float32Array> {
    const ids: number[] = [this.special.cls];
    const firstPiece = new Int32Array(w.end - w.start);
    for (let word = w.start; word < w.end; word++) {
      firstPiece[word - w.start] = ids.length;
      for (const id of pieces[word]) ids.push(id);
    }
    ids.push(this.special.sep);
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ ids, firstPiece, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running) return; // the running batch picks up the queue when it ends
    if (this.queue.length >= this.options.batchSize || this.options.batchWaitMs === 0) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      void this.runBatches();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.runBatches();
      }, this.options.batchWaitMs);
    }
  }

  /** One onnxruntime call at a time: on few cores parallel runs only contend, and queued windows batch up meanwhile. */
  private async runBatches(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        // Similar lengths together waste less padding.
        if (this.queue.length > this.options.batchSize) this.queue.sort((a, b) => a.ids.length - b.ids.length);
        const batch = this.queue.splice(0, this.options.batchSize);
        try {
          await this.runBatch(batch);
        } catch (err) {
          const failure = new TaggerError(ErrorCodes.INFERENCE_FAILED, `onnxruntime failed on a batch of ${batch.length} windows: ${(err as Error).message}`, false, err);
          for (const job of batch) job.reject(failure);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async runBatch(batch: WindowJob[]): Promise<void> {
    const rows = batch.length;
    const cols = batch.reduce((m, j) => Math.max(m, j.ids.length), 0);
    const inputIds = new BigInt64Array(rows * cols).fill(BigInt(this.special.pad));
    const mask = new BigInt64Array(rows * cols);
    batch.forEach((job, r) => {
      const base = r * cols;
      for (let c = 0; c < job.ids.length; c++) {
        inputIds[base + c] = BigInt(job.ids[c]);
        mask[base + c] = 1n;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', inputIds, [rows, cols]),
      attention_mask: new ort.Tensor('int64', mask, [rows, cols]),
    };
    if (this.needsTokenTypeIds) feeds.token_type_ids = new ort.Tensor('int64', new BigInt64Array(rows * cols), [rows, cols]);
    const output = await this.session.run(feeds);
    const logitsTensor = output.logits ?? output[this.session.outputNames[0]];
    const logits = logitsTensor.data as Float32Array;
    const numLabels = this.labels.length;
    if (logitsTensor.dims.length !== 3 || logitsTensor.dims[2] !== numLabels) {
      throw new Error(`logits have shape [${logitsTensor.dims.join(', ')}], expected [${rows}, ${cols}, ${numLabels}]`);
    }
    batch.forEach((job, r) => {
      const out = new Float32Array(job.firstPiece.length * numLabels);
      for (let w = 0; w < job.firstPiece.length; w++) {
        const from = (r * cols + job.firstPiece[w]) * numLabels;
        // Softmax over one word's logits, stable by subtracting the max.
        let max = -Infinity;
        for (let k = 0; k < numLabels; k++) max = Math.max(max, logits[from + k]);
        let sum = 0;
        for (let k = 0; k < numLabels; k++) {
          const e = Math.exp(logits[from + k] - max);
          out[w * numLabels + k] = e;
          sum += e;
        }
        for (let k = 0; k < numLabels; k++) out[w * numLabels + k] /= sum;
      }
      job.resolve(out);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    // Let queued windows finish: close() is called after the drain, so the queue should be empty.
    while (this.running || this.queue.length > 0) {
      if (!this.running) await this.runBatches();
      else await new Promise((r) => setTimeout(r, 5));
    }
    await this.session.release();
  }
}
