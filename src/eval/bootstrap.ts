/**
 * Strict F1 per entity-length bucket from per-unit counts (a unit is a
 * sentence or a document), and percentile-bootstrap 95% intervals over
 * units, seeded so a calibration replays exactly. Counting follows
 * StrictScorer (scorer.ts): exact (start, end, label) matches, repeats
 * dropped, each side bucketed by its own length; summing the units' counts
 * gives StrictScorer's micro-averaged figures.
 */
import { mulberry32 } from './random.js';
import type { EvalSpan } from './scorer.js';

export const F1_BUCKETS = ['1', '2', '3+', 'all'] as const;
export type F1Bucket = (typeof F1_BUCKETS)[number];

/** Per bucket (F1_BUCKETS order): true positives among gold, gold, true positives among predicted, predicted. */
const FIELDS = 4;
export const COUNT_WIDTH = F1_BUCKETS.length * FIELDS;

const bucketOf = (tokens: number): number => (tokens <= 1 ? 0 : tokens === 2 ? 1 : 2);
const keyOf = (s: EvalSpan): string => `${s.start}:${s.end}:${s.label}`;

/** One unit's counts: a Float64Array of COUNT_WIDTH. */
export function unitCounts(gold: readonly EvalSpan[], pred: readonly EvalSpan[]): Float64Array {
  const out = new Float64Array(COUNT_WIDTH);
  const g = new Map(gold.map((s) => [keyOf(s), s]));
  const p = new Map(pred.map((s) => [keyOf(s), s]));
  const ALL = 3 * FIELDS;
  for (const [key, s] of g) {
    const b = bucketOf(s.words) * FIELDS;
    const hit = p.has(key) ? 1 : 0;
    out[b] += hit;
    out[b + 1]++;
    out[ALL] += hit;
    out[ALL + 1]++;
  }
  for (const [key, s] of p) {
    const b = bucketOf(s.words) * FIELDS;
    const hit = g.has(key) ? 1 : 0;
    out[b + 2] += hit;
    out[b + 3]++;
    out[ALL + 2] += hit;
    out[ALL + 3]++;
  }
  return out;
}

/** F1 of one bucket from summed counts; null when the bucket has neither gold nor predicted spans. */
export function bucketF1(counts: Float64Array, bucket: number): number | null {
  const o = bucket * FIELDS;
  const [tpGold, gold, tpPred, pred] = [counts[o], counts[o + 1], counts[o + 2], counts[o + 3]];
  if (gold === 0 && pred === 0) return null;
  const precision = pred === 0 ? 0 : tpPred / pred;
  const recall = gold === 0 ? 0 : tpGold / gold;
  return precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
}

export function sumCounts(units: readonly Float64Array[]): Float64Array {
  const out = new Float64Array(COUNT_WIDTH);
  for (const u of units) for (let k = 0; k < COUNT_WIDTH; k++) out[k] += u[k];
  return out;
}

/** Linear-interpolated quantile of sorted values. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

export type Interval = [number, number];

export interface BootstrapResult {
  /** Per route (in the order given), per bucket: the 2.5% and 97.5% percentiles of F1; null where no resample could score the bucket. */
  f1: Array<Record<F1Bucket, Interval | null>>;
  /** Per bucket: the interval of F1(route 1) - F1(route 0), from the same resamples (paired). */
  gain: Record<F1Bucket, Interval | null> | null;
  resamples: number;
}

/**
 * Percentile bootstrap over units: `resamples` times, draw as many units as
 * there are, with replacement (the same draw for every route, so the gain's
 * interval is paired), sum their counts and score each bucket.
 */
export function bootstrapF1(routes: ReadonlyArray<readonly Float64Array[]>, resamples: number, seed: number): BootstrapResult {
  const n = routes[0]?.length ?? 0;
  const random = mulberry32(seed);
  const samples = routes.map(() => F1_BUCKETS.map((): number[] => []));
  const gains = F1_BUCKETS.map((): number[] => []);
  const sums = routes.map(() => new Float64Array(COUNT_WIDTH));
  for (let r = 0; r < resamples && n > 0; r++) {
    for (const s of sums) s.fill(0);
    for (let i = 0; i < n; i++) {
      const u = Math.floor(random() * n);
      for (const [k, route] of routes.entries()) {
        const c = route[u];
        const s = sums[k];
        for (let j = 0; j < COUNT_WIDTH; j++) s[j] += c[j];
      }
    }
    F1_BUCKETS.forEach((_, b) => {
      const f = sums.map((s) => bucketF1(s, b));
      f.forEach((v, k) => {
        if (v !== null) samples[k][b].push(v);
      });
      if (f.length >= 2 && f[0] !== null && f[1] !== null) gains[b].push(f[1] - f[0]);
    });
  }
  const interval = (values: number[]): Interval | null => {
    if (values.length === 0) return null;
    values.sort((a, b) => a - b);
    return [quantile(values, 0.025), quantile(values, 0.975)];
  };
  const perBucket = (lists: number[][]): Record<F1Bucket, Interval | null> =>
    Object.fromEntries(F1_BUCKETS.map((name, b) => [name, interval(lists[b])])) as Record<F1Bucket, Interval | null>;
  return { f1: samples.map(perBucket), gain: routes.length >= 2 ? perBucket(gains) : null, resamples };
}
