/**
 * Strict entity-level scoring: a prediction counts only with exact start, end and
 * label. Only labels that occur in the gold data are scored; predictions with any
 * other label are ignored (a Chemical+Disease model on NCBI-disease is scored on
 * Disease only). Gold labels are known only after the last document, so counts are
 * kept per label and resolved in `result()`, unless the constructor is given them.
 */

export interface EvalSpan {
  start: number;
  end: number;
  label: string;
  /** Entity length in words (bucketed as 1, 2, 3+). */
  words: number;
}

export interface PRF {
  precision: number;
  recall: number;
  f1: number;
  tp: number;
  fp: number;
  fn: number;
}

export type LengthBucket = '1' | '2' | '3+';
export type ScoredPRF = PRF & { support: number };

export interface EvalResult extends PRF {
  by_label: Record<string, ScoredPRF>;
  by_length: Record<LengthBucket, ScoredPRF>;
}

const BUCKETS: readonly LengthBucket[] = ['1', '2', '3+'];

function bucketIndex(words: number): number {
  return words <= 1 ? 0 : words === 2 ? 1 : 2;
}

/**
 * Counts for one label. Length buckets are counted on each side with that side's
 * own `words`: precision per bucket is over predicted spans of that length, recall
 * over gold spans of that length.
 */
interface LabelCounts {
  tp: number;
  pred: number;
  gold: number;
  predByLen: [number, number, number];
  tpPredByLen: [number, number, number];
  goldByLen: [number, number, number];
  tpGoldByLen: [number, number, number];
}

function emptyCounts(): LabelCounts {
  return { tp: 0, pred: 0, gold: 0, predByLen: [0, 0, 0], tpPredByLen: [0, 0, 0], goldByLen: [0, 0, 0], tpGoldByLen: [0, 0, 0] };
}

/** P/R/F1 with 0 for empty denominators (never NaN). */
export function prf(tp: number, pred: number, gold: number): PRF {
  const precision = pred === 0 ? 0 : tp / pred;
  const recall = gold === 0 ? 0 : tp / gold;
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { precision, recall, f1, tp, fp: pred - tp, fn: gold - tp };
}

function keyOf(s: EvalSpan): string {
  return `${s.start}:${s.end}:${s.label}`;
}

/** Drops exact (start, end, label) repeats: a span predicted twice is one prediction. */
function dedupe(spans: readonly EvalSpan[]): Map<string, EvalSpan> {
  const m = new Map<string, EvalSpan>();
  for (const s of spans) if (!m.has(keyOf(s))) m.set(keyOf(s), s);
  return m;
}

export class StrictScorer {
  private readonly counts = new Map<string, LabelCounts>();
  private readonly fixedLabels: Set<string> | undefined;

  /** `goldLabels`, when given, is the exact set of labels scored (listed even with no support). */
  constructor(goldLabels?: Iterable<string>) {
    this.fixedLabels = goldLabels === undefined ? undefined : new Set(goldLabels);
  }

  private countsFor(label: string): LabelCounts {
    let c = this.counts.get(label);
    if (c === undefined) {
      c = emptyCounts();
      this.counts.set(label, c);
    }
    return c;
  }

  /** Adds one document (or sentence); span coordinates only need to be consistent between gold and pred. */
  add(gold: readonly EvalSpan[], pred: readonly EvalSpan[]): void {
    const g = dedupe(gold);
    const p = dedupe(pred);
    for (const [key, s] of g) {
      const c = this.countsFor(s.label);
      const b = bucketIndex(s.words);
      c.gold++;
      c.goldByLen[b]++;
      if (p.has(key)) c.tpGoldByLen[b]++;
    }
    for (const [key, s] of p) {
      const c = this.countsFor(s.label);
      const b = bucketIndex(s.words);
      c.pred++;
      c.predByLen[b]++;
      if (g.has(key)) {
        c.tp++;
        c.tpPredByLen[b]++;
      }
    }
  }

  result(): EvalResult {
    const scored = this.fixedLabels ?? new Set([...this.counts].filter(([, c]) => c.gold > 0).map(([l]) => l));
    const labels = [...scored].sort();
    const total = emptyCounts();
    const by_label: Record<string, ScoredPRF> = {};
    for (const label of labels) {
      const c = this.counts.get(label) ?? emptyCounts();
      by_label[label] = { ...prf(c.tp, c.pred, c.gold), support: c.gold };
      total.tp += c.tp;
      total.pred += c.pred;
      total.gold += c.gold;
      for (let b = 0; b < 3; b++) {
        total.predByLen[b] += c.predByLen[b];
        total.tpPredByLen[b] += c.tpPredByLen[b];
        total.goldByLen[b] += c.goldByLen[b];
        total.tpGoldByLen[b] += c.tpGoldByLen[b];
      }
    }
    const by_length = {} as Record<LengthBucket, ScoredPRF>;
    BUCKETS.forEach((name, b) => {
      const precision = total.predByLen[b] === 0 ? 0 : total.tpPredByLen[b] / total.predByLen[b];
      const recall = total.goldByLen[b] === 0 ? 0 : total.tpGoldByLen[b] / total.goldByLen[b];
      const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
      by_length[name] = {
        precision,
        recall,
        f1,
        tp: total.tpGoldByLen[b],
        fp: total.predByLen[b] - total.tpPredByLen[b],
        fn: total.goldByLen[b] - total.tpGoldByLen[b],
        support: total.goldByLen[b],
      };
    });
    return { ...prf(total.tp, total.pred, total.gold), by_label, by_length };
  }
}
