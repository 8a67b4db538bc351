import type { RouterConfig } from '../config/schema.js';
import { resolve } from 'node:path';
import { packageRoot } from '../schemas.js';
import { EncoderOnlyPolicy } from '../route/policy.js';
import { EncoderTagger } from '../taggers/encoder.js';
import { NoteProcessor } from '../pipeline/processor.js';
import type { PipelineHooks } from '../telemetry/hooks.js';


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

export function createProcessor(config: RouterConfig, encoder: EncoderTagger, hooks: PipelineHooks = {}): NoteProcessor {
  return new NoteProcessor(new EncoderOnlyPolicy(config.routing.defaultBudgetMs), { encoder }, hooks);
}
