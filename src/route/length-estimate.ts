/**
 * Entity-length estimator: a cheap per-sentence predictor of whether a sentence
 * holds at least one entity of 3+ words, the case where the encoder is weakest
 * and the LLM route pays off. Logistic regression over hashed sparse features of
 * the sentence's word tokens; one trained file per dataset under
 * models/length-estimator/ (scripts/train-length-estimator.ts writes them).
 *
 * Runtime is pure: features come from token text only (never offsets), so the
 * same words score the same wherever they sit in a note.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ModelLoadError } from '../errors.js';
import type { Sentence } from '../types.js';

export const LENGTH_ESTIMATOR_FORMAT = 'bioner-length-estimator';
export const LENGTH_ESTIMATOR_VERSION = 1;
/** Bumped whenever sentenceFeatures() changes; a file trained on other features is refused. */
export const FEATURE_VERSION = 1;
export const FEATURE_TEMPLATES: readonly string[] = ['w', 'b', 'p3', 's3', 's4', 'sh', 'shb', 'sht', 'n:len', 'n:hy', 'n:par', 'n:dig', 'n:cap', 'n:run'];

export interface LengthEstimator {
  readonly id: string;
  /** Decision threshold shipped with the model. */
  readonly threshold: number;
  /** Probability (0..1) that the sentence holds an entity of 3+ words. */
  probLong(sentence: Sentence): number;
}

// ---------------------------------------------------------------- file format (models/length-estimator/<id>.json)

/** Zod messages that read after `field "<path>"`: "is missing" or "must be <what>", never quoting the value. */
const must = (what: string) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? 'is missing' : `must be ${what}`) });
const finite = (): z.ZodNumber => z.number(must('a finite number'));
const str = (): z.ZodString => z.string(must('a string'));
const object = <S extends z.core.$ZodLooseShape>(shape: S) => z.object(shape, must('an object'));

/** Classification metrics at the shipped threshold. */
export const LengthMetricsSchema = object({
  sentences: finite(),
  /** Share of sentences holding an entity of minWords+ words. */
  positives_share: finite(),
  precision: finite(),
  recall: finite(),
  f1: finite(),
  /** Threshold-free ranking quality. */
  auc: finite(),
  /** Share of sentences at or above the threshold (what would be routed as long). */
  flagged_share: finite(),
});
export type LengthMetrics = z.infer<typeof LengthMetricsSchema>;

export const DevelMetricsSchema = LengthMetricsSchema.extend({
  data: str(),
  threshold: finite(),
  /** Mean probLong() cost, features included, on this machine. */
  ms_per_sentence: finite(),
  mean_words: finite(),
  /** Metrics at the alternative (F2, recall-leaning) threshold from training, for policies that prefer recall. */
  at_f2_threshold: LengthMetricsSchema.omit({ sentences: true, positives_share: true, auc: true }).extend({ threshold: finite() }),
});
export type DevelMetrics = z.infer<typeof DevelMetricsSchema>;

const BUCKET_KEY = /^(0|[1-9]\d*)$/;

/** Everything scoring needs plus how it was trained; the file adds the devel metrics. */
export const LengthEstimatorModelSchema = object({
  format: z.literal(LENGTH_ESTIMATOR_FORMAT, must(`"${LENGTH_ESTIMATOR_FORMAT}"`)),
  version: z.literal(LENGTH_ESTIMATOR_VERSION, {
    error: (iss) => `must be ${LENGTH_ESTIMATOR_VERSION} (got ${typeof iss.input === 'number' ? iss.input : typeof iss.input})`,
  }),
  id: z.string(must('a non-empty string')).min(1, must('a non-empty string')),
  /** Training data, e.g. "BC5CDR-IOB/train.tsv". */
  dataset: str(),
  /** Positive = the sentence holds a gold entity of at least minWords word tokens. */
  target: object({ minWords: z.int(must('a positive integer')).min(1, must('a positive integer')) }),
  features: object({
    version: z.literal(FEATURE_VERSION, {
      error: (iss) =>
        `is ${typeof iss.input === 'number' ? iss.input : typeof iss.input}, this build computes version ${FEATURE_VERSION} features (retrain the model)`,
    }),
    hash: z.literal('fnv1a32', must('"fnv1a32"')),
    bits: z.int(must('an integer in 8..24')).min(8, must('an integer in 8..24')).max(24, must('an integer in 8..24')),
    templates: z
      .array(z.string(), must(JSON.stringify(FEATURE_TEMPLATES)))
      .refine((t) => t.join(',') === FEATURE_TEMPLATES.join(','), must(JSON.stringify(FEATURE_TEMPLATES))),
  }),
  bias: finite(),
  /** Hash bucket (decimal string) -> weight; zero weights are left out. Keys are checked against features.bits below. */
  weights: z.record(z.string(), finite(), must('an object of bucket -> weight')),
  threshold: z.number(must('a number in (0, 1)')).gt(0, must('a number in (0, 1)')).lt(1, must('a number in (0, 1)')),
  threshold_rule: str(),
  training: object({
    sentences: finite(),
    positives_share: finite(),
    algorithm: str(),
    hyperparameters: z.record(z.string(), finite(), must('an object of name -> number')),
    seed: finite(),
    folds: finite(),
    /** Out-of-fold metrics on train at the shipped threshold (what chose it). */
    oof: LengthMetricsSchema,
    /** Alternative threshold maximising out-of-fold F2. */
    f2_threshold: finite(),
    nonzero_weights: finite(),
    /** Smallest-magnitude weights dropped to bound the file size (0 when L1 alone was enough). */
    pruned_weights: finite(),
    seconds: finite(),
  }),
}).superRefine((m, ctx) => {
  // Runs once the fields parse, so bits is known: every key must address the dense table.
  const size = 2 ** m.features.bits;
  for (const k of Object.keys(m.weights)) {
    if (!BUCKET_KEY.test(k) || Number(k) >= size) {
      ctx.addIssue({ code: 'custom', path: ['weights', k], message: `key must be a bucket index in 0..${size - 1}` });
      return;
    }
  }
});
export type LengthEstimatorModel = z.infer<typeof LengthEstimatorModelSchema>;

/** The JSON format of models/length-estimator/<id>.json. */
export const LengthEstimatorFileSchema = LengthEstimatorModelSchema.safeExtend({ devel: DevelMetricsSchema });
export type LengthEstimatorFile = z.infer<typeof LengthEstimatorFileSchema>;

// Function words: a run of other tokens is a rough noun-phrase length, which is
// what a long entity looks like from the outside.
const STOPWORDS = new Set(
  'a an the of in on at to for from by with without and or but not no nor as is are was were be been being has have had do does did this that these those it its their there which who whom whose what when where while than then after before during between among into onto over under against about via per also both either neither each such only may might can could should would will shall must we our they them he she his her i you'.split(
    ' ',
  ),
);
// Punctuation that ends a noun phrase; hyphens, apostrophes, slashes and brackets occur inside entity names.
const PHRASE_BREAK = new Set([',', '.', ';', ':', '!', '?', '"']);

function bucket(n: number, edges: readonly number[]): string {
  for (const e of edges) if (n <= e) return `<=${e}`;
  return `>${edges[edges.length - 1]}`;
}
const COUNT_EDGES = [0, 1, 2, 3, 5, 8] as const;
const LENGTH_EDGES = [5, 10, 15, 20, 25, 30, 40, 60] as const;
const RUN_EDGES = [1, 2, 3, 4, 6] as const;

/** Word shape: X upper, x lower, d digit, other characters kept; runs collapsed ("IL-2R" -> "X-dX"). */
function shape(word: string): string {
  let out = '';
  let last = '';
  for (let i = 0; i < word.length && out.length < 8; i++) {
    const c = word.charCodeAt(i);
    let k: string;
    if (c >= 48 && c <= 57) k = 'd';
    else if (c >= 65 && c <= 90) k = 'X';
    else if (c >= 97 && c <= 122) k = 'x';
    else {
      const ch = word[i];
      const lower = ch.toLowerCase();
      k = lower !== ch.toUpperCase() ? (lower === ch ? 'x' : 'X') : ch;
    }
    if (k !== last) out += k;
    last = k;
  }
  return out;
}

function isWordLike(token: string): boolean {
  return /[\p{L}\p{N}]/u.test(token);
}

/**
 * The feature strings of a sentence, deduplicated (presence, not counts). Shared
 * by training and runtime; any change here must bump FEATURE_VERSION and retrain.
 */
export function sentenceFeatures(sentence: Sentence): string[] {
  const out = new Set<string>();
  const toks = sentence.tokens;
  let prevLower = '<s>';
  let prevShape = '<s>';
  let prevShape2 = '<s>';
  let hyphens = 0;
  let parens = 0;
  let digits = 0;
  let caps = 0;
  let run = 0;
  let longestRun = 0;
  for (let i = 0; i < toks.length; i++) {
    const text = toks[i].text;
    const lower = text.toLowerCase();
    const sh = shape(text);
    out.add(`w:${lower}`);
    out.add(`b:${prevLower}|${lower}`);
    if (lower.length >= 4) out.add(`s3:${lower.slice(-3)}`);
    if (lower.length >= 5) {
      out.add(`p3:${lower.slice(0, 3)}`);
      out.add(`s4:${lower.slice(-4)}`);
    }
    out.add(`sh:${sh}`);
    out.add(`shb:${prevShape}|${sh}`);
    out.add(`sht:${prevShape2}|${prevShape}|${sh}`);
    prevLower = lower;
    prevShape2 = prevShape;
    prevShape = sh;
    // A hyphen between two words joins them ("TNF - alpha"): the tokens are split by the word tokenizer.
    if (text === '-' && i > 0 && i + 1 < toks.length) hyphens++;
    else if (text === '(' || text === '[') parens++;
    if (/\d/.test(text)) digits++;
    // The first word is capitalised by sentence case, not by being a name.
    if (i > 0 && sh.charCodeAt(0) === 88 /* X */) caps++;
    if (PHRASE_BREAK.has(text) || STOPWORDS.has(lower)) {
      run = 0;
    } else if (isWordLike(text)) {
      run++;
      if (run > longestRun) longestRun = run;
    }
  }
  out.add(`b:${prevLower}|</s>`);
  out.add(`n:len:${bucket(toks.length, LENGTH_EDGES)}`);
  out.add(`n:hy:${bucket(hyphens, COUNT_EDGES)}`);
  out.add(`n:par:${bucket(parens, COUNT_EDGES)}`);
  out.add(`n:dig:${bucket(digits, COUNT_EDGES)}`);
  out.add(`n:cap:${bucket(caps, COUNT_EDGES)}`);
  out.add(`n:run:${bucket(longestRun, RUN_EDGES)}`);
  return [...out];
}

/** 32-bit FNV-1a over UTF-16 code units: stable across runs and platforms, unlike any built-in hash. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Hash buckets of a sentence's features (duplicates possible after hashing; each adds its weight). */
export function featureBuckets(sentence: Sentence, bits: number): Uint32Array {
  const feats = sentenceFeatures(sentence);
  const mask = bits >= 32 ? 0xffffffff : (1 << bits) - 1;
  const out = new Uint32Array(feats.length);
  for (let i = 0; i < feats.length; i++) out[i] = fnv1a(feats[i]) & mask;
  return out;
}

export function sigmoid(z: number): number {
  // Split by sign so exp never overflows.
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

export class LogisticLengthEstimator implements LengthEstimator {
  readonly id: string;
  readonly threshold: number;
  readonly model: LengthEstimatorModel;
  private readonly bits: number;
  private readonly bias: number;
  private readonly weights: Float32Array;

  /** Takes a whole file or, while training, the model before its devel metrics exist. */
  constructor(file: LengthEstimatorModel) {
    validateModel(file, `length estimator "${String(file.id)}"`);
    this.model = file;
    this.id = file.id;
    this.threshold = file.threshold;
    this.bits = file.features.bits;
    this.bias = file.bias;
    // Dense table: one array read per feature at runtime instead of a Map lookup.
    this.weights = new Float32Array(2 ** this.bits);
    for (const [k, w] of Object.entries(file.weights)) this.weights[Number(k)] = w;
  }

  probLong(sentence: Sentence): number {
    if (sentence.tokens.length === 0) return sigmoid(this.bias);
    const buckets = featureBuckets(sentence, this.bits);
    let logit = this.bias;
    for (let i = 0; i < buckets.length; i++) logit += this.weights[buckets[i]];
    return sigmoid(logit);
  }

  isLong(sentence: Sentence): boolean {
    return this.probLong(sentence) >= this.threshold;
  }
}

/** The first issue as `<source>: field "<path>" <why>`, the shape every estimator error has. */
function fileError(source: string, error: z.ZodError): ModelLoadError {
  const issue = error.issues[0];
  if (issue.path.length === 0) return new ModelLoadError(`${source}: not a JSON object`);
  return new ModelLoadError(`${source}: field "${issue.path.map(String).join('.')}" ${issue.message}`);
}

/** Checks everything scoring relies on; the message names the offending field. */
function validateModel(value: unknown, source: string): asserts value is LengthEstimatorModel {
  const parsed = LengthEstimatorModelSchema.safeParse(value);
  if (!parsed.success) throw fileError(source, parsed.error);
}

/** Checks a whole file: the model and its devel metrics. */
export function validateLengthEstimatorFile(value: unknown, source: string): asserts value is LengthEstimatorFile {
  const parsed = LengthEstimatorFileSchema.safeParse(value);
  if (!parsed.success) throw fileError(source, parsed.error);
}

/** Reads and validates a trained estimator file; throws ModelLoadError naming the problem. */
export async function loadLengthEstimator(path: string): Promise<LogisticLengthEstimator> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ModelLoadError(`cannot read length estimator ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`length estimator ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  validateLengthEstimatorFile(value, `length estimator ${path}`);
  return new LogisticLengthEstimator(value);
}
