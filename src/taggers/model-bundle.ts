import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { z } from 'zod';
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

// ---------------------------------------------------------------- file formats of the bundle

/** Zod messages that read after `field "<path>"`: "is missing" or "must be <what>", never quoting the value. */
const must = (what: string) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? 'is missing' : `must be ${what}`) });

/** A special token as tokenizer files write it: the string, an AddedToken object, or null for none. */
const TokenSchema = z
  .union([z.string(), z.looseObject({ content: z.string() })], must('a token string or {"content": string}'))
  .nullable()
  .optional();
type TokenEntry = z.infer<typeof TokenSchema>;

/** config.json, as far as the router reads it (the rest of a Hugging Face config is ignored). */
export const HfConfigSchema = z.object(
  {
    id2label: z.record(z.string(), z.string(must('a label string')), must('an object of id -> label')).optional(),
    max_position_embeddings: z.int(must('a positive integer')).positive(must('a positive integer')).optional(),
    _name_or_path: z.string(must('a string')).optional(),
    /** Written by training/: the model's published name and version. */
    bioner: z.object({ name: z.string(must('a string')).optional(), version: z.string(must('a string')).optional() }, must('an object')).optional(),
  },
  must('a JSON object'),
);
export type HfConfig = z.infer<typeof HfConfigSchema>;

/** tokenizer_config.json. Loose: the tokenizer library reads keys of its own from the same object. */
/** The special-token names both tokenizer_config.json and special_tokens_map.json may carry. */
const SPECIAL_TOKEN_FIELDS = {
  cls_token: TokenSchema,
  sep_token: TokenSchema,
  pad_token: TokenSchema,
  unk_token: TokenSchema,
  bos_token: TokenSchema,
  eos_token: TokenSchema,
};

export const TokenizerConfigSchema = z.looseObject({ model_max_length: z.number(must('a number')).optional(), ...SPECIAL_TOKEN_FIELDS }, must('a JSON object'));
export type TokenizerConfig = z.infer<typeof TokenizerConfigSchema>;

/** special_tokens_map.json: where exports name special tokens that tokenizer_config.json leaves out. */
export const SpecialTokensMapSchema = z.object(SPECIAL_TOKEN_FIELDS, must('a JSON object'));
export type SpecialTokensMap = z.infer<typeof SpecialTokensMapSchema>;

/** tokenizer.json: only its outline is checked here; the tokenizer library validates the rest. */
export const TokenizerJsonSchema = z.looseObject({ model: z.looseObject({}, must('an object')), pre_tokenizer: z.unknown().optional() }, must('a JSON object'));

function tokenContent(t: TokenEntry): string | undefined {
  if (typeof t === 'string') return t;
  return t?.content;
}

/** Reads and checks one JSON file of a bundle (any kind); a missing optional file is undefined. */
export async function readJson<S extends z.ZodType>(dir: string, name: string, schema: S, required: true): Promise<z.output<S>>;
export async function readJson<S extends z.ZodType>(dir: string, name: string, schema: S, required: false): Promise<z.output<S> | undefined>;
export async function readJson<S extends z.ZodType>(dir: string, name: string, schema: S, required: boolean): Promise<z.output<S> | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, name), 'utf8'));
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`cannot read ${name} in model directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const at = issue.path.length === 0 ? '' : ` field "${issue.path.map(String).join('.')}"`;
  throw new ModelLoadError(`${name} in model directory ${dir}:${at} ${issue.message}`);
}

/** Just the labels of a model directory (config.json id2label), for adapters that need nothing else. */
export async function readModelLabels(dir: string): Promise<{ labels: string[]; model: ModelInfo }> {
  const modelDir = resolve(dir);
  const config = await readJson(modelDir, 'config.json', HfConfigSchema, true);
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
  const config = await readJson(modelDir, 'config.json', HfConfigSchema, true);
  const tokenizerJson = await readJson(modelDir, 'tokenizer.json', TokenizerJsonSchema, true);
  const tokenizerConfig: TokenizerConfig = (await readJson(modelDir, 'tokenizer_config.json', TokenizerConfigSchema, false)) ?? {};
  const specialMap: SpecialTokensMap = (await readJson(modelDir, 'special_tokens_map.json', SpecialTokensMapSchema, false)) ?? {};
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
  // tokenizer_config.json first, as the tokenizer library reads it; special_tokens_map.json fills what it leaves out.
  const named = (role: 'cls_token' | 'sep_token' | 'pad_token' | 'unk_token' | 'bos_token' | 'eos_token'): string | undefined =>
    tokenContent(tokenizerConfig[role]) ?? tokenContent(specialMap[role]);
  // Encoder exports name [CLS]/[SEP] (or <s>/</s>); decoder exports may only have BOS/EOS, which take their place.
  const bos = named('bos_token');
  const eos = named('eos_token');
  const special: SpecialIds = {
    cls: idOf([named('cls_token'), '[CLS]', '<s>', bos], 'CLS/<s>'),
    sep: idOf([named('sep_token'), '[SEP]', '</s>', eos], 'SEP/</s>'),
    pad: idOf([named('pad_token'), '[PAD]', '<pad>', eos], 'PAD'),
    unk: idOf([named('unk_token'), '[UNK]', '<unk>', eos], 'UNK'),
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
