/**
 * Strict entity-level scoring, as conlleval and seqeval count: a prediction counts
 * only with exact start, end and label, and every prediction counts. A label the
 * gold data never uses is a false positive each time it is predicted (a
 * Chemical+Disease model on NCBI-disease loses precision for its Chemical spans);
 * it shows in `by_label` with zero support. Dropping such predictions would
 * report a score no standard tool reproduces.
 */

export interface EvalSpan {
  start: number;
  end: number;
  label: string;
  /**
   * Entity length in tokens: the pipeline's word split (bucketed as 1, 2, 3+).
   * The field keeps its old name because src/eval/router-eval.ts builds spans too.
   */
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

function bucketIndex(tokens: number): number {
  return tokens <= 1 ? 0 : tokens === 2 ? 1 : 2;
}

/**
 * Counts for one label. Length buckets (in tokens) are counted on each side with
 * that side's own length: precision per bucket is over predicted spans of that length, recall
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
  private readonly listed: Set<string>;

  /**
   * `labels` are listed in `by_label` even when neither side has them (e.g. a
   * model's whole label set). They never restrict scoring: every gold and
   * predicted label is scored.
   */
  constructor(labels: Iterable<string> = []) {
    this.listed = new Set(labels);
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
    const labels = [...new Set([...this.listed, ...this.counts.keys()])].sort();
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
