import { performance } from 'node:perf_hooks';
import type { Tagger } from '../taggers/types.js';
import { toEntitySpans } from '../taggers/types.js';
import { normalize } from '../text/normalize.js';
import { prepareText } from '../text/index.js';
import type { Sentence, WordToken } from '../types.js';
import { iobSpans, readIob, readStandoffDir } from './datasets.js';
import { StrictScorer, type EvalResult, type EvalSpan } from './scorer.js';

export interface EvalReport extends EvalResult {
  sentences: number;
  /** Word tokens tagged (the unit of the router's per-token cost). */
  words: number;
  documents: number;
  sentences_per_s: number;
  tagging_seconds: number;
}

/** Sentences tagged per call: enough to fill the encoder's batches. */
const CHUNK = 256;

/**
 * IOB data (BC5CDR, NCBI-disease): sentences and tokens are given, so the given
 * tokens are the words (their text normalised as in the pipeline); spans are
 * compared over token indices.
 */
export async function evaluateIob(tagger: Tagger, path: string): Promise<EvalReport> {
  const data = await readIob(path);
  const scorer = new StrictScorer();
  let taggingMs = 0;
  for (let from = 0; from < data.length; from += CHUNK) {
    const chunk = data.slice(from, from + CHUNK);
    const sentences: Sentence[] = chunk.map((s, index) => {
      let offset = 0;
      const tokens: WordToken[] = s.tokens.map((t) => {
        const tok = { text: normalize(t).text, start: offset, end: offset + t.length };
        offset += t.length + 1;
        return tok;
      });
      return { index, start: 0, end: Math.max(0, offset - 1), tokens };
    });
    const t0 = performance.now();
    const predicted = await tagger.tagSentences(sentences);
    taggingMs += performance.now() - t0;
    chunk.forEach((s, i) => {
      const gold: EvalSpan[] = iobSpans(s.tags).map((g) => ({ start: g.first, end: g.last + 1, label: g.label, words: g.last - g.first + 1 }));
      const pred: EvalSpan[] = predicted[i].map((p) => ({ start: p.first, end: p.last + 1, label: p.label, words: p.last - p.first + 1 }));
      scorer.add(gold, pred);
    });
  }
  return report(scorer.result(), data.length, data.length, data.reduce((n, s) => n + s.tokens.length, 0), taggingMs);
}

/**
 * Standoff data (JNLPBA): raw documents go through the same text stage as the
 * pipeline (normalise, sentences, words) and spans are compared by character
 * offsets, so offsets are tested end to end. Entity length in words counts the
 * pipeline's word tokens inside the span.
 */
export async function evaluateStandoff(tagger: Tagger, dir: string): Promise<EvalReport> {
  const docs = await readStandoffDir(dir);
  const scorer = new StrictScorer();
  let taggingMs = 0;
  let sentenceCount = 0;
  let wordCount = 0;
  for (const doc of docs) {
    const prepared = prepareText(doc.text);
    const t0 = performance.now();
    const perSentence = await tagger.tagSentences(prepared.sentences);
    taggingMs += performance.now() - t0;
    sentenceCount += prepared.sentences.length;
    const tokens = prepared.sentences.flatMap((s) => s.tokens);
    wordCount += tokens.length;
    const wordsIn = (start: number, end: number): number => {
      let n = 0;
      for (const t of tokens) if (t.start < end && t.end > start) n++;
      return Math.max(1, n);
    };
    const gold: EvalSpan[] = doc.spans.map((g) => ({ start: g.start, end: g.end, label: g.label, words: wordsIn(g.start, g.end) }));
    const pred: EvalSpan[] = toEntitySpans(prepared.sentences, perSentence, tagger.route).map((p) => ({ start: p.start, end: p.end, label: p.label, words: wordsIn(p.start, p.end) }));
    scorer.add(gold, pred);
  }
  return report(scorer.result(), docs.length, sentenceCount, wordCount, taggingMs);
}

function report(result: EvalResult, documents: number, sentences: number, words: number, taggingMs: number): EvalReport {
  return { ...result, documents, sentences, words, tagging_seconds: taggingMs / 1000, sentences_per_s: taggingMs > 0 ? sentences / (taggingMs / 1000) : 0 };
}
