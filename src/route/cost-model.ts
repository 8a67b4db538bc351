import { performance } from 'node:perf_hooks';

/**
 * Predicted latency of a tagger call from its size in word tokens:
 * `overheadMs + msPerToken * tokens`, one line per route.
 *
 * It starts from the calibration file (measured per-token costs) and follows
 * observed latencies with exponentially weighted least squares: every
 * observation multiplies the old statistics by `decay` (half-life
 * `halfLifeObservations`) before adding itself, so a changed latency (a
 * loaded GPU server, a queue in front of it) takes over after a few
 * half-lives. The prior enters as two pseudo-observations on the calibrated
 * line; they decay like real ones. Wall time is what is observed, so queueing
 * at a remote LLM and waiting for a shared encoder batch both count.
 *
 * A failed call (timed out, or cut at the note's budget) only says the cost is
 * at least what it took. It never enters the fitted line: its shortfall
 * against the line is added to that route's predictions for
 * `failureMemoryMs` of wall time (the largest shortfall inside the window
 * wins), and the route's next success clears it at once. Without that expiry
 * an outage that inflates the prediction keeps every sentence off the route,
 * no call is made, nothing is observed, and the router never returns.
 */

export type CostRoute = 'encoder' | 'llm';

export interface RouteCost {
  overheadMs: number;
  msPerToken: number;
}

export interface CostModelOptions {
  /** Observations after which an observation's weight has halved. */
  halfLifeObservations?: number;
  /** Weight of each of the two prior pseudo-observations. */
  priorWeight?: number;
  /** Token counts at which the prior line is anchored (a short and a long call). */
  priorTokens?: readonly [number, number];
  /** How long a failed call's shortfall keeps raising the route's predictions, unless a success comes first (ms); 0: failures are not remembered. */
  failureMemoryMs?: number;
  /** Milliseconds clock for the failure memory (performance.now by default); tests pass a fake one. */
  clock?: () => number;
}

/** Default `failureMemoryMs` (routing.costFailureMemoryMs). */
export const DEFAULT_FAILURE_MEMORY_MS = 10_000;

export interface CostSnapshot extends RouteCost {
  observations: number;
  /** Extra ms every prediction carries while a failure is remembered (0 when none is). */
  failurePenaltyMs: number;
}

/** The largest shortfall a failed call showed, and until when it counts. */
interface FailurePenalty {
  ms: number;
  until: number;
}

/** Running weighted sums for one route's regression of ms on tokens. */
class WeightedLine {
  private s0 = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;
  observations = 0;
  private fitted: RouteCost;

  constructor(
    prior: RouteCost,
    private readonly decay: number,
    priorWeight: number,
    priorTokens: readonly [number, number],
  ) {
    for (const x of priorTokens) this.add(x, prior.overheadMs + prior.msPerToken * x, priorWeight);
    this.fitted = { ...prior };
  }

  private add(x: number, y: number, w: number): void {
    this.s0 += w;
    this.sx += w * x;
    this.sy += w * y;
    this.sxx += w * x * x;
    this.sxy += w * x * y;
  }

  observe(tokens: number, ms: number): void {
    this.s0 *= this.decay;
    this.sx *= this.decay;
    this.sy *= this.decay;
    this.sxx *= this.decay;
    this.sxy *= this.decay;
    this.add(tokens, ms, 1);
    this.observations++;
    this.fitted = this.solve();
  }

  private solve(): RouteCost {
    const det = this.s0 * this.sxx - this.sx * this.sx;
    // Calls of (nearly) one size cannot separate overhead from per-token cost: keep the split, rescale the line.
    if (!(det > 1e-9 * this.s0 * this.sxx)) {
      const meanX = this.sx / this.s0;
      const meanY = this.sy / this.s0;
      const before = this.fitted.overheadMs + this.fitted.msPerToken * meanX;
      const scale = before > 0 ? meanY / before : 1;
      return { overheadMs: Math.max(0, this.fitted.overheadMs * scale), msPerToken: Math.max(0, this.fitted.msPerToken * scale) };
    }
    const slope = (this.s0 * this.sxy - this.sx * this.sy) / det;
    const intercept = (this.sy - slope * this.sx) / this.s0;
    // Negative parts are noise: refit through the origin (or as a constant) instead.
    if (intercept < 0) return { overheadMs: 0, msPerToken: Math.max(0, this.sxy / this.sxx) };
    if (slope < 0) return { overheadMs: Math.max(0, this.sy / this.s0), msPerToken: 0 };
    return { overheadMs: intercept, msPerToken: slope };
  }

  get cost(): RouteCost {
    return this.fitted;
  }
}

export class OnlineCostModel {
  private readonly lines: Record<CostRoute, WeightedLine>;
  private readonly penalties: Record<CostRoute, FailurePenalty> = { encoder: { ms: 0, until: -Infinity }, llm: { ms: 0, until: -Infinity } };
  private readonly failureMemoryMs: number;
  private readonly now: () => number;

  constructor(initial: Record<CostRoute, RouteCost>, options: CostModelOptions = {}) {
    const halfLife = options.halfLifeObservations ?? 50;
    const decay = 0.5 ** (1 / halfLife);
    const priorWeight = options.priorWeight ?? 2;
    const priorTokens = options.priorTokens ?? [20, 400];
    this.failureMemoryMs = options.failureMemoryMs ?? DEFAULT_FAILURE_MEMORY_MS;
    this.now = options.clock ?? (() => performance.now());
    this.lines = {
      encoder: new WeightedLine(initial.encoder, decay, priorWeight, priorTokens),
      llm: new WeightedLine(initial.llm, decay, priorWeight, priorTokens),
    };
  }

  /** Predicted ms for one call of `tokens` word tokens (0 tokens: no call, no cost). */
  predict(route: CostRoute, tokens: number): number {
    if (tokens <= 0) return 0;
    const c = this.lines[route].cost;
    return c.overheadMs + c.msPerToken * tokens + this.penalty(route);
  }

  /** Predicted extra ms of adding `tokens` to a call that already happens. */
  marginal(route: CostRoute, tokens: number): number {
    return this.lines[route].cost.msPerToken * tokens;
  }

  /** A successful call of `tokens` word tokens that took `ms`: fitted, and any remembered failure is forgotten. */
  observe(route: CostRoute, tokens: number, ms: number): void {
    if (!(tokens > 0) || !Number.isFinite(ms) || ms < 0) return;
    this.lines[route].observe(tokens, ms);
    this.penalties[route] = { ms: 0, until: -Infinity };
  }

  /** A call that failed after `ms` (timeout, budget spent): the cost is at least that, for `failureMemoryMs`. */
  observeFailure(route: CostRoute, tokens: number, ms: number): void {
    if (!(tokens > 0) || !Number.isFinite(ms) || ms <= 0 || !(this.failureMemoryMs > 0)) return;
    const c = this.lines[route].cost;
    const shortfall = ms - (c.overheadMs + c.msPerToken * tokens);
    if (shortfall <= 0) return;
    this.penalties[route] = { ms: Math.max(shortfall, this.penalty(route)), until: this.now() + this.failureMemoryMs };
  }

  private penalty(route: CostRoute): number {
    const p = this.penalties[route];
    return this.now() < p.until ? p.ms : 0;
  }

  snapshot(): Record<CostRoute, CostSnapshot> {
    const one = (r: CostRoute): CostSnapshot => ({ ...this.lines[r].cost, observations: this.lines[r].observations, failurePenaltyMs: this.penalty(r) });
    return { encoder: one('encoder'), llm: one('llm') };
  }
}
