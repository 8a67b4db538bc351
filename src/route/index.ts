import type { DomainCalibration } from './calibration.js';
import { OnlineCostModel, type CostModelOptions, type RouteCost } from './cost-model.js';
import type { LlmCap } from './llm-cap.js';
import { DEFAULT_POLICY_SETTINGS, Router, type LongEntityEstimator, type PolicyName, type PolicySettings } from './policy.js';

export interface RouterSetup {
  policy: PolicyName;
  /** Measured costs and gains the router starts from; null: gains unknown, costs from `costs`. */
  calibration: DomainCalibration | null;
  /** Starting costs when there is no calibration (tests, or a domain never measured). */
  costs?: Record<'encoder' | 'llm', RouteCost>;
  estimator?: LongEntityEstimator | null;
  settings?: Partial<PolicySettings>;
  costModel?: CostModelOptions;
  /** The LLM cost cap (routing.llmCap), shared by every router of one process. */
  cap?: LlmCap | null;
}

/** Costs used only when neither a calibration nor explicit costs are given: the ratio measured for BC5CDR (x5.5), rounded. */
const UNCALIBRATED: Record<'encoder' | 'llm', RouteCost> = { encoder: { overheadMs: 0, msPerToken: 0.07 }, llm: { overheadMs: 0, msPerToken: 0.4 } };

export function createRouter(setup: RouterSetup): Router {
  const costs = setup.calibration?.costs ?? setup.costs ?? UNCALIBRATED;
  return new Router(setup.policy, {
    costs: new OnlineCostModel(costs, setup.costModel),
    gains: setup.calibration?.gains ?? null,
    estimator: setup.estimator ?? null,
    cap: setup.cap ?? null,
    settings: { ...DEFAULT_POLICY_SETTINGS, ...setup.settings, cascade: { ...DEFAULT_POLICY_SETTINGS.cascade, ...setup.settings?.cascade } },
  });
}

export { LlmCap, type LlmCapSettings, type CapLimit, type CapSnapshot } from './llm-cap.js';
export {
  Router,
  Reasons,
  capReason,
  DEFAULT_POLICY_SETTINGS,
  POLICY_NAMES,
  policyUsesLlm,
  type PolicyName,
  type RouteDecision,
  type PolicySettings,
  type LongEntityEstimator,
  type EncoderEvidence,
} from './policy.js';
export { resolveBudget, parseBudgetHeader, loadFactor, NO_LOAD, type NoteBudget, type BudgetSettings, type LoadSnapshot, type LoadSettings } from './budget.js';
export { OnlineCostModel, type RouteCost } from './cost-model.js';
export { loadCalibration, parseCalibration, type DomainCalibration, type RouteGains } from './calibration.js';
