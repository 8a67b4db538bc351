import type { RouterConfig } from '../config/schema.js';
import { resolve } from 'node:path';
import { packageRoot } from '../schemas.js';
import { createPolicy, policyUsesLlm } from '../route/policy.js';
import { EncoderTagger } from '../taggers/encoder.js';
import { createLlmTagger, type LlmTagger } from '../taggers/llm/index.js';
import { NoteProcessor } from '../pipeline/processor.js';
import type { PipelineHooks } from '../telemetry/hooks.js';
import type { Logger } from '../telemetry/logger.js';


export async function resolveExistingModelDir(dir: string): Promise<string> {
  const { access } = await import('node:fs/promises');
  for (const candidate of [resolve(dir), resolve(packageRoot, dir)]) {
    try {
      await access(resolve(candidate, 'config.json'));
      return candidate;
    } catch {
      // try the next candidate
    }
  }
  return resolve(dir);
}

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

export function createProcessor(config: RouterConfig, encoder: EncoderTagger, hooks: PipelineHooks = {}, llm?: LlmTagger): NoteProcessor {
  return new NoteProcessor(createPolicy(config.routing.policy, config.routing.defaultBudgetMs), llm === undefined ? { encoder } : { encoder, llm }, hooks, {
    // The LLM gets at most half the note's processing time; the rest is for the encoder fallback and publishing.
    llmMaxMs: Math.floor(config.processing.noteTimeoutMs / 2),
  });
}
