/**
 * Text stage: original note -> normalised text -> sentences of word tokens
 * whose offsets point into the ORIGINAL text (UTF-16 units, end exclusive).
 */

import type { Sentence, WordToken } from '../types.js';
import { mapSpan, normalize } from './normalize.js';
import { splitSentences } from './sentences.js';
import { wordTokens } from './tokens.js';

export { normalize, mapSpan } from './normalize.js';
export type { Normalized } from './normalize.js';
export { splitSentences } from './sentences.js';
export type { TextSpan } from './sentences.js';
export { wordTokens } from './tokens.js';
export { makeOffsetConverter } from './codepoints.js';
export type { OffsetConverter } from './codepoints.js';
export { planWindows } from './windows.js';
export type { TextWindow } from './windows.js';

export interface PreparedText {
  original: string;
  normalized: string;
  sentences: Sentence[];
}

/**
 * Normalises, splits into sentences and word tokens. `WordToken.text` is the
 * normalised form; all offsets (sentences and tokens) are into `original`.
 * Sentences without tokens are dropped; `index` counts the kept ones from 0.
 */
export function prepareText(original: string): PreparedText {
  const { text, toOriginal } = normalize(original);
  const sentences: Sentence[] = [];
  for (const span of splitSentences(text)) {
    const spans = wordTokens(text, span.start, span.end);
    if (spans.length === 0) continue;
    const tokens: WordToken[] = new Array(spans.length);
    for (let k = 0; k < spans.length; k++) {
      const t = spans[k];
      const o = mapSpan(toOriginal, t.start, t.end);
      tokens[k] = { text: text.slice(t.start, t.end), start: o.start, end: o.end };
    }
    // From the tokens, so the bounds are tight even if the span's edges were
    // whitespace or removed characters in the original.
    sentences.push({ index: sentences.length, start: tokens[0].start, end: tokens[tokens.length - 1].end, tokens });
  }
  return { original, normalized: text, sentences };
}
