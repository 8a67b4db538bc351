import type { Route, Sentence } from '../types.js';

export interface RoutePlan {
  policy: string;
  budgetMs: number;
  /** Route chosen for each sentence, by sentence position. */
  sentenceRoutes: Route[];
  reasons: string[];
}

export interface RouteInput {
  /** The note's own budget, if it carries one. */
  noteBudgetMs: number | null;
  sentences: readonly Sentence[];
}

export interface RoutingPolicy {
  readonly name: string;
  plan(input: RouteInput): RoutePlan;
}

/**
 * The place where the route is chosen. This release has the encoder as its only
 * tagger, so the policy routes every sentence there; the router issue adds the
 * cost model and the `llm`, `length-aware` and `cascade` policies behind this
 * interface.
 */
export class EncoderOnlyPolicy implements RoutingPolicy {
  readonly name = 'encoder';
  constructor(private readonly defaultBudgetMs: number) {}

  plan(input: RouteInput): RoutePlan {
    return {
      policy: this.name,
      budgetMs: input.noteBudgetMs ?? this.defaultBudgetMs,
      sentenceRoutes: input.sentences.map(() => 'encoder'),
      reasons: ['encoder_only_policy'],
    };
  }
}

/**
 * Every sentence to the LLM tagger. The note still carries the encoder as its
 * fallback: if the LLM fails (down, slow past the note's budget, 5xx, circuit
 * open) the processor tags the same sentences with the encoder
 * (`encoder_fallback`). Until the router issue's cost model lands this is the
 * way to run the LLM route end to end.
 */
export class LlmOnlyPolicy implements RoutingPolicy {
  readonly name = 'llm';
  constructor(private readonly defaultBudgetMs: number) {}

  plan(input: RouteInput): RoutePlan {
    return {
      policy: this.name,
      budgetMs: input.noteBudgetMs ?? this.defaultBudgetMs,
      sentenceRoutes: input.sentences.map(() => 'llm'),
      reasons: ['llm_only_policy'],
    };
  }
}

export type PolicyName = 'encoder' | 'llm';

export function createPolicy(name: PolicyName, defaultBudgetMs: number): RoutingPolicy {
  return name === 'llm' ? new LlmOnlyPolicy(defaultBudgetMs) : new EncoderOnlyPolicy(defaultBudgetMs);
}

/** Whether a policy can send any sentence to the LLM (only then is an LLM tagger loaded). */
export function policyUsesLlm(name: PolicyName): boolean {
  return name === 'llm';
}
