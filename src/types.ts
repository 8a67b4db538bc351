/**
 * Small shared types used across stages. Offsets inside the pipeline are UTF-16
 * code-unit offsets into the ORIGINAL note text (what JavaScript strings index);
 * they are converted to Unicode code points only at the output and eval edges.
 */

/** A word token: `text` is the normalised form fed to taggers; start/end are UTF-16 offsets into the original text. */
export interface WordToken {
  text: string;
  start: number;
  end: number;
}

export interface Sentence {
  /** 0-based index of the sentence within its note. */
  index: number;
  start: number;
  end: number;
  tokens: WordToken[];
}

export type Route = 'encoder' | 'llm' | 'encoder_fallback';

/** An entity over a sentence's word tokens, before mapping to characters. */
export interface TokenSpan {
  /** Index of the first token (inclusive). */
  first: number;
  /** Index of the last token (inclusive). */
  last: number;
  label: string;
  /** Mean probability of the span's tags. */
  score: number;
}

/** An entity in the original text (UTF-16 offsets, end exclusive). */
export interface EntitySpan {
  start: number;
  end: number;
  label: string;
  score: number;
  sentenceIndex: number;
  route: Route;
}
