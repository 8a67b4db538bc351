import type { RouterConfig } from '../../config/schema.js';
import { ConfigError } from '../../errors.js';
import { silentLogger, type Logger } from '../../telemetry/logger.js';
import { entityTypes, parseLabels } from '../bio.js';
import { loadOnnxModel } from '../encoder.js';
import { loadModelBundle, readModelLabels, type ModelBundle } from '../model-bundle.js';
import { TokenClassifierTagger, type LogitsBackend, type TokenClassifierOptions } from '../token-classifier.js';
import type { ModelInfo, Tagger } from '../types.js';
import { LlmHttpClient, readApiKey } from './http.js';
import { OpenAiChatTagger } from './openai.js';
import { loadPromptTemplates } from './prompt.js';
import { VllmPoolingBackend } from './pooling.js';
import { GenerativeLlmTagger, isGenerativeBundle, readGenerativeLabels } from './generative.js';
import type { RealignStats } from './realign.js';

export { LlmHttpClient, readApiKey, type LlmClientOptions, type LlmClientStats, type CircuitStateName } from './http.js';
export { OpenAiChatTagger, structuredMode, type ScoreStats, type OpenAiTaggerOptions } from './openai.js';
export { DEFAULT_PROMPT, loadPromptTemplates, renderChat, renderCompletion, answerRegex, type PromptTemplates } from './prompt.js';
export { VllmPoolingBackend } from './pooling.js';
export {
  GenerativeDecoder,
  GenerativeLlmTagger,
  isGenerativeBundle,
  GENERATIVE_MODEL_TYPE,
  type GenerationRow,
  type GenerationResult,
  type GenerationStats,
} from './generative.js';
export type { RealignStats } from './realign.js';

export type LlmConfig = RouterConfig['llm'];

export interface LlmTaggerContext {
  /** llm.modelDir resolved to an existing directory (relative paths: cwd, then the package). */
  modelDir: string;
  /** Window, batch and decoding settings shared with the encoder. */
  encoder: RouterConfig['encoder'];
  logger?: Logger;
  onRealign?: (stats: RealignStats) => void;
}

/** An LLM adapter with what the pipeline may want to observe. */
export interface LlmTagger extends Tagger {
  readonly route: 'llm';
  /** Present for the remote adapters: request/retry/failure counts and the circuit state. */
  readonly client: LlmHttpClient | undefined;
}

/** The token-classification path on the `llm` route: the in-process reference decoder (`onnx`) or vLLM's /pooling. */
export class LlmTokenClassifier extends TokenClassifierTagger implements LlmTagger {
  declare readonly route: 'llm';
  constructor(
    bundle: ModelBundle,
    backend: LogitsBackend,
    options: TokenClassifierOptions,
    readonly client: LlmHttpClient | undefined,
  ) {
    super('llm', bundle, backend, options);
  }
}

export function httpClientFor(config: LlmConfig, apiKey: string | undefined, logger: Logger): LlmHttpClient {
  if (config.baseUrl === undefined) throw new ConfigError('llm.baseUrl', `is required for llm.adapter "${config.adapter}"`);
  return new LlmHttpClient({
    baseUrl: config.baseUrl,
    apiKey,
    timeoutMs: config.timeoutMs,
    maxConcurrency: config.maxConcurrency,
    retries: config.retries,
    retryBackoffMs: config.retryBackoffMs,
    circuit: config.circuit,
    logger: logger.child({ component: 'llm', adapter: config.adapter }),
  });
}

/**
 * The LLM tagger chosen by `llm.adapter` (route `llm` for all three):
 * - `onnx`: the bundle in llm.modelDir, in-process: a generative decoder (`model_type` bioner-generative-decoder:
 *   KV-cache generation of the answer lines) or a token-classification export (same path as the encoder);
 * - `openai`: chat or text completions at llm.baseUrl (llm.endpoint), the prompt of llm.promptFile,
 *   labels from llm.labels, else llm.modelDir's id2label (or `labels` of a generative bundle);
 * - `vllm-pooling`: /pooling token_classify at llm.baseUrl, tokenised locally with llm.modelDir.
 */
export async function createLlmTagger(config: LlmConfig, ctx: LlmTaggerContext): Promise<LlmTagger> {
  const logger = ctx.logger ?? silentLogger;
  const shared = {
    windowOverlapWords: ctx.encoder.windowOverlapWords,
    batchWaitMs: ctx.encoder.batchWaitMs,
    decode: ctx.encoder.decode,
  };
  switch (config.adapter) {
    case 'onnx': {
      if (await isGenerativeBundle(ctx.modelDir)) {
        return GenerativeLlmTagger.load(ctx.modelDir, {
          intraOpThreads: ctx.encoder.intraOpThreads,
          batchSize: ctx.encoder.batchSize,
          batchWaitMs: ctx.encoder.batchWaitMs,
          windowOverlapWords: ctx.encoder.windowOverlapWords,
        });
      }
      const { bundle, backend } = await loadOnnxModel(ctx.modelDir, { intraOpThreads: ctx.encoder.intraOpThreads });
      return new LlmTokenClassifier(bundle, backend, { ...shared, batchSize: ctx.encoder.batchSize, maxConcurrentBatches: 1 }, undefined);
    }
    case 'vllm-pooling': {
      if (await isGenerativeBundle(ctx.modelDir))
        throw new ConfigError(
          'llm.modelDir',
          'is a generative decoder bundle; the vllm-pooling adapter needs a token-classification export (id2label and logits per token)',
        );
      const apiKey = await readApiKey(config.apiKeyFile);
      const bundle = await loadModelBundle(ctx.modelDir);
      const client = httpClientFor(config, apiKey, logger);
      const backend = new VllmPoolingBackend(client, bundle.labels.length, config.model);
      // One window per request: vLLM batches concurrent requests itself; maxConcurrency bounds them.
      return new LlmTokenClassifier(bundle, backend, { ...shared, batchSize: 1, batchWaitMs: 0, maxConcurrentBatches: config.maxConcurrency }, client);
    }
    case 'openai': {
      const apiKey = await readApiKey(config.apiKeyFile);
      let labels: string[];
      let model: ModelInfo;
      if (config.labels !== undefined) {
        labels = parseLabels(Object.fromEntries(config.labels.map((l, i) => [String(i), l])));
        model = { id: config.model ?? 'llm', version: '0', entityTypes: entityTypes(labels) };
      } else {
        const read = (await isGenerativeBundle(ctx.modelDir)) ? await readGenerativeLabels(ctx.modelDir) : await readModelLabels(ctx.modelDir);
        labels = read.labels;
        model = config.model === undefined ? read.model : { ...read.model, id: config.model };
      }
      const prompt = await loadPromptTemplates(config.promptFile);
      const client = httpClientFor(config, apiKey, logger);
      return new OpenAiChatTagger(client, model, labels, {
        model: config.model,
        endpoint: config.endpoint,
        structuredOutputs: config.structuredOutputs,
        wordSplit: config.wordSplit,
        prompt,
        logprobs: config.logprobs,
        onRealign: ctx.onRealign,
      });
    }
  }
}
