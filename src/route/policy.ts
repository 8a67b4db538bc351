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
