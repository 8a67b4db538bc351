import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from '../errors.js';
import { packageRoot } from '../schemas.js';
import { entityTypes, parseLabels } from './bio.js';
import type { ModelInfo } from './types.js';

/**
 * The model-independent half of a Hugging Face token-classification export:
 * `config.json` (id2label, max_position_embeddings), `tokenizer.json` and
 * `tokenizer_config.json`. The encoder, the in-process reference decoder and the
 * `vllm-pooling` client all read it; only the first two also load `model.onnx`.
 */
export interface ModelBundle {
  dir: string;
  model: ModelInfo;
  /** Label per logits column (from id2label). */
  labels: string[];
  tokenizer: Tokenizer;
  special: SpecialIds;
  /** The model's own limit in pieces incl. specials (max_position_embeddings / model_max_length, at most 512). */
  modelLimit: number;
  /** Byte-level BPE vocabularies mark a preceding space inside the piece ("Ġword"). */
  spacePrefixed: boolean;
}

export interface SpecialIds {
  cls: number;
  sep: number;
  pad: number;
  unk: number;
}

interface HfConfig {
  id2label?: Record<string, string>;
  max_position_embeddings?: number;
  _name_or_path?: string;
  bioner?: { name?: string; version?: string };
}

interface TokenizerConfig {
  model_max_length?: number;
  cls_token?: string | { content: string };
  sep_token?: string | { content: string };
  pad_token?: string | { content: string };
  unk_token?: string | { content: string };
  bos_token?: string | { content: string };
  eos_token?: string | { content: string };
  [key: string]: unknown;
}

function tokenContent(t: unknown): string | undefined {
  if (typeof t === 'string') return t;
  if (t !== null && typeof t === 'object' && 'content' in t && typeof (t as { content: unknown }).content === 'string') return (t as { content: string }).content;
  return undefined;
}

async function readJson<T>(dir: string, name: string, required: boolean): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, name), 'utf8')) as T;
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`cannot read ${name} in model directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** Just the labels of a model directory (config.json id2label), for adapters that need nothing else. */
export async function readModelLabels(dir: string): Promise<{ labels: string[]; model: ModelInfo }> {
  const modelDir = resolve(dir);
  const config = (await readJson<HfConfig>(modelDir, 'config.json', true)) as HfConfig;
  if (config.id2label === undefined) throw new ModelLoadError(`config.json in ${modelDir} has no id2label: not a token-classification export`);
  const labels = parseLabels(config.id2label);
  return { labels, model: modelInfo(config, modelDir, labels) };
}

function modelInfo(config: HfConfig, modelDir: string, labels: readonly string[]): ModelInfo {
  return {
    id: config.bioner?.name ?? (config._name_or_path !== undefined && config._name_or_path !== '' ? basename(config._name_or_path) : basename(modelDir)),
    version: config.bioner?.version ?? '0',
    entityTypes: entityTypes(labels),
  };
}

export async function loadModelBundle(dir: string): Promise<ModelBundle> {
  const modelDir = resolve(dir);
  const config = (await readJson<HfConfig>(modelDir, 'config.json', true)) as HfConfig;
  const tokenizerJson = (await readJson<Record<string, unknown>>(modelDir, 'tokenizer.json', true)) as Record<string, unknown>;
  const tokenizerConfig = (await readJson<TokenizerConfig>(modelDir, 'tokenizer_config.json', false)) ?? {};
  if (config.id2label === undefined) throw new ModelLoadError(`config.json in ${modelDir} has no id2label: not a token-classification export`);
  const labels = parseLabels(config.id2label);

  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  } catch (err) {
    throw new ModelLoadError(`tokenizer.json in ${modelDir} could not be loaded: ${(err as Error).message}`, { cause: err });
  }
  const idOf = (candidates: Array<string | undefined>, role: string): number => {
    for (const c of candidates) {
      if (c === undefined) continue;
      const id = tokenizer.token_to_id(c);
      if (id !== undefined) return id;
    }
    throw new ModelLoadError(`tokenizer in ${modelDir} has no ${role} token`);
  };
  // Encoder exports name [CLS]/[SEP] (or <s>/</s>); decoder exports may only have BOS/EOS, which take their place.
  const bos = tokenContent(tokenizerConfig.bos_token);
  const eos = tokenContent(tokenizerConfig.eos_token);
  const special: SpecialIds = {
    cls: idOf([tokenContent(tokenizerConfig.cls_token), '[CLS]', '<s>', bos], 'CLS/<s>'),
    sep: idOf([tokenContent(tokenizerConfig.sep_token), '[SEP]', '</s>', eos], 'SEP/</s>'),
    pad: idOf([tokenContent(tokenizerConfig.pad_token), '[PAD]', '<pad>', eos], 'PAD'),
    unk: idOf([tokenContent(tokenizerConfig.unk_token), '[UNK]', '<unk>', eos], 'UNK'),
  };

  const modelLimit = Math.min(
    config.max_position_embeddings ?? 512,
    tokenizerConfig.model_max_length !== undefined && tokenizerConfig.model_max_length < 1e6 ? tokenizerConfig.model_max_length : 512,
    512,
  );
  const preTokenizer = JSON.stringify(tokenizerJson.pre_tokenizer ?? null);
  return {
    dir: modelDir,
    model: modelInfo(config, modelDir, labels),
    labels,
    tokenizer,
    special,
    modelLimit,
    spacePrefixed: preTokenizer.includes('ByteLevel'),
  };
}

/** A model directory as given (relative to the working directory), else inside the package (the bundled models). */
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
