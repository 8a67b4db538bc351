import { ConfigSchema } from '../config/schema.js';
import { DataFormatError } from '../errors.js';
import { evaluateIob, evaluateStandoff, type EvalReport } from '../eval/evaluate.js';
import { loadEncoder } from './components.js';

const pct = (x: number): string => (100 * x).toFixed(2).padStart(6);

export function formatReport(r: EvalReport): string {
  const lines = [
    `strict entity-level scores (${r.documents} documents, ${r.sentences} sentences)`,
    `${'scope'.padEnd(14)} ${'P'.padStart(6)} ${'R'.padStart(6)} ${'F1'.padStart(6)} ${'support'.padStart(8)}`,
    `${'overall'.padEnd(14)} ${pct(r.precision)} ${pct(r.recall)} ${pct(r.f1)} ${String(r.tp + r.fn).padStart(8)}`,
  ];
  for (const [label, s] of Object.entries(r.by_label)) lines.push(`${label.padEnd(14)} ${pct(s.precision)} ${pct(s.recall)} ${pct(s.f1)} ${String(s.support).padStart(8)}`);
  for (const [len, s] of Object.entries(r.by_length)) lines.push(`${`length ${len}`.padEnd(14)} ${pct(s.precision)} ${pct(s.recall)} ${pct(s.f1)} ${String(s.support).padStart(8)}`);
  lines.push(`tagging: ${r.sentences_per_s.toFixed(1)} sentences/s (${r.tagging_seconds.toFixed(1)} s)`);
  return lines.join('\n');
}

const round = (x: number): number => Number(x.toFixed(4));

export function reportJson(r: EvalReport, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const prfOnly = (s: { precision: number; recall: number; f1: number; support?: number }) => ({ f1: round(s.f1), precision: round(s.precision), recall: round(s.recall), ...(s.support === undefined ? {} : { support: s.support }) });
  return {
    f1: round(r.f1),
    precision: round(r.precision),
    recall: round(r.recall),
    by_length: Object.fromEntries(Object.entries(r.by_length).map(([k, v]) => [k, prfOnly(v)])),
    by_label: Object.fromEntries(Object.entries(r.by_label).map(([k, v]) => [k, prfOnly(v)])),
    sentences_per_s: Number(r.sentences_per_s.toFixed(1)),
    sentences: r.sentences,
    documents: r.documents,
    ...extra,
  };
}

/** `bioner-router eval --model DIR --data PATH --format iob|standoff [--json]`. */
export async function evalCommand(opts: { model: string | undefined; data: string; format: string; json: boolean }): Promise<void> {
  if (opts.format !== 'iob' && opts.format !== 'standoff') throw new DataFormatError(`--format must be iob or standoff, got "${opts.format}"`);
  const config = ConfigSchema.parse(opts.model === undefined ? {} : { encoder: { modelDir: opts.model } });
  const encoder = await loadEncoder(config.encoder);
  try {
    const r = opts.format === 'iob' ? await evaluateIob(encoder, opts.data) : await evaluateStandoff(encoder, opts.data);
    process.stdout.write(formatReport(r) + '\n');
    if (opts.json) process.stdout.write(JSON.stringify(reportJson(r, { tagger: 'encoder', model: encoder.model.id })) + '\n');
  } finally {
    await encoder.close();
  }
}
