import { ErrorCodes, ModelLoadError, TaggerError } from '../errors.js';
import { planWindows, type TextWindow } from '../text/windows.js';
import type { Route, Sentence, TokenSpan } from '../types.js';
import { abortError, type BatchCost, BatchQueue } from './batch-queue.js';
import { decodeBio, softmaxInto, type BioMode } from './bio.js';
import type { ModelBundle } from './model-bundle.js';
import type { ModelInfo, SentenceTagging, TagOptions, Tagger } from './types.js';

/**
 * Where logits come from. A row is the ids of one window, specials included
 * (`[CLS] pieces [SEP]`); the answer is, per row, a row-major
 * `ids.length x numLabels` array of logits (or probabilities: see
 * `outputsProbabilities`). The ONNX backend runs a model in-process; the
 * `vllm-pooling` backend asks a server.
 */
export interface LogitsBackend {
  readonly kind: string;
  /** True when rows may already be probabilities (vLLM's token_classify can apply softmax); such rows are not softmaxed again. */
  readonly mayAnswerProbabilities: boolean;
  /** True when `run` sends `model` somewhere (vLLM's /pooling); rows are then batched per model. In-process backends ignore it. */
  readonly usesModel?: boolean;
  /**
   * What a call costs, when the backend knows: about `cols x (rows + stepRows) + callCells`
   * padded positions (cols: the longest row). With it, each batch is cut from the
   * length-sorted queue where that cost per window is least; without it, the
   * shortest `batchSize` windows go first.
   */
  readonly batchCost?: BatchCost;
  /**
   * Calls the backend holds queued behind the running one, run in order on its
   * own thread: that many more batches are sent ahead, so its next run starts
   * the moment one ends, not once the event loop has read the answer.
   */
  readonly queuesAhead?: number;
  /** `model`: the served model name for the rows (remote backends; every row of a call shares it). */
  run(rows: readonly number[][], signal?: AbortSignal, model?: string): Promise<Float32Array[]>;
  close(): Promise<void>;
}

export interface TokenClassifierOptions {
  /** Pieces per window incl. specials; defaults to the model's limit. */
  maxSequenceLength?: number;
  windowOverlapWords?: number;
  /** Windows per backend call, gathered across notes. */
  batchSize?: number;
  /** How long a partial batch waits for more windows. */
  batchWaitMs?: number;
  /** Backend calls in flight at once (1 for onnxruntime: parallel runs only contend). */
  maxConcurrentBatches?: number;
  decode?: BioMode;
}

const PIECE_CACHE_LIMIT = 200_000;
/** Sentences queued per turn of the event loop (a 1M-character note has some 14k). */
const ENQUEUE_CHUNK = 256;

/**
 * The shared token-classification path: words -> sub-word pieces (cached) ->
 * windows -> cross-note batches -> logits (from a `LogitsBackend`) -> the first
 * sub-word's probabilities per word -> stitched sentence -> BIO decoding.
 * `EncoderTagger` (route `encoder`), the in-process reference decoder and the
 * `vllm-pooling` client (route `llm`) are all this class over different backends.
 */
export class TokenClassifierTagger implements Tagger {
  readonly route: Route;
  readonly model: ModelInfo;
  readonly labels: readonly string[];
  readonly maxSequenceLength: number;

  private readonly queue: BatchQueue<number[], Float32Array>;
  private readonly pieceCache = new Map<string, number[]>();
  private closed = false;
  private readonly settings: Required<Omit<TokenClassifierOptions, 'maxSequenceLength' | 'batchSize' | 'batchWaitMs' | 'maxConcurrentBatches'>>;

  constructor(
    route: Route,
    protected readonly bundle: ModelBundle,
    protected readonly backend: LogitsBackend,
    options: TokenClassifierOptions = {},
  ) {
    this.route = route;
    this.model = bundle.model;
    this.labels = bundle.labels;
    this.maxSequenceLength = options.maxSequenceLength ?? bundle.modelLimit;
    if (this.maxSequenceLength < 4) throw new ModelLoadError(`maxSequenceLength ${this.maxSequenceLength} is too small`);
    this.settings = {
      windowOverlapWords: options.windowOverlapWords ?? 16,
      decode: options.decode ?? 'viterbi',
    };
    this.queue = new BatchQueue<number[], Float32Array>(
      {
        kind: backend.kind,
        batchSize: options.batchSize ?? 32,
        batchWaitMs: options.batchWaitMs ?? 2,
        maxConcurrentBatches: options.maxConcurrentBatches ?? 1,
        queuesAhead: backend.queuesAhead,
        batchCost: backend.batchCost,
      },
      (rows, stop, model) => backend.run(rows, stop, model),
    );
  }

  /** Windows run through the backend, and windows dropped before running because their caller gave up. */
  get stats(): { windowsRun: number; windowsDropped: number } {
    return { windowsRun: this.queue.stats.run, windowsDropped: this.queue.stats.dropped };
  }

  /** Sub-word ids of one word, cached: clinical vocabulary repeats heavily. */
  private piecesOf(word: string, afterSpace: boolean): number[] {
    const key = afterSpace && this.bundle.spacePrefixed ? ` ${word}` : word;
    const cached = this.pieceCache.get(key);
    if (cached !== undefined) return cached;
    const encoded: number[] = this.bundle.tokenizer.encode(key, { add_special_tokens: false }).ids;
    // A word the normaliser erases entirely still needs a position to carry a label.
    const ids = encoded.length === 0 ? [this.bundle.special.unk] : encoded;
    if (this.pieceCache.size >= PIECE_CACHE_LIMIT) this.pieceCache.clear();
    this.pieceCache.set(key, ids);
    return ids;
  }

  /** Ids of a whole text with the tokenizer's own special tokens (for `/pooling` requests that send text). */
  encodeText(text: string): number[] {
    return this.bundle.tokenizer.encode(text, { add_special_tokens: true }).ids;
  }

  async tagSentences(sentences: readonly Sentence[], options: TagOptions = {}): Promise<TokenSpan[][]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, `${this.route} tagger is closed`);
    if (options.signal?.aborted === true) throw abortError(options.signal);
    return (await this.tagSentencesDetailed(sentences, options)).map((t) => t.spans);
  }

  async tagSentencesDetailed(sentences: readonly Sentence[], options: TagOptions = {}): Promise<SentenceTagging[]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, `${this.route} tagger is closed`);
    if (options.signal?.aborted === true) throw abortError(options.signal);
    const out: Array<Promise<SentenceTagging>> = [];
    for (let i = 0; i < sentences.length; i += ENQUEUE_CHUNK) {
      // A long note is queued in slices with a turn of the event loop between them, so answers are read and batches sent meanwhile.
      if (i > 0) {
        await new Promise<void>((r) => setImmediate(r));
        if (isAborted(options.signal)) throw abortError(options.signal);
      }
      for (const s of sentences.slice(i, i + ENQUEUE_CHUNK)) {
        const tagging = this.tagSentence(s, options.signal, options.model).then((t) => t.tagging);
        // Handled here too: one may fail while later slices are still being queued; Promise.all below still reports it.
        tagging.catch(() => undefined);
        out.push(tagging);
      }
    }
    return Promise.all(out);
  }

  /**
   * Spans plus each word's label probabilities (row-major words x labels):
   * what the reference server reports as the logprobs of the tags it answers.
   */
  async tagSentencesWithProbabilities(sentences: readonly Sentence[], options: TagOptions = {}): Promise<Array<SentenceTagging & { probs: Float32Array }>> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, `${this.route} tagger is closed`);
    if (options.signal?.aborted === true) throw abortError(options.signal);
    return Promise.all(
      sentences.map(async (s) => {
        const out = await this.tagSentence(s, options.signal, options.model);
        return { ...out.tagging, probs: out.probs };
      }),
    );
  }

  /** Raw logits for rows of ids (specials included), through the same batching queue as tagging. */
  async logits(rows: readonly number[][], signal?: AbortSignal): Promise<Float32Array[]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, `${this.route} tagger is closed`);
    return Promise.all(rows.map((ids) => this.enqueue(ids, signal, undefined)));
  }

  private async tagSentence(
    sentence: Sentence,
    signal: AbortSignal | undefined,
    model: string | undefined,
  ): Promise<{ tagging: SentenceTagging; probs: Float32Array }> {
    const words = sentence.tokens;
    if (words.length === 0) return { tagging: { spans: [], minConfidence: 1 }, probs: new Float32Array(0) };
    const maxPieces = this.maxSequenceLength - 2;
    const pieces = words.map((w, i) => {
      const ids = this.piecesOf(w.text, i > 0 && words[i - 1].end < w.start);
      return ids.length > maxPieces ? ids.slice(0, maxPieces) : ids;
    });
    const windows = planWindows(
      pieces.map((p) => p.length),
      maxPieces,
      this.settings.windowOverlapWords,
    );
    const numLabels = this.labels.length;
    const probs = new Float32Array(words.length * numLabels);
    await Promise.all(
      windows.map(async (w) => {
        const { ids, firstPiece } = this.assemble(pieces, w);
        const logits = await this.enqueue(ids, signal, model);
        if (logits.length < ids.length * numLabels) {
          throw new TaggerError(
            ErrorCodes.INFERENCE_FAILED,
            `${this.backend.kind} returned ${logits.length} values for ${ids.length} positions x ${numLabels} labels`,
          );
        }
        // Keep only the words this window owns, so overlaps never yield duplicated or split spans.
        for (let word = w.ownStart; word < w.ownEnd; word++) {
          wordProbabilities(logits, firstPiece[word - w.start] * numLabels, numLabels, probs, word * numLabels, this.backend.mayAnswerProbabilities);
        }
      }),
    );
    return {
      tagging: { spans: decodeBio(probs, words.length, this.labels, this.settings.decode), minConfidence: leastConfidentWord(probs, words.length, numLabels) },
      probs,
    };
  }

  private assemble(pieces: number[][], w: TextWindow): { ids: number[]; firstPiece: Int32Array } {
    const ids: number[] = [this.bundle.special.cls];
    const firstPiece = new Int32Array(w.end - w.start);
    for (let word = w.start; word < w.end; word++) {
      firstPiece[word - w.start] = ids.length;
      for (const id of pieces[word]) ids.push(id);
    }
    ids.push(this.bundle.special.sep);
    return { ids, firstPiece };
  }

  private enqueue(ids: number[], signal: AbortSignal | undefined, model: string | undefined): Promise<Float32Array> {
    // A backend that ignores the name may batch rows of every model together.
    return this.queue.enqueue(ids, ids.length, signal, this.backend.usesModel === true ? model : undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Queued windows finish first: close() is called after the drain, so the queue should be empty.
    await this.queue.close();
    await this.backend.close();
  }
}

/** A function, not an inline check: after an await, TypeScript still narrows `signal.aborted` from the check before it. */
const isAborted = (signal: AbortSignal | undefined): signal is AbortSignal => signal?.aborted === true;

/**
 * One word's label probabilities from its first piece's row: softmax (bio.ts),
 * except that for a backend that may already answer probabilities (vLLM's
 * token_classify may apply softmax) a row in [0, 1] summing to 1 is copied as is.
 */
export function wordProbabilities(logits: Float32Array, from: number, numLabels: number, out: Float32Array, to: number, detect: boolean): void {
  if (detect) {
    let sum = 0;
    let inUnit = true;
    for (let k = 0; k < numLabels && inUnit; k++) {
      const v = logits[from + k];
      sum += v;
      if (!(v >= 0 && v <= 1)) inUnit = false;
    }
    if (inUnit && Math.abs(sum - 1) < 1e-3) {
      for (let k = 0; k < numLabels; k++) out[to + k] = logits[from + k];
      return;
    }
  }
  softmaxInto(logits, from, numLabels, out, to);
}

/** The smallest, over words, of the word's highest label probability: how unsure the model is at its weakest point. */
function leastConfidentWord(probs: Float32Array, numWords: number, numLabels: number): number {
  let least = 1;
  for (let w = 0; w < numWords; w++) {
    let best = 0;
    for (let k = 0; k < numLabels; k++) if (probs[w * numLabels + k] > best) best = probs[w * numLabels + k];
    if (best < least) least = best;
  }
  return least;
}
