import type { EntitySpan, Route, Sentence, TokenSpan } from '../types.js';

export interface ModelInfo {
  /** Model name, e.g. bc5cdr-encoder (config.json bioner.name, else _name_or_path, else the directory name). */
  id: string;
  version: string;
  /** Entity types the model can emit (without B-/I-). */
  entityTypes: string[];
}

export interface TagOptions {
  /**
   * Aborted when the caller stops waiting (the note's LLM budget is spent).
   * Queued work is dropped and remote requests are cancelled; the call then
   * rejects with the abort reason.
   */
  signal?: AbortSignal;
  /**
   * Served model name for this call (the remote adapters' `model` field; a
   * LoRA adapter served by the same vLLM), e.g. the per-topic
   * `routing.domains.<topic>.llmModel`. In-process models ignore it.
   */
  model?: string;
}

/** One sentence's spans plus the evidence the cascade policy reads. */
export interface SentenceTagging {
  spans: TokenSpan[];
  /** Smallest, over the sentence's words, of the word's highest label probability (1 for no words). */
  minConfidence: number;
}

/**
 * What every tagger offers the pipeline: the encoder and the LLM adapters.
 * Input is sentences of word tokens (text stage output); output is, per sentence,
 * spans over its word tokens.
 */
export interface Tagger {
  readonly route: Route;
  readonly model: ModelInfo;
  tagSentences(sentences: readonly Sentence[], options?: TagOptions): Promise<TokenSpan[][]>;
  /** Spans with per-sentence confidence; taggers that cannot tell leave it out. */
  tagSentencesDetailed?(sentences: readonly Sentence[], options?: TagOptions): Promise<SentenceTagging[]>;
  close(): Promise<void>;
}

/** Maps token spans of each sentence to character spans in the original text. */
export function toEntitySpans(sentences: readonly Sentence[], perSentence: readonly TokenSpan[][], route: Route): EntitySpan[] {
  const out: EntitySpan[] = [];
  sentences.forEach((sentence, i) => {
    for (const span of perSentence[i] ?? []) {
      out.push({
        start: sentence.tokens[span.first].start,
        end: sentence.tokens[span.last].end,
        label: span.label,
        score: span.score,
        sentenceIndex: sentence.index,
        route,
      });
    }
  });
  return out;
}
