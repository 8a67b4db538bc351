import { type GRANULARITIES, POLICY_NAMES, RoutingSchema } from '../config/schema.js';
import type { Sentence } from '../types.js';
import type { NoteBudget } from './budget.js';
import type { RouteGains } from './calibration.js';
import type { OnlineCostModel } from './cost-model.js';
import type { CapAllowance, CapLimit, LlmCap } from './llm-cap.js';

export { POLICY_NAMES };
export type PolicyName = (typeof POLICY_NAMES)[number];
export type Granularity = (typeof GRANULARITIES)[number];
export type PlannedRoute = 'encoder' | 'llm';

/** What the policies need from the entity-length estimator (src/route/length-estimate.ts). */
export interface LongEntityEstimator {
  readonly threshold: number;
  probLong(sentence: Sentence): number;
}

/** Reason codes in the decision record (Avro `routing.reasons`). */
export const Reasons = {
  encoderPolicy: 'encoder_policy',
  llmPolicy: 'llm_policy',
  /** A sentence (or the note) that was worth the LLM did not fit in the budget. */
  budgetExhausted: 'budget_exhausted',
  /** The budget was shrunk by load and something was cut. */
  loadShed: 'load_shed',
  /** Even the encoder alone is predicted to exceed the budget (it runs anyway: it is the floor). */
  budgetBelowEncoder: 'budget_below_encoder_cost',
  /** Sentences kept on the encoder because the estimate expects only short entities there. */
  shortEntitiesExpected: 'short_entities_expected',
  /** Sentences kept on the encoder because the measured gain is not positive even where long entities are expected. */
  llmGainNotPositive: 'llm_gain_not_positive',
  /** No measured LLM gains for the domain: gain-based routing sends nothing to the LLM. */
  noLlmCalibration: 'no_llm_calibration',
  /** Cascade: the encoder pass flagged no sentence. */
  noSentenceFlagged: 'no_sentence_flagged',
  flaggedLongExpected: 'flag_long_expected',
  flaggedLongSpan: 'flag_long_span',
  flaggedLowConfidence: 'flag_low_confidence',
  /** LLM work that fitted the budget was held back by routing.llmCap; `llm_cap:<limit>` names the limit. */
  llmCap: 'llm_cap',
} as const;

/** `llm_cap:sentence_share` or `llm_cap:tokens_per_minute`, next to `llm_cap`. */
export function capReason(limit: CapLimit): string {
  return `${Reasons.llmCap}:${limit}`;
}

export interface PolicySettings {
  granularity: Granularity;
  /** Smallest expected F1 gain (0..1) for which a sentence is worth sending to the LLM. */
  minGain: number;
  cascade: {
    /** A sentence whose least confident word is below this (max label probability) is flagged. */
    confidenceThreshold: number;
    /** Flag sentences where the encoder itself found a span of 3+ words. */
    flagLongSpans: boolean;
  };
}

/** The schema's defaults (routing.granularity, routing.minGain, routing.cascade), not a second copy of them. */
const ROUTING_DEFAULTS = RoutingSchema.parse({});
export const DEFAULT_POLICY_SETTINGS: PolicySettings = {
  granularity: ROUTING_DEFAULTS.granularity,
  minGain: ROUTING_DEFAULTS.minGain,
  cascade: ROUTING_DEFAULTS.cascade,
};

export interface PlanInput {
  sentences: readonly Sentence[];
  budget: NoteBudget;
  /** Time the note has already used (from receipt to now), counted against its budget. */
  elapsedMs: number;
}

/** The decision record shared by all policies; it is published with the note. */
export interface RouteDecision {
  policy: PolicyName;
  granularity: Granularity;
  budget: NoteBudget;
  /** First-pass route per sentence, by position. */
  sentenceRoutes: PlannedRoute[];
  /** Cascade: after the encoder pass, `refine` picks sentences to re-tag with the LLM. */
  cascade: boolean;
  predictedEncoderMs: number;
  predictedLlmMs: number;
  /** Expected F1 change on the note: mean over its sentences of the expected gain of those sent to the LLM. */
  estimatedGain: number;
  /** P(entity of 3+ words) per sentence; null without an estimator. */
  probLong: number[] | null;
  reasons: string[];
}

/** The encoder pass's evidence per sentence, for the cascade's second step. */
export interface EncoderEvidence {
  /** Smallest max-label probability over the sentence's words (1 for an empty sentence). */
  minConfidence: number;
  /** The encoder found a span of 3+ words. */
  hasLongSpan: boolean;
}

export interface RefineInput {
  sentences: readonly Sentence[];
  decision: RouteDecision;
  evidence: readonly EncoderEvidence[];
  elapsedMs: number;
}

export interface RefinePlan {
  /** Sentence positions to re-tag with the LLM, in the order they were chosen. */
  llmSentences: number[];
  predictedLlmMs: number;
  estimatedGain: number;
  reasons: string[];
}

export interface RouterContext {
  costs: OnlineCostModel;
  gains: RouteGains | null;
  estimator: LongEntityEstimator | null;
  settings: PolicySettings;
  /** The LLM cost cap shared by every router of the process (one LLM server); null: none. */
  cap?: LlmCap | null;
}

interface Candidate {
  index: number;
  tokens: number;
  gain: number;
  /** Sort key: higher first. */
  priority: number;
}

const tokensOf = (s: Sentence): number => s.tokens.length;

function addReason(reasons: string[], reason: string): void {
  if (!reasons.includes(reason)) reasons.push(reason);
}

/**
 * One place where routes are chosen. `plan` gives every sentence a first
 * route within the note's effective budget; for the cascade, `refine` then
 * picks sentences to re-tag with the LLM from the encoder's own evidence.
 *
 * Budget rule, all policies: the plan is what the cost model predicts for
 * one encoder call over the encoder sentences plus one LLM call over the LLM
 * sentences, plus the time already spent; it must fit in the effective budget.
 * The encoder is the floor (it runs even when it alone does not fit), so a
 * cut always removes LLM work. Sentences are admitted in priority order
 * (expected gain per extra ms) and one that does not fit is skipped, so a
 * shorter one behind it may still go.
 */
export class Router {
  constructor(
    readonly policy: PolicyName,
    private readonly context: RouterContext,
  ) {}

  get costs(): OnlineCostModel {
    return this.context.costs;
  }

  get cap(): LlmCap | null {
    return this.context.cap ?? null;
  }

  get usesLlm(): boolean {
    return policyUsesLlm(this.policy);
  }

  /** Expected F1 gain of sending one sentence to the LLM (0..1), from the estimate and the measured gains. */
  expectedGain(p: number | null): number {
    const g = this.context.gains;
    if (g === null) return 0;
    return p === null ? g.all : p * g.long + (1 - p) * g.short;
  }

  plan(input: PlanInput): RouteDecision {
    const { sentences, budget } = input;
    const { costs, estimator, settings } = this.context;
    const probLong = estimator === null ? null : sentences.map((s) => estimator.probLong(s));
    const totalTokens = sentences.reduce((n, s) => n + tokensOf(s), 0);
    const decision: RouteDecision = {
      policy: this.policy,
      granularity: settings.granularity,
      budget,
      sentenceRoutes: sentences.map(() => 'encoder'),
      cascade: this.policy === 'cascade',
      predictedEncoderMs: costs.predict('encoder', totalTokens),
      predictedLlmMs: 0,
      estimatedGain: 0,
      probLong,
      reasons: [],
    };
    if (input.elapsedMs + decision.predictedEncoderMs > budget.effectiveMs) addReason(decision.reasons, Reasons.budgetBelowEncoder);
    if (this.policy === 'encoder') {
      addReason(decision.reasons, Reasons.encoderPolicy);
      return decision;
    }
    if (this.policy === 'cascade') {
      // The note's sentences count for the cap's share now; `refine`, after the encoder pass, counts its LLM work.
      this.cap?.record(sentences.length, 0, 0);
      return decision;
    }
    const candidates: Candidate[] = [];
    sentences.forEach((s, index) => {
      const tokens = tokensOf(s);
      if (tokens === 0) return;
      const p = probLong === null ? null : probLong[index];
      const gain = this.expectedGain(p);
      candidates.push({ index, tokens, gain, priority: this.priority(gain, p, tokens) });
    });
    let chosen: Candidate[];
    if (this.policy === 'llm') {
      addReason(decision.reasons, Reasons.llmPolicy);
      chosen = candidates;
    } else {
      chosen = this.worthIt(candidates, decision.reasons);
      if (settings.granularity === 'note') {
        // Whole note or nothing: worth it when the note's summed expected gain is.
        const total = candidates.reduce((n, c) => n + c.gain, 0);
        chosen = chosen.length > 0 && total > settings.minGain * Math.max(1, candidates.length) ? candidates : [];
      }
    }
    const allowance = this.cap?.allowance(sentences.length) ?? { sentences: Infinity, tokens: Infinity };
    const admitted = this.admit(
      chosen,
      totalTokens,
      input.elapsedMs,
      budget,
      decision.reasons,
      settings.granularity === 'note' && this.policy === 'length-aware',
      allowance,
    );
    let llmTokens = 0;
    let gain = 0;
    for (const c of admitted) {
      decision.sentenceRoutes[c.index] = 'llm';
      llmTokens += c.tokens;
      gain += c.gain;
    }
    this.cap?.record(sentences.length, admitted.length, llmTokens);
    decision.predictedEncoderMs = costs.predict('encoder', totalTokens - llmTokens);
    decision.predictedLlmMs = costs.predict('llm', llmTokens);
    decision.estimatedGain = sentences.length > 0 ? gain / sentences.length : 0;
    return decision;
  }

  /** Cascade step two: which encoder-tagged sentences to re-tag with the LLM, within what is left of the budget. */
  refine(input: RefineInput): RefinePlan {
    const { sentences, decision, evidence } = input;
    const { costs, settings } = this.context;
    const reasons: string[] = [];
    const threshold = this.context.estimator?.threshold ?? Infinity;
    const flagged: Candidate[] = [];
    sentences.forEach((s, index) => {
      const tokens = tokensOf(s);
      if (tokens === 0) return;
      const p = decision.probLong === null ? null : decision.probLong[index];
      const ev = evidence[index];
      const flags: string[] = [];
      if (p !== null && p >= threshold) flags.push(Reasons.flaggedLongExpected);
      if (settings.cascade.flagLongSpans && ev.hasLongSpan) flags.push(Reasons.flaggedLongSpan);
      if (ev.minConfidence < settings.cascade.confidenceThreshold) flags.push(Reasons.flaggedLowConfidence);
      if (flags.length === 0) return;
      for (const f of flags) addReason(reasons, f);
      const gain = this.expectedGain(p);
      // Several flags make a sentence more urgent; low confidence ranks by how low.
      const urgency = flags.length + (1 - ev.minConfidence);
      flagged.push({ index, tokens, gain, priority: urgency / Math.max(1e-6, costs.marginal('llm', tokens)) });
    });
    if (flagged.length === 0) {
      addReason(reasons, Reasons.noSentenceFlagged);
      return { llmSentences: [], predictedLlmMs: 0, estimatedGain: 0, reasons };
    }
    flagged.sort(byPriority);
    const chosen: Candidate[] = [];
    let tokens = 0;
    let cut = false;
    // The note's sentences were counted by `plan`; only its LLM work is new here.
    const allowance = this.cap?.allowance(0) ?? { sentences: Infinity, tokens: Infinity };
    for (const c of flagged) {
      const cost = costs.predict('llm', tokens + c.tokens);
      if (input.elapsedMs + cost > decision.budget.effectiveMs) cut = true;
      else if (this.capCut(chosen.length + 1, tokens + c.tokens, allowance, reasons)) continue;
      else {
        chosen.push(c);
        tokens += c.tokens;
      }
    }
    this.cap?.record(0, chosen.length, tokens);
    if (cut) {
      addReason(reasons, Reasons.budgetExhausted);
      if (decision.budget.loadFactor < 1) addReason(reasons, Reasons.loadShed);
    }
    const gain = chosen.reduce((n, c) => n + c.gain, 0);
    return {
      llmSentences: chosen.map((c) => c.index),
      predictedLlmMs: costs.predict('llm', tokens),
      estimatedGain: sentences.length > 0 ? gain / sentences.length : 0,
      reasons,
    };
  }

  /** Expected gain per extra predicted ms (the LLM's marginal cost minus the encoder's, which it replaces). */
  private priority(gain: number, p: number | null, tokens: number): number {
    const extra = Math.max(1e-6, this.context.costs.marginal('llm', tokens) - this.context.costs.marginal('encoder', tokens));
    // Without measured gains the LLM policy still orders by the estimate, then by position.
    return this.context.gains === null ? (p ?? 0) / extra : gain / extra;
  }

  /**
   * length-aware: the sentences whose expected gain clears `minGain`. The others
   * get `short_entities_expected` when the LLM would pay on long entities but
   * this sentence is expected to hold short ones, else `llm_gain_not_positive`.
   */
  private worthIt(candidates: Candidate[], reasons: string[]): Candidate[] {
    const gains = this.context.gains;
    if (gains === null) {
      if (candidates.length > 0) addReason(reasons, Reasons.noLlmCalibration);
      return [];
    }
    const out: Candidate[] = [];
    for (const c of candidates) {
      if (c.gain > this.context.settings.minGain) out.push(c);
      else addReason(reasons, gains.long > this.context.settings.minGain ? Reasons.shortEntitiesExpected : Reasons.llmGainNotPositive);
    }
    return out;
  }

  /**
   * Whether the cap refuses LLM work of `sentences` sentences and `tokens`
   * tokens for this note (adding its reasons when it does).
   */
  private capCut(sentences: number, tokens: number, allowance: CapAllowance, reasons: string[]): boolean {
    const limits: CapLimit[] = [];
    if (sentences > allowance.sentences) limits.push('sentence_share');
    if (tokens > allowance.tokens) limits.push('tokens_per_minute');
    if (limits.length === 0) return false;
    addReason(reasons, Reasons.llmCap);
    for (const l of limits) addReason(reasons, capReason(l));
    return true;
  }

  /** Admits candidates in priority order while the whole plan fits the effective budget and the LLM cap. */
  private admit(
    candidates: Candidate[],
    totalTokens: number,
    elapsedMs: number,
    budget: NoteBudget,
    reasons: string[],
    allOrNothing: boolean,
    allowance: CapAllowance,
  ): Candidate[] {
    const costs = this.context.costs;
    const fits = (llmTokens: number): boolean =>
      elapsedMs + costs.predict('encoder', totalTokens - llmTokens) + costs.predict('llm', llmTokens) <= budget.effectiveMs;
    let admitted: Candidate[] = [];
    let cut = false;
    if (allOrNothing) {
      const tokens = candidates.reduce((n, c) => n + c.tokens, 0);
      if (candidates.length > 0 && !fits(tokens)) cut = true;
      else if (candidates.length > 0 && !this.capCut(candidates.length, tokens, allowance, reasons)) admitted = candidates;
    } else {
      let tokens = 0;
      for (const c of [...candidates].sort(byPriority)) {
        if (!fits(tokens + c.tokens)) cut = true;
        else if (!this.capCut(admitted.length + 1, tokens + c.tokens, allowance, reasons)) {
          admitted.push(c);
          tokens += c.tokens;
        }
      }
    }
    if (cut) {
      addReason(reasons, Reasons.budgetExhausted);
      if (budget.loadFactor < 1) addReason(reasons, Reasons.loadShed);
    }
    return admitted;
  }
}

function byPriority(a: Candidate, b: Candidate): number {
  return b.priority - a.priority || a.index - b.index;
}

/** Whether a policy can send any sentence to the LLM (only then is an LLM tagger loaded). */
export function policyUsesLlm(name: PolicyName): boolean {
  return name !== 'encoder';
}
