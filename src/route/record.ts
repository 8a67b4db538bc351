import type { BudgetSource } from './budget.js';
import type { Granularity, PolicyName } from './policy.js';

/**
 * The routing decision record of one note, as the router and the processor
 * know it: what was planned, what ran, what it cost and why. publish/ maps it
 * to the Avro `routing` block; hooks and metrics read it as it is.
 */
export interface RoutingRecord {
  policy: PolicyName;
  granularity: Granularity;
  /** The note's budget from its source, and after load shedding. */
  budgetMs: number;
  budgetSource: BudgetSource;
  effectiveBudgetMs: number;
  loadFactor: number;
  sentences: number;
  /** Sentences tagged by the encoder, fallbacks included. */
  sentencesEncoder: number;
  sentencesLlm: number;
  /** Positions of the sentences the LLM tagged (after any fallback). */
  llmSentences: number[];
  reasons: string[];
  predictedEncoderMs: number;
  predictedLlmMs: number;
  actualEncoderMs: number;
  actualLlmMs: number;
  /** Expected F1 change on the note (mean over its sentences of the LLM ones' expected gain); 0 after a fallback. */
  estimatedGain: number;
}
