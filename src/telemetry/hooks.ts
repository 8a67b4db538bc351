import type { RoutingRecord } from '../route/record.js';
import type { Route } from '../types.js';
import type { Logger } from './logger.js';

/**
 * Observation points of the pipeline, for tracing and metrics (the telemetry
 * issue plugs OpenTelemetry in here). Arguments carry ids, counts and timings,
 * never note text. Every call goes through `safeHooks`, so a failing hook can
 * never crash the pipeline.
 */
export interface PipelineHooks {
  noteReceived?(e: { topic: string; partition: number; offset: string; bytes: number }): void;
  routeDecided?(e: { noteId: string; policy: string; budgetMs: number; sentences: number; routes: Record<Route, number>; reasons: string[] }): void;
  taggerCalled?(e: { noteId: string; route: Route; sentences: number; ms: number; ok: boolean }): void;
  /** `routes` counts spans by route; `routing` is the note's decision record (as published in Avro `routing`) (codes, counts and timings only). */
  notePublished?(e: { noteId: string; topic: string; spans: number; totalMs: number; routes: Record<Route, number>; routing: RoutingRecord }): void;
  noteDeadLettered?(e: { topic: string; partition: number; offset: string; code: string; stage: string }): void;
  inFlightChanged?(e: { inFlight: number; paused: boolean }): void;
}

export function safeHooks(hooks: PipelineHooks, logger: Logger): Required<PipelineHooks> {
  const wrap = <K extends keyof PipelineHooks>(name: K): Required<PipelineHooks>[K] => {
    const fn = hooks[name] as ((e: unknown) => void) | undefined;
    return ((e: unknown) => {
      if (fn === undefined) return;
      const failed = (err: unknown): void => logger.warn('pipeline hook failed', { hook: name, error: err instanceof Error ? err.name : 'unknown' });
      try {
        const result: unknown = fn.call(hooks, e);
        // An async hook's rejection would otherwise be unhandled, which ends a Node 20 process.
        if (result instanceof Promise) result.catch(failed);
      } catch (err) {
        failed(err);
      }
    }) as Required<PipelineHooks>[K];
  };
  return {
    noteReceived: wrap('noteReceived'),
    routeDecided: wrap('routeDecided'),
    taggerCalled: wrap('taggerCalled'),
    notePublished: wrap('notePublished'),
    noteDeadLettered: wrap('noteDeadLettered'),
    inFlightChanged: wrap('inFlightChanged'),
  };
}
