/**
 * Word tokens by the BERT "basic tokenizer" rule, with offsets: split on
 * whitespace, every punctuation character and CJK ideograph is its own token,
 * everything else (letters, digits, symbols, emoji, combining marks) groups
 * into words. Sub-word tokenisers then encode each word on its own.
 */

import type { TextSpan } from './sentences.js';

const WORD = 0;
const PUNCT = 1;
const SPACE = 2;
const CJK = 3;

// BERT counts all ASCII non-alphanumeric printables as punctuation ($, +, <, ^, ` ...).
const ASCII_CLASS = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  if (c <= 0x20 || c === 0x7f) ASCII_CLASS[c] = SPACE;
  else if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) ASCII_CLASS[c] = PUNCT;
  else ASCII_CLASS[c] = WORD;
}

const PUNCT_RE = /\p{P}/u;
// Controls separate like spaces; format characters (ZWJ ...) stay inside words as BERT drops them.
const SPACE_RE = /[\s\p{Cc}]/u;

/** BERT's _is_chinese_char ranges (CJK unified ideographs and extensions). */
function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

function computeClass(cp: number): number {
  if (isCjk(cp)) return CJK;
  const ch = String.fromCodePoint(cp);
  if (SPACE_RE.test(ch)) return SPACE;
  if (PUNCT_RE.test(ch)) return PUNCT;
  return WORD;
}

// Lazily filled class cache for the BMP (class + 1; 0 = not yet computed), so each
// non-ASCII character pays for a regex test once per process.
const bmpCache = new Uint8Array(0x10000);
const astralCache = new Map<number, number>();

function classOf(cp: number): number {
  if (cp < 0x10000) {
    const v = bmpCache[cp];
    if (v !== 0) return v - 1;
    const k = computeClass(cp);
    bmpCache[cp] = k + 1;
    return k;
  }
  let k = astralCache.get(cp);
  if (k === undefined) {
    k = computeClass(cp);
    astralCache.set(cp, k);
  }
  return k;
}

/**
 * Word tokens of text[start, end) as UTF-16 offsets into `text`. Iterates by
 * code point, so surrogate pairs stay together (a pair cut by `end` is read
 * as two lone units).
 */
export function wordTokens(text: string, start = 0, end = text.length): TextSpan[] {
  const out: TextSpan[] = [];
  let wordStart = -1;
  let i = Math.max(0, start);
  const stop = Math.min(end, text.length);
  while (i < stop) {
    const c = text.charCodeAt(i);
    let cls: number;
    let w = 1;
    if (c < 0x80) {
      cls = ASCII_CLASS[c];
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < stop) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        w = 2;
        cls = classOf(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
      } else {
        cls = WORD;
      }
    } else {
      cls = classOf(c);
    }
    if (cls === WORD) {
      if (wordStart < 0) wordStart = i;
    } else {
      if (wordStart >= 0) {
        out.push({ start: wordStart, end: i });
        wordStart = -1;
      }
      if (cls !== SPACE) out.push({ start: i, end: i + w });
    }
    i += w;
  }
  if (wordStart >= 0) out.push({ start: wordStart, end: stop });
  return out;
}
