/**
 * BIO decoding: per-word label probabilities -> entity spans over word indices.
 *
 * Label scheme: `O`, `B-X`, `I-X`. Also accepted, because exported models use them:
 * - a bare label `X` (IO style) is read as `I-X`;
 * - BIOES/BILOU prefixes are folded onto BIO: `S-`/`U-` -> `B-`, `E-`/`L-` -> `I-`.
 *
 * Repair rule (what makes every output a valid BIO sequence):
 * - `viterbi` (default) returns the most probable tag sequence (maximum sum of log
 *   probabilities) among the sequences in which `I-X` follows only `B-X` or `I-X`
 *   and never opens a sentence. Invalid sequences are never produced, so no
 *   repair is needed afterwards. A type that has no `B-X` label at all (IO style)
 *   is unconstrained: its `I-X` may open an entity anywhere.
 * - `argmax` takes each word's most probable tag, then applies the conlleval rule:
 *   an `I-X` after `O`, at sentence start, or after a tag of another type starts a
 *   new `X` entity; a `B-X` always starts a new entity.
 *
 * A span's score is the mean probability of the chosen tags over its words.
 */
import { ErrorCodes, ModelLoadError, TaggerError } from '../errors.js';
import type { TokenSpan } from '../types.js';

export type BioMode = 'viterbi' | 'argmax';
export type BioPrefix = 'O' | 'B' | 'I';

export interface SplitTag {
  prefix: BioPrefix;
  /** Entity type; '' for `O`. */
  type: string;
}

const PREFIXED = /^([BIESLU])-(.+)$/;

/** Folds a label onto O/B/I + type (see the module comment for the accepted schemes). */
export function splitTag(label: string): SplitTag {
  if (label === 'O') return { prefix: 'O', type: '' };
  const m = PREFIXED.exec(label);
  if (m === null) return { prefix: 'I', type: label };
  const p = m[1];
  return { prefix: p === 'B' || p === 'S' || p === 'U' ? 'B' : 'I', type: m[2] };
}

const ID_RE = /^(0|[1-9][0-9]*)$/;

/**
 * Turns a model config's `id2label` into an index -> label array. Ids must be the
 * integers 0..n-1 exactly, since logits columns are addressed by position.
 */
export function parseLabels(id2label: Record<string, string>): string[] {
  const keys = Object.keys(id2label);
  const n = keys.length;
  if (n === 0) throw new ModelLoadError('id2label is empty');
  const out = new Array<string>(n);
  for (const key of keys) {
    const id = ID_RE.test(key) ? Number(key) : Number.NaN;
    if (!(id >= 0 && id < n)) {
      throw new ModelLoadError(`id2label: id "${key}" is not an integer in 0..${n - 1} (ids must be contiguous from 0)`);
    }
    const label = id2label[key];
    if (typeof label !== 'string' || label.length === 0 || /\s/.test(label)) {
      throw new ModelLoadError(`id2label: label for id ${key} must be a non-empty string without spaces`);
    }
    if (/^[BIESLU]-$/.test(label)) {
      throw new ModelLoadError(`id2label: label for id ${key} has a prefix but no entity type`);
    }
    out[id] = label;
  }
  return out;
}

/** Distinct entity types in order of first appearance (`O` excluded). */
export function entityTypes(labels: readonly string[]): string[] {
  const seen = new Set<string>();
  for (const l of labels) {
    const { prefix, type } = splitTag(l);
    if (prefix !== 'O') seen.add(type);
  }
  return [...seen];
}

const KIND_O = 0;
const KIND_B = 1;
const KIND_I = 2;

/** Label list compiled to flat arrays so decoding does no string work per word. */
interface Scheme {
  numLabels: number;
  numTypes: number;
  kind: Uint8Array;
  typeOf: Int32Array;
  /** 1 when the label is an I- whose type also has a B- label, so it may not open an entity. */
  constrained: Uint8Array;
  typeNames: string[];
}

// Keyed by the labels array itself: a tagger passes the same array for every sentence.
const schemes = new WeakMap<readonly string[], Scheme>();

function compile(labels: readonly string[]): Scheme {
  const cached = schemes.get(labels);
  if (cached !== undefined) return cached;
  const numLabels = labels.length;
  const kind = new Uint8Array(numLabels);
  const typeOf = new Int32Array(numLabels).fill(-1);
  const constrained = new Uint8Array(numLabels);
  const typeIndex = new Map<string, number>();
  const hasB: boolean[] = [];
  for (let k = 0; k < numLabels; k++) {
    const { prefix, type } = splitTag(labels[k]);
    if (prefix === 'O') continue;
    let ti = typeIndex.get(type);
    if (ti === undefined) {
      ti = typeIndex.size;
      typeIndex.set(type, ti);
      hasB.push(false);
    }
    typeOf[k] = ti;
    kind[k] = prefix === 'B' ? KIND_B : KIND_I;
    if (prefix === 'B') hasB[ti] = true;
  }
  for (let k = 0; k < numLabels; k++) {
    if (kind[k] === KIND_I && hasB[typeOf[k]]) constrained[k] = 1;
  }
  const scheme: Scheme = { numLabels, numTypes: typeIndex.size, kind, typeOf, constrained, typeNames: [...typeIndex.keys()] };
  schemes.set(labels, scheme);
  return scheme;
}

// Scratch buffers reused across calls (decoding is synchronous, so no caller can interleave).
let f64Scratch = new Float64Array(256);
let i32Scratch = new Int32Array(1024);

function f64(n: number): Float64Array {
  if (f64Scratch.length < n) f64Scratch = new Float64Array(Math.max(n, f64Scratch.length * 2));
  return f64Scratch;
}
function i32(n: number): Int32Array {
  if (i32Scratch.length < n) i32Scratch = new Int32Array(Math.max(n, i32Scratch.length * 2));
  return i32Scratch;
}

// Floor keeps log finite for 0 (and NaN) probabilities, so an allowed path always exists.
const P_FLOOR = 1e-30;

/** Fills tags[0..n) with per-word argmax label indices (lowest index wins ties). */
function argmaxTags(probs: Float32Array, n: number, L: number, tags: Int32Array): void {
  for (let t = 0; t < n; t++) {
    const row = t * L;
    let best = 0;
    let bestP = -Infinity;
    for (let k = 0; k < L; k++) {
      const p = probs[row + k];
      if (p > bestP) {
        bestP = p;
        best = k;
      }
    }
    tags[t] = best;
  }
}

/**
 * Constrained Viterbi. The only transition rule is "constrained I-X needs a
 * B-X/I-X predecessor", so each step needs just the global best predecessor and
 * the best predecessor per type: O(n * L) instead of O(n * L^2).
 */
function viterbiTags(probs: Float32Array, n: number, s: Scheme, tags: Int32Array, ints: Int32Array, floats: Float64Array): void {
  const L = s.numLabels;
  const T = s.numTypes;
  const { kind, typeOf, constrained } = s;
  // Layout of the scratch: floats = prev(L) | cur(L) | typeMax(T); ints = typeArg(T) | back(n*L).
  let prev = floats.subarray(0, L);
  let cur = floats.subarray(L, 2 * L);
  const typeMax = floats.subarray(2 * L, 2 * L + T);
  const typeArg = ints.subarray(0, T);
  const back = ints.subarray(T, T + n * L);

  for (let k = 0; k < L; k++) {
    const p = probs[k];
    prev[k] = constrained[k] === 1 ? -Infinity : Math.log(Math.max(p, P_FLOOR));
  }
  for (let t = 1; t < n; t++) {
    let gMax = -Infinity;
    let gArg = 0;
    typeMax.fill(-Infinity);
    typeArg.fill(-1);
    for (let k = 0; k < L; k++) {
      const v = prev[k];
      if (v > gMax) {
        gMax = v;
        gArg = k;
      }
      if (kind[k] !== KIND_O) {
        const ti = typeOf[k];
        if (v > typeMax[ti]) {
          typeMax[ti] = v;
          typeArg[ti] = k;
        }
      }
    }
    const row = t * L;
    for (let k = 0; k < L; k++) {
      const p = probs[row + k];
      const lp = Math.log(Math.max(p, P_FLOOR));
      if (constrained[k] === 1) {
        const ti = typeOf[k];
        cur[k] = typeMax[ti] + lp;
        back[row + k] = typeArg[ti];
      } else {
        cur[k] = gMax + lp;
        back[row + k] = gArg;
      }
    }
    const tmp = prev;
    prev = cur;
    cur = tmp;
  }
  let best = 0;
  let bestV = -Infinity;
  for (let k = 0; k < L; k++) {
    if (prev[k] > bestV) {
      bestV = prev[k];
      best = k;
    }
  }
  tags[n - 1] = best;
  for (let t = n - 1; t > 0; t--) {
    best = back[t * L + best];
    tags[t - 1] = best;
  }
}

/** Groups label indices into spans with the conlleval rule (see the module comment). */
function spansFromTags(probs: Float32Array, n: number, s: Scheme, tags: Int32Array): TokenSpan[] {
  const L = s.numLabels;
  const spans: TokenSpan[] = [];
  let openType = -1;
  let first = 0;
  let sum = 0;
  const close = (last: number): void => {
    if (openType >= 0) spans.push({ first, last, label: s.typeNames[openType], score: sum / (last - first + 1) });
    openType = -1;
  };
  for (let t = 0; t < n; t++) {
    const k = tags[t];
    const kd = s.kind[k];
    if (kd === KIND_O) {
      close(t - 1);
      continue;
    }
    const ti = s.typeOf[k];
    if (kd === KIND_B || ti !== openType) {
      close(t - 1);
      openType = ti;
      first = t;
      sum = 0;
    }
    sum += probs[t * L + k];
  }
  close(n - 1);
  return spans;
}

function checkInput(probs: Float32Array, numWords: number, labels: readonly string[]): void {
  if (labels.length === 0) throw new TaggerError(ErrorCodes.INFERENCE_FAILED, 'decodeBio: empty label list');
  if (!Number.isInteger(numWords) || numWords < 0 || probs.length < numWords * labels.length) {
    throw new TaggerError(ErrorCodes.INFERENCE_FAILED, `decodeBio: probs has ${probs.length} values, need ${numWords} words x ${labels.length} labels`);
  }
}

function decodeInto(probs: Float32Array, numWords: number, s: Scheme, mode: BioMode): Int32Array {
  const L = s.numLabels;
  const ints = i32(numWords + s.numTypes + numWords * L);
  const tags = ints.subarray(0, numWords);
  if (mode === 'argmax' || numWords === 0) argmaxTags(probs, numWords, L, tags);
  else viterbiTags(probs, numWords, s, tags, ints.subarray(numWords), f64(2 * L + s.numTypes));
  return tags;
}

/**
 * Decodes one sentence. `probs` is row-major numWords x labels.length (softmax
 * probabilities per word; extra trailing values are ignored). Returns spans over
 * word indices, in order.
 */
export function decodeBio(probs: Float32Array, numWords: number, labels: readonly string[], mode: BioMode = 'viterbi'): TokenSpan[] {
  checkInput(probs, numWords, labels);
  if (numWords === 0) return [];
  const s = compile(labels);
  const tags = decodeInto(probs, numWords, s, mode);
  return spansFromTags(probs, numWords, s, tags);
}

/** The chosen label index per word (before grouping); for tests and diagnostics. */
export function decodeBioTags(probs: Float32Array, numWords: number, labels: readonly string[], mode: BioMode = 'viterbi'): number[] {
  checkInput(probs, numWords, labels);
  return Array.from(decodeInto(probs, numWords, compile(labels), mode));
}

/**
 * Spans from tags already chosen (a generative decoder's answer), with the
 * same grouping and scores as `decodeBio`: `tags[w]` is a label index, `probs`
 * row-major words x labels.
 */
export function spansFromLabelIndices(probs: Float32Array, tags: ArrayLike<number>, labels: readonly string[]): TokenSpan[] {
  const n = tags.length;
  checkInput(probs, n, labels);
  const chosen = new Int32Array(n);
  for (let w = 0; w < n; w++) {
    const k = tags[w];
    if (!Number.isInteger(k) || k < 0 || k >= labels.length)
      throw new TaggerError(ErrorCodes.INFERENCE_FAILED, `tag index ${k} outside ${labels.length} labels`);
    chosen[w] = k;
  }
  return n === 0 ? [] : spansFromTags(probs, n, compile(labels), chosen);
}

/**
 * The one softmax: `cols` logits from `logits[from]` into `out[to]`,
 * max-subtracted so exp never overflows. A row of all -Infinity (every label
 * masked) becomes uniform rather than NaN. Works in place when out is logits.
 */
export function softmaxInto(logits: Float32Array, from: number, cols: number, out: Float32Array, to: number): void {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) if (logits[from + c] > max) max = logits[from + c];
  if (max === -Infinity) {
    out.fill(1 / cols, to, to + cols);
    return;
  }
  let sum = 0;
  for (let c = 0; c < cols; c++) {
    const e = Math.exp(logits[from + c] - max);
    out[to + c] = e;
    sum += e;
  }
  for (let c = 0; c < cols; c++) out[to + c] /= sum;
}
