import { readFile } from 'node:fs/promises';
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
}

interface CalibrationRoute {
  f1?: Record<string, number>;
  ms_per_token?: number;
}

interface CalibrationDataset {
  support_by_length?: Record<string, number>;
  routes?: Record<string, CalibrationRoute | undefined>;
}

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

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
  const datasets = (raw as { datasets?: Record<string, CalibrationDataset | undefined> } | null)?.datasets;
  if (datasets === undefined || typeof datasets !== 'object') throw new ConfigError('routing.calibrationFile', 'no "datasets" object (expected the file `npm run eval:table` writes)');
  const entry = datasets[domain];
  if (entry === undefined) throw new ConfigError('routing.domain', `"${domain}" is not in the calibration file (it has: ${Object.keys(datasets).join(', ')})`);
  const enc = entry.routes?.encoder;
  if (enc === undefined || !num(enc.ms_per_token)) throw new ConfigError('routing.calibrationFile', `datasets.${domain}.routes.encoder.ms_per_token is missing`);
  const llm = entry.routes?.llm;
  const encoderCost = { overheadMs: 0, msPerToken: enc.ms_per_token };
  const llmCost = llm !== undefined && num(llm.ms_per_token) ? { overheadMs: 0, msPerToken: llm.ms_per_token } : { overheadMs: 0, msPerToken: enc.ms_per_token * fallbackLlmCostRatio };
  const support = entry.support_by_length ?? {};
  let gains: RouteGains | null = null;
  const ef = enc.f1;
  const lf = llm?.f1;
  if (ef !== undefined && lf !== undefined && [ef, lf].every((f) => num(f['1']) && num(f['2']) && num(f['3+']) && num(f.all))) {
    const s1 = support['1'] ?? 1;
    const s2 = support['2'] ?? 1;
    const d = (k: string): number => lf[k] - ef[k];
    gains = { short: (s1 * d('1') + s2 * d('2')) / Math.max(1, s1 + s2), long: d('3+'), all: d('all') };
  }
  return { domain, costs: { encoder: encoderCost, llm: llmCost }, gains, supportByLength: support };
}
