import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { RouteCost } from './cost-model.js';

/** F1 difference LLM minus encoder, per expected entity length (0..1 scale). */
export interface RouteGains {
  /** Entities of 1-2 words (support-weighted mix of the `1` and `2` buckets). */
  short: number;
  /** Entities of 3+ words. */
  long: number;
  /** All entities. */
  all: number;
}

/** What the router starts from for one domain (dataset): measured costs and gains. */
export interface DomainCalibration {
  domain: string;
  costs: Record<'encoder' | 'llm', RouteCost>;
  /** Null when the calibration has no LLM measurement for the domain. */
  gains: RouteGains | null;
  /** Devel entities per length bucket behind the gains. */
  supportByLength: Record<string, number>;
  /** The entry was written by an interrupted `calibrate` run (fewer sentences than the data set had). */
  partial?: boolean;
}

// ---------------------------------------------------------------- file format (models/calibration.json)

/** Zod messages that read after the field's path: "is missing" or "must be <what>", never quoting the value. */
const must = (what: string) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? 'is missing' : `must be ${what}`) });
const measured = (): z.ZodNumber => z.number(must('a finite number'));

/**
 * A route's per-call latency model, as `bioner-router calibrate` fits it: a
 * least-squares line `overhead_ms + ms_per_token x tokens` over calls of
 * different sizes, run with the adapter's real concurrency, and the p50/p95
 * of a call. When present the router starts from this line instead of
 * `ms_per_token` alone.
 */
export const CalibrationLatencySchema = z.object(
  {
    overhead_ms: measured(),
    ms_per_token: measured(),
    p50_ms: measured().optional(),
    p95_ms: measured().optional(),
    calls: measured().optional(),
  },
  must('an object'),
);

/** One route's measurement on a domain's devel set, as `npm run eval:table` or `bioner-router calibrate` writes it. */
export const CalibrationRouteSchema = z.object(
  {
    model: z.string(must('a string')).optional(),
    /** F1 per entity-length bucket (`1`, `2`, `3+`) and `all`; null where a bucket had nothing to score. */
    f1: z.record(z.string(), z.number(must('a number or null')).nullable(), must('an object of bucket -> F1')).optional(),
    ms_per_sentence: measured().optional(),
    ms_per_token: measured().optional(),
    latency: CalibrationLatencySchema.optional(),
  },
  must('an object'),
);
export type CalibrationRoute = z.infer<typeof CalibrationRouteSchema>;

/** One domain (dataset). Routing needs the encoder's per-token cost; the LLM's measurement is optional. */
export const CalibrationDatasetSchema = z.object(
  {
    support_by_length: z.record(z.string(), measured(), must('an object of bucket -> entity count')).optional(),
    routes: z.object(
      {
        encoder: CalibrationRouteSchema.extend({ ms_per_token: measured() }),
        llm: CalibrationRouteSchema.optional(),
      },
      must('an object of route -> measurement'),
    ),
    partial: z.boolean(must('true or false')).optional(),
  },
  must('an object'),
);
export type CalibrationDataset = z.infer<typeof CalibrationDatasetSchema>;

/**
 * The file: domains are checked one at a time when asked for (parseCalibration),
 * so a malformed entry for one dataset does not stop a router of another.
 */
export const CalibrationFileSchema = z.object({ datasets: z.record(z.string(), z.unknown()) });
export type CalibrationFile = z.infer<typeof CalibrationFileSchema>;

/** The first issue as `datasets.<domain>.<path>: <why>`; never the value itself. */
function datasetProblem(domain: string, error: z.ZodError): ConfigError {
  const issue = error.issues[0];
  const at = ['datasets', domain, ...issue.path.map(String)].join('.');
  return new ConfigError('routing.calibrationFile', `${at} ${issue.message}`);
}

/**
 * Reads models/calibration.json (written by `npm run eval:table`) for one
 * domain. Without an LLM measurement the LLM's per-token cost is taken as
 * `fallbackLlmCostRatio` times the encoder's and the gains are unknown, so
 * gain-based policies send nothing to the LLM.
 */
export async function loadCalibration(path: string, domain: string, fallbackLlmCostRatio = 10): Promise<DomainCalibration> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new ConfigError('routing.calibrationFile', `cannot read ${path}: ${(err as Error).message}`);
  }
  return parseCalibration(raw, domain, fallbackLlmCostRatio);
}

export function parseCalibration(raw: unknown, domain: string, fallbackLlmCostRatio = 10): DomainCalibration {
  const file = CalibrationFileSchema.safeParse(raw);
  if (!file.success) throw new ConfigError('routing.calibrationFile', 'no "datasets" object (expected the file `npm run eval:table` writes)');
  const datasets = file.data.datasets;
  if (!Object.hasOwn(datasets, domain))
    throw new ConfigError('routing.domain', `"${domain}" is not in the calibration file (it has: ${Object.keys(datasets).join(', ')})`);
  const parsed = CalibrationDatasetSchema.safeParse(datasets[domain]);
  if (!parsed.success) throw datasetProblem(domain, parsed.error);
  const entry = parsed.data;
  const enc = entry.routes.encoder;
  const llm = entry.routes.llm;
  // A fitted per-call line (calibrate) says more than a batched per-token cost (eval:table): it has the overhead.
  const costOf = (r: CalibrationRoute & { ms_per_token?: number }): RouteCost | undefined =>
    r.latency !== undefined
      ? { overheadMs: r.latency.overhead_ms, msPerToken: r.latency.ms_per_token }
      : r.ms_per_token !== undefined
        ? { overheadMs: 0, msPerToken: r.ms_per_token }
        : undefined;
  const encoderCost = costOf(enc) ?? { overheadMs: 0, msPerToken: enc.ms_per_token };
  const llmCost = (llm === undefined ? undefined : costOf(llm)) ?? { overheadMs: 0, msPerToken: enc.ms_per_token * fallbackLlmCostRatio };
  const support = entry.support_by_length ?? {};
  return {
    domain,
    costs: { encoder: encoderCost, llm: llmCost },
    gains: gainsOf(enc.f1, llm?.f1, support),
    supportByLength: support,
    partial: entry.partial ?? false,
  };
}

type BucketF1 = Record<'1' | '2' | '3+' | 'all', number>;

/** The four buckets gains are made of, or undefined when any is absent or null. */
function buckets(f1: Record<string, number | null> | undefined): BucketF1 | undefined {
  if (f1 === undefined) return undefined;
  const [one, two, long, all] = [f1['1'], f1['2'], f1['3+'], f1.all];
  if (typeof one !== 'number' || typeof two !== 'number' || typeof long !== 'number' || typeof all !== 'number') return undefined;
  return { '1': one, '2': two, '3+': long, all };
}

function gainsOf(
  encoderF1: Record<string, number | null> | undefined,
  llmF1: Record<string, number | null> | undefined,
  support: Record<string, number>,
): RouteGains | null {
  const ef = buckets(encoderF1);
  const lf = buckets(llmF1);
  if (ef === undefined || lf === undefined) return null;
  const s1 = support['1'] ?? 1;
  const s2 = support['2'] ?? 1;
  const d = (k: keyof BucketF1): number => lf[k] - ef[k];
  return { short: (s1 * d('1') + s2 * d('2')) / Math.max(1, s1 + s2), long: d('3+'), all: d('all') };
}
