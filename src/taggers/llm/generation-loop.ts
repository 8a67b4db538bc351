import ort from 'onnxruntime-node';
import { ErrorCodes, TaggerError } from '../../errors.js';
import { softmaxInto } from '../bio.js';

/**
 * The constrained greedy generation loop of GenerativeDecoder, as the
 * inference thread runs it (src/taggers/onnx-backend.ts): a whole batch per
 * request, so the KV cache (tens of MB per step) never crosses threads; only
 * the rows go there and the tags and probabilities come back. This file is
 * imported by the inference thread's module: it must not import
 * onnx-backend.ts or generative.ts (a cycle, and the worker would load the
 * tokenizer for nothing).
 */

/** One row to decode: the word pieces of a sentence (or window), and the labels its tags may take. */
export interface GenerationRow {
  pieces: readonly (readonly number[])[];
  /** Per label: may be written. Undefined: every label. */
  allowed?: Uint8Array;
}

/** What the loop needs of the model, fixed per decoder (a few hundred bytes, sent with every batch). */
export interface GenerationModel {
  layers: number;
  heads: number;
  headDim: number;
  vocab: number;
  tab: number;
  newline: number;
  prefix: Int32Array;
  suffix: Int32Array;
  /** Per label: its token id. */
  labelIds: Int32Array;
  /** Labels x (labels + 1): 1 where label j may follow label p (p = labels: sentence start). */
  follows: Uint8Array;
}

/** One batch flattened into typed arrays, which cross to the inference thread by transfer, not copy. */
export interface GenerationBatch {
  /** Row b's words are rowWords[b] until rowWords[b + 1] (rows + 1 entries). */
  rowWords: Int32Array;
  /** Word w's pieces are pieces[wordPieces[w]] until pieces[wordPieces[w + 1]] (words + 1 entries). */
  wordPieces: Int32Array;
  pieces: Int32Array;
  /** Rows x labels: 1 where row b may write label j. */
  allowed: Uint8Array;
}

export interface GenerationJob {
  model: GenerationModel;
  batch: GenerationBatch;
}

/** The batch's answer, words in row order, and what it cost. */
export interface GenerationOutput {
  /** Per word: the chosen label index. */
  tags: Int32Array;
  /** Words x labels: the softmax over the label tokens at each tag position. */
  probs: Float32Array;
  steps: number;
  tokensFed: number;
  positionsComputed: number;
  /** Milliseconds inside `session.run`. */
  runMs: number;
}

/** What the loop asks of the thread that runs it. */
export interface GenerationHooks {
  /** One forward step (the thread's exit-safe run). */
  run(feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType>;
  /** Asked before each step: every caller gave up. */
  stopped(): boolean;
  /** Between two steps: other sessions' runs waiting on the thread may go first. */
  betweenSteps(): Promise<void>;
}

/** The rows of a batch as typed arrays; `labels` fills the allowed mask of rows that restrict nothing. */
export function packBatch(rows: readonly GenerationRow[], labels: number): GenerationBatch {
  let words = 0;
  let pieceCount = 0;
  for (const r of rows) {
    words += r.pieces.length;
    for (const p of r.pieces) pieceCount += p.length;
  }
  const rowWords = new Int32Array(rows.length + 1);
  const wordPieces = new Int32Array(words + 1);
  const pieces = new Int32Array(pieceCount);
  const allowed = new Uint8Array(rows.length * labels).fill(1);
  let w = 0;
  let at = 0;
  for (const [b, r] of rows.entries()) {
    rowWords[b] = w;
    for (const p of r.pieces) {
      wordPieces[w++] = at;
      for (const x of p) pieces[at++] = x;
    }
    const mask = r.allowed;
    if (mask !== undefined) for (let j = 0; j < labels; j++) allowed[b * labels + j] = mask[j] === 1 ? 1 : 0;
  }
  rowWords[rows.length] = w;
  wordPieces[words] = at;
  return { rowWords, wordPieces, pieces, allowed };
}

/**
 * Constrained greedy generation of a batch. Step 0 feeds each row's prompt,
 * its first word and [TAB]; step k feeds `[tag k-1] [NL] word k [TAB]`; after
 * each step the tag is the best allowed label token at the row's last fed
 * position. Chunks are right-padded: pads get attention 0 and stay in the
 * cache as holes no query attends to; position ids count real tokens only.
 * Words after a stop keep tag 0 and zero probabilities.
 */
export async function generateBatch(job: GenerationJob, hooks: GenerationHooks): Promise<GenerationOutput> {
  const { layers, heads, headDim, vocab: V, tab: TAB, newline: NL, prefix, suffix, labelIds, follows } = job.model;
  const { rowWords, wordPieces, pieces, allowed } = job.batch;
  const B = rowWords.length - 1;
  const L = labelIds.length;
  const words = rowWords[B];
  const out: GenerationOutput = { tags: new Int32Array(words), probs: new Float32Array(words * L), steps: 0, tokensFed: 0, positionsComputed: 0, runMs: 0 };
  const tags = out.tags;
  let steps = 0;
  for (let b = 0; b < B; b++) steps = Math.max(steps, rowWords[b + 1] - rowWords[b]);
  if (B === 0 || steps === 0) return out;

  const pushWord = (c: number[], w: number): void => {
    for (let i = wordPieces[w]; i < wordPieces[w + 1]; i++) c.push(pieces[i]);
  };
  const nReal = new Int32Array(B);
  let mask = new BigInt64Array(0);
  let past: Record<string, ort.Tensor> = {};
  for (let i = 0; i < layers; i++) {
    past[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), [B, heads, 0, headDim]);
    past[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), [B, heads, 0, headDim]);
  }
  const labelLogits = new Float32Array(L);
  const chunks: number[][] = new Array<number[]>(B);
  let pastLen = 0;
  for (let k = 0; k < steps; k++) {
    if (k > 0) await hooks.betweenSteps();
    if (hooks.stopped()) break;
    let T = 0;
    for (let b = 0; b < B; b++) {
      const first = rowWords[b];
      const n = rowWords[b + 1] - first;
      const c: number[] = [];
      if (k < n && k === 0) {
        for (const x of prefix) c.push(x);
        for (let i = wordPieces[first]; i < wordPieces[first + n]; i++) c.push(pieces[i]);
        for (const x of suffix) c.push(x);
        pushWord(c, first);
        c.push(TAB);
      } else if (k < n) {
        c.push(labelIds[tags[first + k - 1]], NL);
        pushWord(c, first + k);
        c.push(TAB);
      }
      chunks[b] = c;
      if (c.length > T) T = c.length;
    }
    const S = pastLen + T;
    const ids = new BigInt64Array(B * T);
    const pos = new BigInt64Array(B * T);
    const nextMask = new BigInt64Array(B * S);
    for (let b = 0; b < B; b++) {
      nextMask.set(mask.subarray(b * pastLen, (b + 1) * pastLen), b * S);
      const c = chunks[b];
      for (let t = 0; t < c.length; t++) {
        ids[b * T + t] = BigInt(c[t]);
        pos[b * T + t] = BigInt(nReal[b] + t);
        nextMask[b * S + pastLen + t] = 1n;
      }
      out.tokensFed += c.length;
    }
    mask = nextMask;
    const runStart = performance.now();
    const result = await hooks.run({
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      attention_mask: new ort.Tensor('int64', mask, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, T]),
      ...past,
    });
    out.runMs += performance.now() - runStart;
    out.steps++;
    out.positionsComputed += B * T;
    const next: Record<string, ort.Tensor> = {};
    for (let i = 0; i < layers; i++) {
      next[`past_key_values.${i}.key`] = result[`present.${i}.key`];
      next[`past_key_values.${i}.value`] = result[`present.${i}.value`];
    }
    past = next;
    pastLen = S;
    const logits = result.logits.data as Float32Array;
    if (logits.length !== B * T * V) throw new TaggerError(ErrorCodes.INFERENCE_FAILED, `logits have ${logits.length} values, expected ${B} x ${T} x ${V}`);
    for (let b = 0; b < B; b++) {
      const c = chunks[b];
      if (c.length === 0) continue;
      nReal[b] += c.length;
      const at = (b * T + c.length - 1) * V;
      for (let j = 0; j < L; j++) labelLogits[j] = logits[at + labelIds[j]];
      const w = rowWords[b] + k;
      const prev = k === 0 ? L : tags[w - 1];
      tags[w] = choose(labelLogits, prev, allowed, b * L, follows);
      softmaxInto(labelLogits, 0, L, out.probs, w * L);
    }
  }
  return out;
}

/** The best label allowed after `prev` (L: sentence start) and by the row's set; without one, the best allowed, then the best. */
function choose(logits: Float32Array, prev: number, allowed: Uint8Array, row: number, follows: Uint8Array): number {
  const L = logits.length;
  let best = -1;
  let bestAllowed = -1;
  let bestAny = 0;
  for (let j = 0; j < L; j++) {
    if (logits[j] > logits[bestAny]) bestAny = j;
    if (allowed[row + j] !== 1) continue;
    if (bestAllowed < 0 || logits[j] > logits[bestAllowed]) bestAllowed = j;
    if (follows[j * (L + 1) + prev] !== 1) continue;
    if (best < 0 || logits[j] > logits[best]) best = j;
  }
  return best >= 0 ? best : bestAllowed >= 0 ? bestAllowed : bestAny;
}
