import { open, type FileHandle } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { DataFormatError } from '../errors.js';
import type { Tagger } from '../taggers/types.js';
import { toEntitySpans } from '../taggers/types.js';
import { normalize } from '../text/normalize.js';
import { prepareText } from '../text/index.js';
import type { Sentence, WordToken } from '../types.js';
import { chunkTag, iob2Tags, iobSpans, readIob, readStandoffDir, type IobSentence } from './datasets.js';
import { StrictScorer, type EvalResult, type EvalSpan } from './scorer.js';

export interface EvalReport extends EvalResult {
  sentences: number;
  /** Tokens tagged: the pipeline's word split, the unit of the router's per-token cost. */
  tokens: number;
  documents: number;
  sentences_per_s: number;
  tagging_seconds: number;
}

/** Sentences tagged per call: enough to fill the encoder's batches. */
const CHUNK = 256;

export interface IobEvalOptions {
  /** Path of a conlleval input file to write: `token gold pred` per token, a blank line after each sentence. */
  predictions?: string;
}

// Python's str.split() also splits on these; conlleval.pl splits on the space.
// biome-ignore lint/suspicious/noControlCharactersInRegex: these separators are exactly what Python's split() splits on.
const SPLITS = /[\s\x1c-\x1f\x85]/g;

/**
 * A token as one conlleval field: whitespace inside it would add fields, so it
 * becomes `_`; a token `-X-` is conlleval's sentence boundary, so it is escaped.
 */
export function conllToken(token: string): string {
  const t = token.replace(SPLITS, '_');
  return t === '-X-' ? '_-X-' : t;
}

/**
 * One sentence as conlleval reads it. Gold tags keep the file's scheme (so
 * conlleval re-reads the chunks itself), with `L-`/`U-` written as `E-`/`S-`,
 * the letters conlleval's IOBES rules know; predictions are IOB2.
 */
export function conllSentence(tokens: readonly string[], goldTags: readonly string[], predTags: readonly string[]): string {
  const tag = (x: string): string => {
    const c = chunkTag(x);
    return c.prefix === 'O' ? 'O' : `${c.prefix}-${c.type}`;
  };
  return tokens.map((t, i) => `${conllToken(t)} ${tag(goldTags[i])} ${predTags[i]}\n`).join('') + '\n';
}

async function openPredictions(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'w');
  } catch (err) {
    throw new DataFormatError(`cannot write predictions to ${path}`, { cause: err });
  }
}

/**
 * IOB data (BC5CDR, NCBI-disease): sentences and tokens are given, so the given
 * tokens are the pipeline's tokens (their text normalised as in the pipeline);
 * spans are compared over token indices.
 */
export async function evaluateIob(tagger: Tagger, path: string, options: IobEvalOptions = {}): Promise<EvalReport> {
  const data = await readIob(path);
  // Opened before tagging, so a bad path fails before minutes of work.
  const out = options.predictions === undefined ? undefined : { path: options.predictions, handle: await openPredictions(options.predictions) };
  try {
    return await scoreIob(tagger, data, out);
  } finally {
    await out?.handle.close();
  }
}

async function scoreIob(tagger: Tagger, data: readonly IobSentence[], out: { path: string; handle: FileHandle } | undefined): Promise<EvalReport> {
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
    let lines = '';
    chunk.forEach((s, i) => {
      const gold: EvalSpan[] = iobSpans(s.tags).map((g) => ({ start: g.first, end: g.last + 1, label: g.label, words: g.last - g.first + 1 }));
      const pred: EvalSpan[] = predicted[i].map((p) => ({ start: p.first, end: p.last + 1, label: p.label, words: p.last - p.first + 1 }));
      scorer.add(gold, pred);
      if (out !== undefined) lines += conllSentence(s.tokens, s.tags, iob2Tags(s.tokens.length, predicted[i]));
    });
    if (out !== undefined) {
      try {
        await out.handle.write(lines);
      } catch (err) {
        throw new DataFormatError(`cannot write predictions to ${out.path}`, { cause: err });
      }
    }
  }
  return report(
    scorer.result(),
    data.length,
    data.length,
    data.reduce((n, s) => n + s.tokens.length, 0),
    taggingMs,
  );
}

/**
 * Standoff data (JNLPBA): raw documents go through the same text stage as the
 * pipeline (normalise, sentences, tokens) and spans are compared by character
 * offsets, so offsets are tested end to end. Entity length counts the
 * pipeline's tokens inside the span.
 */
export async function evaluateStandoff(tagger: Tagger, dir: string): Promise<EvalReport> {
  const docs = await readStandoffDir(dir);
  const scorer = new StrictScorer();
  let taggingMs = 0;
  let sentenceCount = 0;
  let tokenCount = 0;
  for (const doc of docs) {
    const prepared = prepareText(doc.text);
    const t0 = performance.now();
    const perSentence = await tagger.tagSentences(prepared.sentences);
    taggingMs += performance.now() - t0;
    sentenceCount += prepared.sentences.length;
    const tokens = prepared.sentences.flatMap((s) => s.tokens);
    tokenCount += tokens.length;
    const tokensIn = (start: number, end: number): number => {
      let n = 0;
      for (const t of tokens) if (t.start < end && t.end > start) n++;
      return Math.max(1, n);
    };
    const gold: EvalSpan[] = doc.spans.map((g) => ({ start: g.start, end: g.end, label: g.label, words: tokensIn(g.start, g.end) }));
    const pred: EvalSpan[] = toEntitySpans(prepared.sentences, perSentence, tagger.route).map((p) => ({
      start: p.start,
      end: p.end,
      label: p.label,
      words: tokensIn(p.start, p.end),
    }));
    scorer.add(gold, pred);
  }
  return report(scorer.result(), docs.length, sentenceCount, tokenCount, taggingMs);
}

function report(result: EvalResult, documents: number, sentences: number, tokens: number, taggingMs: number): EvalReport {
  return { ...result, documents, sentences, tokens, tagging_seconds: taggingMs / 1000, sentences_per_s: taggingMs > 0 ? sentences / (taggingMs / 1000) : 0 };
}
