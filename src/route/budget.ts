/**
 * A note's latency budget: where it comes from and how load shrinks it.
 *
 * Source order (first present wins): the note's own `latency_budget_ms`
 * field, the Kafka header `routing.budgetHeader`, the per-topic default
 * `routing.topicBudgets[topic]`, then `routing.defaultBudgetMs`.
 *
 * Load shedding rule: pressure = max(inFlight / load.inFlightHigh,
 * lag / load.lagHigh) (a missing lag counts as 0). At or below 1 the budget is
 * used as is; above 1 it is divided by the pressure, never below
 * `load.minFactor` of itself. So with twice the configured in-flight level a
 * note gets half its budget, and since the encoder is the floor, the LLM work
 * is what goes.
 */

export type BudgetSource = 'note' | 'header' | 'topic' | 'default';

export interface BudgetSettings {
  defaultBudgetMs: number;
  topicBudgets: Readonly<Record<string, number>>;
  load: LoadSettings;
}

export interface LoadSettings {
  /** In-flight notes (fetched, not yet committed) above which budgets shrink. */
  inFlightHigh: number;
  /** Consumer lag (records behind the high watermark, summed over this consumer's partitions) above which budgets shrink. */
  lagHigh: number;
  /** Smallest share of its budget a note keeps under load. */
  minFactor: number;
}

export interface LoadSnapshot {
  inFlight: number;
  /** Null when not known yet (no batch fetched). */
  lag: number | null;
}

export interface NoteBudget {
  /** The note's budget from its source, before load shedding. */
  budgetMs: number;
  source: BudgetSource;
  /** What the router may plan with: budgetMs times loadFactor. */
  effectiveMs: number;
  /** 1 without load; smaller under load (see the rule above). */
  loadFactor: number;
}

export const NO_LOAD: LoadSnapshot = { inFlight: 0, lag: null };

export function loadFactor(load: LoadSnapshot, settings: LoadSettings): number {
  const pressure = Math.max(load.inFlight / settings.inFlightHigh, (load.lag ?? 0) / settings.lagHigh);
  if (!(pressure > 1)) return 1;
  return Math.max(settings.minFactor, 1 / pressure);
}

/** Parses a budget header value: a positive integer of milliseconds, else null (the next source applies). */
export function parseBudgetHeader(value: Buffer | string | (Buffer | string)[] | undefined): number | null {
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return null;
  const text = (typeof first === 'string' ? first : first.toString('utf8')).trim();
  if (!/^\d{1,9}$/.test(text)) return null;
  const ms = Number(text);
  return ms > 0 ? ms : null;
}

export function resolveBudget(
  sources: { noteBudgetMs: number | null; headerBudgetMs?: number | null; topic?: string },
  settings: BudgetSettings,
  load: LoadSnapshot = NO_LOAD,
): NoteBudget {
  let budgetMs = settings.defaultBudgetMs;
  let source: BudgetSource = 'default';
  const topicBudget = sources.topic === undefined ? undefined : settings.topicBudgets[sources.topic];
  if (sources.noteBudgetMs !== null) {
    budgetMs = sources.noteBudgetMs;
    source = 'note';
  } else if (sources.headerBudgetMs !== undefined && sources.headerBudgetMs !== null) {
    budgetMs = sources.headerBudgetMs;
    source = 'header';
  } else if (topicBudget !== undefined) {
    budgetMs = topicBudget;
    source = 'topic';
  }
  const factor = loadFactor(load, settings.load);
  return { budgetMs, source, effectiveMs: budgetMs * factor, loadFactor: factor };
}

/** Budget settings when none are given (library use, tests): 5 s per note, no per-topic budgets, no load shedding. */
export const DEFAULT_BUDGET_SETTINGS: BudgetSettings = {
  defaultBudgetMs: 5000,
  topicBudgets: {},
  load: { inFlightHigh: Infinity, lagHigh: Infinity, minFactor: 1 },
};

/**
 * How long the LLM call of a note may take: what is left of its effective
 * budget (counted from receipt) at the moment of the call, never more than
 * `llmMaxMs` (half of processing.noteTimeoutMs in the service, so the
 * encoder fallback and publishing still fit). 0 or less: no time left.
 */
export function llmDeadlineMs(budget: NoteBudget, elapsedMs: number, llmMaxMs = Infinity): number {
  return Math.floor(Math.min(budget.effectiveMs - elapsedMs, llmMaxMs));
}
