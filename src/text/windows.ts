/**
 * Plans encoder windows over a sequence of words when their sub-word pieces
 * exceed the model's length limit.
 */
import { InternalError } from '../errors.js';

/** Word indices, end exclusive. Predictions for words in [ownStart, ownEnd) are read from this window. */
export interface TextWindow {
  start: number;
  end: number;
  ownStart: number;
  ownEnd: number;
}

/**
 * Greedy windows: each takes as many words as fit in `maxPieces` (the model
 * maximum minus [CLS]/[SEP]); the next starts up to `overlapWords` words
 * earlier, capped at half the previous window so windows always advance, and
 * moved forward until its first new word fits. Overlaps are split at their
 * middle so every owned word has context on both sides. `own` ranges
 * partition [0, n) and are never empty.
 *
 * A word with more pieces than `maxPieces` gets a window of its own (no
 * overlap); the caller must truncate that word's pieces.
 */
export function planWindows(pieceCounts: readonly number[], maxPieces: number, overlapWords: number): TextWindow[] {
  if (!Number.isInteger(maxPieces) || maxPieces < 1) throw new InternalError(`maxPieces must be a positive integer, got ${maxPieces}`, { stage: 'text' });
  if (!Number.isInteger(overlapWords) || overlapWords < 0)
    throw new InternalError(`overlapWords must be a non-negative integer, got ${overlapWords}`, { stage: 'text' });
  const n = pieceCounts.length;
  if (n === 0) return [];
  const prefix = new Float64Array(n + 1);
  for (let k = 0; k < n; k++) {
    const c = pieceCounts[k];
    if (!Number.isInteger(c) || c < 0) throw new InternalError(`pieceCounts[${k}] must be a non-negative integer, got ${c}`, { stage: 'text' });
    prefix[k + 1] = prefix[k] + c;
  }

  const spans: Array<[number, number]> = [];
  let s = 0;
  for (;;) {
    let e = s;
    while (e < n && prefix[e + 1] - prefix[s] <= maxPieces) e++;
    if (e === s) e = s + 1; // oversized word: alone
    spans.push([s, e]);
    if (e >= n) break;
    let next = Math.max(e - overlapWords, s + Math.ceil((e - s) / 2));
    while (next < e && prefix[e + 1] - prefix[next] > maxPieces) next++;
    s = next;
  }

  const out: TextWindow[] = [];
  let ownStart = 0;
  for (let k = 0; k < spans.length; k++) {
    const [start, end] = spans[k];
    const ownEnd = k + 1 < spans.length ? Math.floor((spans[k + 1][0] + end) / 2) : n;
    out.push({ start, end, ownStart, ownEnd });
    ownStart = ownEnd;
  }
  return out;
}
