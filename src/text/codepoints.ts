/**
 * UTF-16 <-> code point offset conversion for the output and eval edges
 * (JSON consumers and Python scorers count code points; JavaScript strings
 * count UTF-16 units). Lone surrogates count as one code point each, as
 * `Array.from` does.
 */
import { InternalError } from '../errors.js';

export interface OffsetConverter {
  /** Code point offset of a UTF-16 offset in [0, text.length]; inside a surrogate pair, the pair's own index. */
  toCodePoint(utf16: number): number;
  /** UTF-16 offset of a code point offset in [0, number of code points]. */
  toUtf16(codePoint: number): number;
}

function check(value: number, max: number, name: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    // Out-of-range offsets are pipeline bugs; clamping would hide them.
    throw new InternalError(`${name} offset ${value} outside [0, ${max}]`, { stage: 'text' });
  }
}

/**
 * O(n) setup, O(log p) per call (p = surrogate pairs); identity when the text
 * has no surrogate pairs. Keeps two small arrays rather than O(n) tables.
 */
export function makeOffsetConverter(text: string): OffsetConverter {
  const n = text.length;
  const lows: number[] = []; // UTF-16 index of each pair's low surrogate
  for (let i = 0; i < n - 1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        lows.push(i + 1);
        i++;
      }
    }
  }
  const pairs = lows.length;
  const cpCount = n - pairs;
  if (pairs === 0) {
    return {
      toCodePoint(utf16: number): number {
        check(utf16, n, 'UTF-16');
        return utf16;
      },
      toUtf16(codePoint: number): number {
        check(codePoint, n, 'code point');
        return codePoint;
      },
    };
  }
  const lowAt = Int32Array.from(lows);
  // Code point index of pair k: its high surrogate index minus the k pairs before it.
  const cpAt = new Int32Array(pairs);
  for (let k = 0; k < pairs; k++) cpAt[k] = lowAt[k] - 1 - k;

  /** Number of entries in a sorted array that are <= x. */
  const countLE = (arr: Int32Array, x: number): number => {
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (arr[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };

  return {
    toCodePoint(utf16: number): number {
      check(utf16, n, 'UTF-16');
      // Counting pairs whose low unit is <= utf16 also floors a mid-pair offset.
      return utf16 - countLE(lowAt, utf16);
    },
    toUtf16(codePoint: number): number {
      check(codePoint, cpCount, 'code point');
      // Every pair starting before this code point adds one extra unit.
      return codePoint + countLE(cpAt, codePoint - 1);
    },
  };
}
