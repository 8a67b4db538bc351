import { validateConfig } from '../config/load.js';
import { DataFormatError } from '../errors.js';
import { evaluateIob, evaluateStandoff, type EvalReport } from '../eval/evaluate.js';
import type { LengthBucket } from '../eval/scorer.js';
import { createLlmTagger } from '../taggers/llm/index.js';
import type { Tagger } from '../taggers/types.js';
import { loadEncoder, resolveExistingModelDir } from '../pipeline/compose.js';

const pct = (x: number): string => (100 * x).toFixed(2).padStart(6);

/** Length buckets count tokens (the pipeline's word split), so they are named so. */
const BUCKET_NAME: Record<LengthBucket, string> = { '1': '1 token', '2': '2 tokens', '3+': '3+ tokens' };

/**
 * What formatReport and reportJson read. `tokens` is optional because the router
 * report (src/eval/router-eval.ts) passes its own shape here.
 */
export type ReportInput = Omit<EvalReport, 'tokens'> & { tokens?: number };

export function formatReport(r: ReportInput): string {
  const lines = [
    `strict entity-level scores (${r.documents} documents, ${r.sentences} sentences)`,
    `${'scope'.padEnd(14)} ${'P'.padStart(6)} ${'R'.padStart(6)} ${'F1'.padStart(6)} ${'support'.padStart(8)}`,
    `${'overall'.padEnd(14)} ${pct(r.precision)} ${pct(r.recall)} ${pct(r.f1)} ${String(r.tp + r.fn).padStart(8)}`,
  ];
  for (const [label, s] of Object.entries(r.by_label))
    lines.push(`${label.padEnd(14)} ${pct(s.precision)} ${pct(s.recall)} ${pct(s.f1)} ${String(s.support).padStart(8)}`);
  for (const [len, s] of Object.entries(r.by_length))
    lines.push(`${BUCKET_NAME[len as LengthBucket].padEnd(14)} ${pct(s.precision)} ${pct(s.recall)} ${pct(s.f1)} ${String(s.support).padStart(8)}`);
  lines.push(
    `tagging: ${r.sentences_per_s.toFixed(1)} sentences/s, ${r.sentences > 0 ? ((r.tagging_seconds * 1000) / r.sentences).toFixed(2) : '0'} ms/sentence (${r.tagging_seconds.toFixed(1)} s)`,
  );
  return lines.join('\n');
}

const round = (x: number): number => Number(x.toFixed(4));

/**
 * The `--json` line. `by_length` keys are token counts (`1`, `2`, `3+`);
 * `tokens` is the number of tokens tagged.
 */
export function reportJson(r: ReportInput, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const prfOnly = (s: { precision: number; recall: number; f1: number; support?: number }) => ({
    f1: round(s.f1),
    precision: round(s.precision),
    recall: round(s.recall),
    ...(s.support === undefined ? {} : { support: s.support }),
  });
  return {
    f1: round(r.f1),
    precision: round(r.precision),
    recall: round(r.recall),
    by_length: Object.fromEntries(Object.entries(r.by_length).map(([k, v]) => [k, prfOnly(v)])),
    by_label: Object.fromEntries(Object.entries(r.by_label).map(([k, v]) => [k, prfOnly(v)])),
    sentences_per_s: Number(r.sentences_per_s.toFixed(1)),
    ms_per_sentence: r.sentences > 0 ? Number(((r.tagging_seconds * 1000) / r.sentences).toFixed(3)) : 0,
    sentences: r.sentences,
    ...(r.tokens === undefined ? {} : { tokens: r.tokens }),
    documents: r.documents,
    ...extra,
  };
}

export interface EvalOptions {
  model: string | undefined;
  data: string;
  format: string;
  json: boolean;
  /** `encoder` (default) or `llm`. */
  tagger?: 'encoder' | 'llm';
  /** For `--tagger llm`: onnx (in-process, default), openai or vllm-pooling. */
  llmAdapter?: 'onnx' | 'openai' | 'vllm-pooling';
  llmUrl?: string;
  llmModel?: string;
  /** `--predictions FILE` (IOB data only): conlleval input, `token gold pred` per line. */
  predictions?: string;
}

/**
 * `bioner-router eval [--tagger encoder|llm] --model DIR --data PATH --format iob|standoff [--json] [--predictions FILE]`.
 * With `--tagger llm`, `--model` is the LLM bundle (default models/bc5cdr-generative),
 * tagged in-process unless `--llm-adapter openai|vllm-pooling --llm-url URL`
 * sends it to a server (the bundle then gives the labels / tokenizer). There is
 * no fallback here: a failing LLM fails the evaluation. `--predictions` writes
 * what was scored in conlleval's input format, so conlleval or seqeval can
 * check the scores.
 */
export async function evalCommand(opts: EvalOptions): Promise<void> {
  if (opts.format !== 'iob' && opts.format !== 'standoff') throw new DataFormatError(`--format must be iob or standoff, got "${opts.format}"`);
  // Standoff gold spans are character offsets that need not fall on token boundaries: as token tags they would not be what was scored.
  if (opts.predictions !== undefined && opts.format !== 'iob') throw new DataFormatError('--predictions needs --format iob');
  const which = opts.tagger ?? 'encoder';
  let tagger: Tagger;
  if (which === 'encoder') {
    const config = validateConfig(opts.model === undefined ? {} : { encoder: { modelDir: opts.model } });
    tagger = await loadEncoder(config.encoder);
  } else {
    const llm: Record<string, unknown> = { adapter: opts.llmAdapter ?? 'onnx' };
    if (opts.model !== undefined) llm.modelDir = opts.model;
    if (opts.llmUrl !== undefined) llm.baseUrl = opts.llmUrl;
    if (opts.llmModel !== undefined) llm.model = opts.llmModel;
    // Evaluation waits for the server: generous request timeout, the breaker effectively off.
    const config = validateConfig({
      llm: { timeoutMs: 60000, circuit: { failureThreshold: 1000 }, ...llm },
      processing: { noteTimeoutMs: 120000 },
      shutdown: { drainTimeoutMs: 120000 },
    });
    tagger = await createLlmTagger(config.llm, { modelDir: await resolveExistingModelDir(config.llm.modelDir), encoder: config.encoder });
  }
  try {
    const r = opts.format === 'iob' ? await evaluateIob(tagger, opts.data, { predictions: opts.predictions }) : await evaluateStandoff(tagger, opts.data);
    process.stdout.write(formatReport(r) + '\n');
    if (opts.json)
      process.stdout.write(
        JSON.stringify(reportJson(r, { tagger: which, model: tagger.model.id, ...(which === 'llm' ? { adapter: opts.llmAdapter ?? 'onnx' } : {}) })) + '\n',
      );
  } finally {
    await tagger.close();
  }
}
