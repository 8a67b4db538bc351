/**
 * Trains the entity-length estimators (src/route/length-estimate.ts), one per
 * dataset: hashed-feature logistic regression fitted with FTRL-Proximal (per-
 * coordinate AdaGrad-style steps, L1 for a small sparse file, L2), seeded and
 * deterministic. Hyperparameters and the decision threshold are chosen on TRAIN
 * only (k-fold out-of-fold predictions); devel is used once, for the reported
 * metrics, which go into each model file and out as one JSON line per dataset.
 *
 * Usage: node --import tsx scripts/train-length-estimator.ts [--data DIR] [--only bc5cdr|ncbi-disease|jnlpba] [--out models/length-estimator]
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { iobSpans, readIob, readStandoffDir } from '../src/eval/datasets.js';
import {
  FEATURE_TEMPLATES,
  FEATURE_VERSION,
  LENGTH_ESTIMATOR_FORMAT,
  LENGTH_ESTIMATOR_VERSION,
  LogisticLengthEstimator,
  featureBuckets,
  sigmoid,
  type DevelMetrics,
  type LengthEstimatorFile,
  type LengthEstimatorModel,
  type LengthMetrics,
} from '../src/route/length-estimate.js';
import { normalize } from '../src/text/normalize.js';
import { prepareText } from '../src/text/index.js';
import type { Sentence, WordToken } from '../src/types.js';
import { mulberry32 } from '../src/eval/random.js';

export const DATASETS = {
  bc5cdr: { dir: 'BC5CDR-IOB', format: 'iob' },
  'ncbi-disease': { dir: 'NCBI-disease-IOB', format: 'iob' },
  jnlpba: { dir: 'JNLPBA-standoff', format: 'standoff' },
} as const;
export type DatasetId = keyof typeof DATASETS;

export interface Labelled {
  sentence: Sentence;
  /** Holds a gold entity of at least minWords words. */
  long: boolean;
}

/** The relative path of a split, as recorded in the model file. */
export function splitPath(id: DatasetId, split: 'train' | 'devel'): string {
  const ds = DATASETS[id];
  return ds.format === 'iob' ? `${ds.dir}/${split}.tsv` : `${ds.dir}/${split}`;
}

/**
 * Labelled sentences built as src/eval/evaluate.ts builds them: IOB tokens are
 * the words (text normalised, offsets as if joined by single spaces); standoff
 * documents go through prepareText and an entity's length counts the pipeline's
 * word tokens overlapping it. A long standoff entity marks every sentence it
 * overlaps (one, unless it crosses a sentence split).
 */
export async function loadSplit(data: string, id: DatasetId, split: 'train' | 'devel', minWords = 3): Promise<Labelled[]> {
  const path = join(data, splitPath(id, split));
  if (DATASETS[id].format === 'iob') {
    return (await readIob(path)).map((s, index) => {
      let offset = 0;
      const tokens: WordToken[] = s.tokens.map((t) => {
        const tok = { text: normalize(t).text, start: offset, end: offset + t.length };
        offset += t.length + 1;
        return tok;
      });
      const long = iobSpans(s.tags).some((g) => g.last - g.first + 1 >= minWords);
      return { sentence: { index, start: 0, end: Math.max(0, offset - 1), tokens }, long };
    });
  }
  const out: Labelled[] = [];
  for (const doc of await readStandoffDir(path)) {
    const { sentences } = prepareText(doc.text);
    const tokens = sentences.flatMap((s) => s.tokens);
    const long = new Array<boolean>(sentences.length).fill(false);
    for (const g of doc.spans) {
      let words = 0;
      for (const t of tokens) if (t.start < g.end && t.end > g.start) words++;
      if (Math.max(1, words) < minWords) continue;
      sentences.forEach((s, k) => {
        if (s.start < g.end && s.end > g.start) long[k] = true;
      });
    }
    for (const [k, s] of sentences.entries()) out.push({ sentence: s, long: long[k] });
  }
  return out;
}

// ---------------------------------------------------------------- metrics

/** ROC AUC as the Mann-Whitney statistic, ties counted half. */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<boolean>): number {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let pos = 0;
  let rankSum = 0;
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && scores[order[j + 1]] === scores[order[i]]) j++;
    const midRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[order[k]]) {
        pos++;
        rankSum += midRank;
      }
    }
    i = j + 1;
  }
  const neg = order.length - pos;
  return pos === 0 || neg === 0 ? 0.5 : (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

export function metricsAt(scores: ArrayLike<number>, labels: ArrayLike<boolean>, threshold: number): LengthMetrics {
  let tp = 0;
  let fp = 0;
  let pos = 0;
  for (let i = 0; i < scores.length; i++) {
    const flagged = scores[i] >= threshold;
    if (labels[i]) pos++;
    if (flagged && labels[i]) tp++;
    else if (flagged) fp++;
  }
  const precision = tp + fp === 0 ? 0 : tp / (tp + fp);
  const recall = pos === 0 ? 0 : tp / pos;
  const n = scores.length;
  return {
    sentences: n,
    positives_share: n === 0 ? 0 : pos / n,
    precision,
    recall,
    f1: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall),
    auc: auc(scores, labels),
    flagged_share: n === 0 ? 0 : (tp + fp) / n,
  };
}

/** The threshold (a score present in the data) maximising F-beta; ties keep the higher threshold. */
export function bestThreshold(scores: ArrayLike<number>, labels: ArrayLike<boolean>, beta: number): number {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let pos = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i]) pos++;
  const b2 = beta * beta;
  let tp = 0;
  let best = -1;
  let bestThr = 0.5;
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && scores[order[j + 1]] === scores[order[i]]) j++;
    for (let k = i; k <= j; k++) if (labels[order[k]]) tp++;
    const flagged = j + 1;
    const f = tp === 0 ? 0 : ((1 + b2) * tp) / (flagged + b2 * pos);
    if (f > best) {
      best = f;
      bestThr = scores[order[i]];
    }
    i = j + 1;
  }
  return bestThr;
}

// ---------------------------------------------------------------- training

export interface Hyper {
  alpha: number;
  beta: number;
  l1: number;
  l2: number;
  epochs: number;
}

interface Trained {
  bias: number;
  weights: Float64Array;
}

function shuffle(xs: number[], rand: () => number): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
}

/**
 * FTRL-Proximal logistic regression (McMahan et al. 2013). The bias has its own
 * unregularised coordinate. A bucket that occurs twice in a sentence (a hash
 * collision) is updated once per occurrence, exactly as it is summed at runtime.
 */
export function trainFtrl(X: readonly Uint32Array[], y: Uint8Array, rows: readonly number[], h: Hyper, size: number, seed: number): Trained {
  const z = new Float64Array(size);
  const n = new Float64Array(size);
  let zb = 0;
  let nb = 0;
  const weight = (i: number): number => {
    const zi = z[i];
    if (Math.abs(zi) <= h.l1) return 0;
    return -(zi - Math.sign(zi) * h.l1) / ((h.beta + Math.sqrt(n[i])) / h.alpha + h.l2);
  };
  const order = [...rows];
  const rand = mulberry32(seed);
  for (let epoch = 0; epoch < h.epochs; epoch++) {
    shuffle(order, rand);
    for (const r of order) {
      const x = X[r];
      const wb = -zb / ((h.beta + Math.sqrt(nb)) / h.alpha);
      let s = wb;
      const w = new Float64Array(x.length);
      for (let k = 0; k < x.length; k++) {
        w[k] = weight(x[k]);
        s += w[k];
      }
      const g = sigmoid(s) - y[r];
      const g2 = g * g;
      for (let k = 0; k < x.length; k++) {
        const i = x[k];
        const sigma = (Math.sqrt(n[i] + g2) - Math.sqrt(n[i])) / h.alpha;
        z[i] += g - sigma * w[k];
        n[i] += g2;
      }
      const sb = (Math.sqrt(nb + g2) - Math.sqrt(nb)) / h.alpha;
      zb += g - sb * wb;
      nb += g2;
    }
  }
  const weights = new Float64Array(size);
  for (let i = 0; i < size; i++) weights[i] = weight(i);
  return { bias: -zb / ((h.beta + Math.sqrt(nb)) / h.alpha), weights };
}

export function score(t: Trained, x: Uint32Array): number {
  let s = t.bias;
  for (let k = 0; k < x.length; k++) s += t.weights[x[k]];
  return sigmoid(s);
}

/**
 * Out-of-fold probabilities: each train sentence scored by a model that never saw
 * it. Folds are contiguous blocks, not random sentences: the files keep an
 * abstract's sentences together and an abstract repeats its entities, so random
 * folds leak them and overrate the model (and favour overfitting settings).
 */
export function outOfFold(X: readonly Uint32Array[], y: Uint8Array, h: Hyper, size: number, folds: number, seed: number): Float64Array {
  const oof = new Float64Array(X.length);
  for (let f = 0; f < folds; f++) {
    const lo = Math.floor((f * X.length) / folds);
    const hi = Math.floor(((f + 1) * X.length) / folds);
    const held: number[] = [];
    const fit: number[] = [];
    for (let r = 0; r < X.length; r++) (r >= lo && r < hi ? held : fit).push(r);
    const t = trainFtrl(X, y, fit, h, size, seed + f + 1);
    for (const r of held) oof[r] = score(t, X[r]);
  }
  return oof;
}

/** Mean log-loss: the selection criterion, since it rewards calibrated probabilities as well as ranking. */
export function logLoss(p: ArrayLike<number>, y: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) {
    const q = Math.min(1 - 1e-12, Math.max(1e-12, y[i] ? p[i] : 1 - p[i]));
    s -= Math.log(q);
  }
  return s / p.length;
}

const round = (x: number, digits: number): number => Number(x.toPrecision(digits));
const r4 = (m: LengthMetrics): LengthMetrics => ({
  sentences: m.sentences,
  positives_share: round(m.positives_share, 4),
  precision: round(m.precision, 4),
  recall: round(m.recall, 4),
  f1: round(m.f1, 4),
  auc: round(m.auc, 4),
  flagged_share: round(m.flagged_share, 4),
});

// Small grid, chosen on train out-of-fold log-loss: L1 sets the sparsity (file size), alpha the step size.
// (L2 and epochs were fixed after a wider sweep on BC5CDR/NCBI train folds, where they mattered little.)
const GRID: Hyper[] = [];
for (const l1 of [2, 4, 8, 16]) for (const alpha of [0.05, 0.1]) GRID.push({ alpha, beta: 1, l1, l2: 10, epochs: 8 });
const BITS = 18;
const FOLDS = 5;
const SEED = 20240611;
const MIN_WORDS = 3;
/** Keeps each file under ~300 KB (about 17 bytes per stored weight). */
const MAX_WEIGHTS = 15000;

export async function trainDataset(data: string, id: DatasetId): Promise<LengthEstimatorFile> {
  const t0 = performance.now();
  const train = await loadSplit(data, id, 'train', MIN_WORDS);
  const size = 2 ** BITS;
  const X = train.map((l) => featureBuckets(l.sentence, BITS));
  const y = Uint8Array.from(train, (l) => (l.long ? 1 : 0));
  const labels = train.map((l) => l.long);

  // Per setting: out-of-fold predictions (for choosing) and the all-train model
  // (what ships). Settings whose model would not fit the file budget are passed
  // over, so pruning below is only a fallback, not a silent change of the chosen model.
  const all = Array.from({ length: X.length }, (_, i) => i);
  const nonzero = (t: Trained): number => t.weights.reduce((n, w) => n + (w !== 0 ? 1 : 0), 0);
  let best: { h: Hyper; oof: Float64Array; loss: number; model: Trained; fits: boolean; nz: number } | undefined;
  for (const h of GRID) {
    const oof = outOfFold(X, y, h, size, FOLDS, SEED);
    const loss = logLoss(oof, y);
    const model = trainFtrl(X, y, all, h, size, SEED);
    const nz = nonzero(model);
    const fits = nz <= MAX_WEIGHTS;
    const better = best === undefined || (fits && !best.fits) || (fits === best.fits && (fits ? loss < best.loss : nz < best.nz));
    if (better) best = { h, oof, loss, model, fits, nz };
  }
  if (best === undefined) throw new Error('empty grid');
  const threshold = round(bestThreshold(best.oof, labels, 1), 4);
  const f2Threshold = round(bestThreshold(best.oof, labels, 2), 4);

  const final = best.model;
  let kept = [...final.weights.keys()].filter((i) => final.weights[i] !== 0);
  const pruned = Math.max(0, kept.length - MAX_WEIGHTS);
  // Only if no setting fits: drop the smallest magnitudes (the devel metrics below are of the pruned model).
  if (kept.length > MAX_WEIGHTS) kept = kept.sort((a, b) => Math.abs(final.weights[b]) - Math.abs(final.weights[a])).slice(0, MAX_WEIGHTS);
  kept.sort((a, b) => a - b);
  const weights: Record<string, number> = {};
  for (const i of kept) {
    const w = round(final.weights[i], 4);
    if (w !== 0) weights[String(i)] = w;
  }
  const seconds = (performance.now() - t0) / 1000;

  const model: LengthEstimatorModel = {
    format: LENGTH_ESTIMATOR_FORMAT,
    version: LENGTH_ESTIMATOR_VERSION,
    id,
    dataset: splitPath(id, 'train'),
    target: { minWords: MIN_WORDS },
    features: { version: FEATURE_VERSION, hash: 'fnv1a32', bits: BITS, templates: [...FEATURE_TEMPLATES] },
    bias: round(final.bias, 6),
    weights,
    threshold,
    threshold_rule: `maximises F1 of ${FOLDS}-fold out-of-fold predictions on train (f2_threshold: the same for F2)`,
    training: {
      sentences: train.length,
      positives_share: round(labels.filter(Boolean).length / train.length, 4),
      algorithm: 'FTRL-Proximal logistic regression, hashed binary features',
      hyperparameters: { ...best.h, oof_log_loss: round(best.loss, 4) },
      seed: SEED,
      folds: FOLDS,
      oof: r4(metricsAt(best.oof, labels, threshold)),
      f2_threshold: f2Threshold,
      nonzero_weights: Object.keys(weights).length,
      pruned_weights: pruned,
      seconds: round(seconds, 3),
    },
  };
  // Measured on the shipped (rounded, pruned) model, exactly as loaded at runtime.
  return { ...model, devel: await develMetrics(data, id, new LogisticLengthEstimator(model), f2Threshold) };
}

async function develMetrics(data: string, id: DatasetId, est: LogisticLengthEstimator, f2Threshold: number): Promise<DevelMetrics> {
  const devel = await loadSplit(data, id, 'devel', est.model.target.minWords);
  const labels = devel.map((l) => l.long);
  for (const l of devel.slice(0, 500)) est.probLong(l.sentence); // JIT warm-up before timing
  const t0 = performance.now();
  const scores = devel.map((l) => est.probLong(l.sentence));
  const ms = (performance.now() - t0) / devel.length;
  const m = r4(metricsAt(scores, labels, est.threshold));
  const f2 = r4(metricsAt(scores, labels, f2Threshold));
  return {
    ...m,
    data: splitPath(id, 'devel'),
    threshold: est.threshold,
    ms_per_sentence: round(ms, 3),
    mean_words: round(devel.reduce((n, l) => n + l.sentence.tokens.length, 0) / devel.length, 3),
    at_f2_threshold: { threshold: f2Threshold, precision: f2.precision, recall: f2.recall, f1: f2.f1, flagged_share: f2.flagged_share },
  };
}

/** Pretty JSON with the (large) weights map on one line. */
export function formatModelFile(file: LengthEstimatorFile): string {
  const marker = '"__WEIGHTS__"';
  return JSON.stringify({ ...file, weights: '__WEIGHTS__' }, null, 2).replace(marker, JSON.stringify(file.weights)) + '\n';
}

async function main(): Promise<void> {
  const root = resolve(new URL('..', import.meta.url).pathname);
  const { values } = parseArgs({
    options: {
      data: { type: 'string', default: resolve(root, '../shared/data') },
      only: { type: 'string' },
      out: { type: 'string', default: join(root, 'models/length-estimator') },
    },
  });
  const data = values.data as string;
  const out = resolve(values.out as string);
  const ids = Object.keys(DATASETS) as DatasetId[];
  if (values.only !== undefined && !ids.includes(values.only as DatasetId)) {
    throw new Error(`--only must be one of ${ids.join(', ')}`);
  }
  await mkdir(out, { recursive: true });
  for (const id of ids) {
    if (values.only !== undefined && values.only !== id) continue;
    if (!existsSync(join(data, splitPath(id, 'train')))) {
      process.stderr.write(`skipping ${id}: ${join(data, splitPath(id, 'train'))} not found\n`);
      continue;
    }
    const file = await trainDataset(data, id);
    const text = formatModelFile(file);
    await writeFile(join(out, `${id}.json`), text);
    const { devel, training } = file;
    process.stdout.write(
      JSON.stringify({
        id,
        threshold: file.threshold,
        devel,
        train: {
          sentences: training.sentences,
          positives_share: training.positives_share,
          oof: training.oof,
          hyperparameters: training.hyperparameters,
          seconds: training.seconds,
        },
        nonzero_weights: training.nonzero_weights,
        pruned_weights: training.pruned_weights,
        file_kb: Math.round(Buffer.byteLength(text) / 102.4) / 10,
      }) + '\n',
    );
  }
}

// Runs only as a script, so the test can import loadSplit without training.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
