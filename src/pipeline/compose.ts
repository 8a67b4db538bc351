import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { RouterConfig } from '../config/schema.js';
import type { KafkaSecurityOptions } from '../kafka/security.js';
import { packageRoot } from '../schemas.js';
import { ConfigError } from '../errors.js';
import { createRouter, LlmCap, loadCalibration, policyUsesLlm, type DomainCalibration, type Router } from '../route/index.js';
import { loadLengthEstimator } from '../route/length-estimate.js';
import { EncoderTagger } from '../taggers/encoder.js';
import { resolveExistingModelDir } from '../taggers/model-bundle.js';

export { resolveExistingModelDir };
import { createLlmTagger, type LlmTagger } from '../taggers/llm/index.js';
import type { PipelineHooks } from '../telemetry/hooks.js';
import type { Logger } from '../telemetry/logger.js';
import { NoteProcessor, type TopicRoute } from './processor.js';
import { RouterService } from './service.js';

/**
 * The composition root: the one place that turns a validated config into the
 * running parts (models, router, processor, service). `run`, `demo` and
 * `bench` all build through `composeRouter`; tests pick single loaders.
 */

export async function loadEncoder(config: RouterConfig['encoder']): Promise<EncoderTagger> {
  return EncoderTagger.load(await resolveExistingModelDir(config.modelDir), {
    maxSequenceLength: config.maxSequenceLength,
    windowOverlapWords: config.windowOverlapWords,
    batchSize: config.batchSize,
    batchWaitMs: config.batchWaitMs,
    intraOpThreads: config.intraOpThreads,
    decode: config.decode,
  });
}

/** The LLM adapter of `llm.adapter`, or undefined when `routing.policy` never routes to the LLM (nothing is loaded then). */
export async function loadLlm(config: RouterConfig, logger?: Logger): Promise<LlmTagger | undefined> {
  if (!policyUsesLlm(config.routing.policy)) return undefined;
  return createLlmTagger(config.llm, { modelDir: await resolveExistingModelDir(config.llm.modelDir), encoder: config.encoder, logger });
}

/** A path as given, else relative to the package (models ship inside it). */
function packagePath(path: string): string {
  return existsSync(resolve(path)) ? resolve(path) : resolve(packageRoot, path);
}

function costModelOptions(config: RouterConfig): Parameters<typeof createRouter>[0]['costModel'] {
  return { halfLifeObservations: config.routing.costHalfLife, failureMemoryMs: config.routing.costFailureMemoryMs };
}

function routerSettings(config: RouterConfig): Parameters<typeof createRouter>[0]['settings'] {
  return { granularity: config.routing.granularity, minGain: config.routing.minGain, cascade: config.routing.cascade };
}

/** The LLM cost cap of routing.llmCap, or null when it sets no limit. One per process: every domain's router shares it (one LLM server). */
export function llmCapFor(config: RouterConfig): LlmCap | null {
  const cap = new LlmCap(config.routing.llmCap);
  return cap.active ? cap : null;
}

/** A router for one domain of the calibration file, with its estimator; `field` names the option a wrong domain came from. */
async function domainRouter(
  config: RouterConfig,
  domain: string,
  lengthEstimator: string | undefined,
  field: string,
  cap: LlmCap | null,
  logger: Logger | undefined,
): Promise<Router> {
  const { routing } = config;
  let calibration: DomainCalibration;
  try {
    calibration = await loadCalibration(packagePath(routing.calibrationFile), domain);
  } catch (err) {
    // The same check, named after the option that asked for this domain.
    if (err instanceof ConfigError && err.field === 'routing.domain' && field !== 'routing.domain')
      throw new ConfigError(field, err.problems[0].message, { cause: err });
    throw err;
  }
  if (calibration.partial === true) logger?.warn('the calibration entry was written by an interrupted calibrate run (partial)', { domain });
  let estimator = null;
  if (policyUsesLlm(routing.policy)) {
    const path = packagePath(lengthEstimator ?? `models/length-estimator/${domain}.json`);
    if (lengthEstimator !== undefined || existsSync(path)) estimator = await loadLengthEstimator(path);
    else logger?.warn('no entity-length estimator for the domain; routing on average gains', { domain });
  }
  return createRouter({ policy: routing.policy, calibration, estimator, settings: routerSettings(config), costModel: costModelOptions(config), cap });
}

/**
 * The router with its measured starting point: costs and gains of
 * `routing.domain` from `routing.calibrationFile`, and the entity-length
 * estimator (`routing.lengthEstimator`, default models/length-estimator/<domain>.json).
 * An explicitly configured estimator must load; the default one is optional
 * (without it, gains are taken at their all-entity average). `cap`: the
 * process's LLM cap (default: one from routing.llmCap for this router alone).
 */
export async function loadRouter(config: RouterConfig, logger?: Logger, cap: LlmCap | null = llmCapFor(config)): Promise<Router> {
  return domainRouter(config, config.routing.domain, config.routing.lengthEstimator, 'routing.domain', cap, logger);
}

/**
 * One route per entry of routing.domains: the router of that domain (its
 * calibration entry, its estimator, its own cost model), sharing `cap`, and
 * the LLM model name for the topic's requests (default llm.model).
 */
export async function loadTopicRoutes(config: RouterConfig, cap: LlmCap | null, logger?: Logger): Promise<Map<string, TopicRoute>> {
  const routes = new Map<string, TopicRoute>();
  for (const [topic, entry] of Object.entries(config.routing.domains)) {
    const router = await domainRouter(config, entry.domain, entry.lengthEstimator, `routing.domains.${topic}.domain`, cap, logger);
    routes.set(topic, { domain: entry.domain, router, llmModel: entry.llmModel ?? config.llm.model });
  }
  return routes;
}

/**
 * The note processor. Without a `router` (tests of the plain encoder path) one
 * is built with no calibration: fine for `encoder`, while the gain-based
 * policies then route nothing to the LLM.
 */
export function createProcessor(
  config: RouterConfig,
  encoder: EncoderTagger,
  hooks: PipelineHooks = {},
  llm?: LlmTagger,
  router?: Router,
  topics?: ReadonlyMap<string, TopicRoute>,
): NoteProcessor {
  const chosen =
    router ?? createRouter({ policy: config.routing.policy, calibration: null, settings: routerSettings(config), costModel: costModelOptions(config) });
  return new NoteProcessor(chosen, llm === undefined ? { encoder } : { encoder, llm }, hooks, {
    topics,
    // The LLM gets at most half the note's processing time; the rest is for the encoder fallback and publishing.
    llmMaxMs: Math.floor(config.processing.noteTimeoutMs / 2),
    budget: {
      defaultBudgetMs: config.routing.defaultBudgetMs,
      topicBudgets: config.routing.topicBudgets,
      // At maxInFlight the consumer stops fetching, so shedding has to start below it.
      load: { ...config.routing.load, inFlightHigh: config.routing.load.inFlightHigh ?? Math.max(1, Math.floor(config.processing.maxInFlight / 2)) },
    },
  });
}

export interface ComposeOptions {
  logger: Logger;
  hooks?: PipelineHooks;
  /** kafkaSecurityOptions(config.kafka), read once at start-up. */
  kafkaSecurity?: KafkaSecurityOptions;
  /** An encoder already loaded (shared between services in one process); loaded from config.encoder otherwise. */
  encoder?: EncoderTagger;
  /** Told as each part is ready (the CLI logs it, the demo shows progress). */
  onLoaded?: (part: 'encoder' | 'llm' | 'router', detail: Record<string, string | number>) => void;
}

export interface ComposedRouter {
  service: RouterService;
  processor: NoteProcessor;
  encoder: EncoderTagger;
  llm: LlmTagger | undefined;
  router: Router;
  /** routing.domains: the route of each listed input topic. */
  topics: ReadonlyMap<string, TopicRoute>;
  /** routing.llmCap, shared by every router (null without limits): its window is what the metrics report. */
  cap: LlmCap | null;
  /** Drains and stops the service, then releases the models it loaded (not a caller's encoder). */
  close(): Promise<void>;
}

/** Loads the models and the router of `config` and builds the streaming service over them (not started). */
export async function composeRouter(config: RouterConfig, options: ComposeOptions): Promise<ComposedRouter> {
  const { logger } = options;
  const encoder = options.encoder ?? (await loadEncoder(config.encoder));
  options.onLoaded?.('encoder', {
    model: encoder.model.id,
    version: encoder.model.version,
    labels: encoder.labels.length,
    maxSequenceLength: encoder.maxSequenceLength,
  });
  const llm = await loadLlm(config, logger);
  if (llm !== undefined) options.onLoaded?.('llm', { adapter: config.llm.adapter, model: llm.model.id, policy: config.routing.policy });
  const cap = llmCapFor(config);
  const router = await loadRouter(config, logger, cap);
  const topics = await loadTopicRoutes(config, cap, logger);
  options.onLoaded?.('router', { policy: router.policy, domain: config.routing.domain, topicDomains: topics.size });
  const processor = createProcessor(config, encoder, options.hooks ?? {}, llm, router, topics);
  const service = new RouterService(config, processor, logger, options.hooks ?? {}, options.kafkaSecurity ?? {});
  const close = async (): Promise<void> => {
    await service.close();
    if (options.encoder === undefined) await encoder.close();
    await llm?.close();
  };
  return { service, processor, encoder, llm, router, topics, cap, close };
}
