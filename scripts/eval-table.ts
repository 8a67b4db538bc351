/**
 * `npm run eval:table`: evaluates the reference encoder and LLM bundles on the
 * three devel sets, writes the accuracy/cost table into README.md (between the
 * eval-table markers) and the measured calibration file the router starts from
 * (models/calibration.json). Costs are wall-clock milliseconds of tagging
 * measured in this run, batched as in the pipeline, on this machine.
 *
 * Usage: node --import tsx scripts/eval-table.ts [--data DIR] [--only encoder]
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { validateConfig } from '../src/config/load.js';
import { evaluateIob, evaluateStandoff, type EvalReport } from '../src/eval/evaluate.js';
import { EncoderTagger } from '../src/taggers/encoder.js';
import { createLlmTagger } from '../src/taggers/llm/index.js';
import type { Tagger } from '../src/taggers/types.js';

const root = resolve(new URL('..', import.meta.url).pathname);
const { values } = parseArgs({ options: { data: { type: 'string', default: resolve(root, '../shared/data') }, only: { type: 'string' } } });
const data = values.data as string;

const datasets = [
  { id: 'bc5cdr', name: 'BC5CDR devel', path: 'BC5CDR-IOB/devel.tsv', format: 'iob' as const },
  { id: 'ncbi-disease', name: 'NCBI-disease devel', path: 'NCBI-disease-IOB/devel.tsv', format: 'iob' as const },
  { id: 'jnlpba', name: 'JNLPBA-standoff devel', path: 'JNLPBA-standoff/devel', format: 'standoff' as const },
];
const buckets = ['1', '2', '3+'] as const;

async function loadTagger(route: 'encoder' | 'llm', dir: string): Promise<Tagger> {
  if (route === 'encoder') return EncoderTagger.load(dir);
  const config = validateConfig({ llm: { adapter: 'onnx', modelDir: dir } });
  return createLlmTagger(config.llm, { modelDir: dir, encoder: config.encoder });
}

interface RouteResult {
  model: string;
  f1: Record<'all' | (typeof buckets)[number], number>;
  support: Record<(typeof buckets)[number], number>;
  ms_per_sentence: number;
  ms_per_token: number;
}

const f = (x: number): string => (100 * x).toFixed(1);
const results: Record<string, { data: string; sentences: number; tokens: number; routes: Partial<Record<'encoder' | 'llm', RouteResult>> }> = {};

for (const ds of datasets) {
  const path = join(data, ds.path);
  if (!existsSync(path)) {
    process.stderr.write(`skipping ${ds.name}: ${path} not found\n`);
    continue;
  }
  for (const route of ['encoder', 'llm'] as const) {
    if (values.only !== undefined && values.only !== route) continue;
    // The LLM route's reference model is the generative decoder (models/<ds>-generative).
    const bundle = `${ds.id}-${route === 'encoder' ? 'encoder' : 'generative'}`;
    const dir = join(root, 'models', bundle);
    if (!existsSync(join(dir, 'model.onnx'))) {
      process.stderr.write(`skipping ${bundle}: no bundle\n`);
      continue;
    }
    // Interface previews (version "...-smoke") are not trained models: calibrating from them would be wrong.
    const version = (JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { bioner?: { version?: string } }).bioner?.version ?? '';
    if (version.includes('smoke')) {
      process.stderr.write(`skipping ${bundle}: ${version} is an untrained preview\n`);
      continue;
    }
    const tagger = await loadTagger(route, dir);
    let r: EvalReport;
    try {
      r = ds.format === 'iob' ? await evaluateIob(tagger, path) : await evaluateStandoff(tagger, path);
    } finally {
      await tagger.close();
    }
    const msPerSentence = (1000 * r.tagging_seconds) / r.sentences;
    results[ds.id] ??= { data: ds.path, sentences: r.sentences, tokens: r.tokens, routes: {} };
    results[ds.id].routes[route] = {
      model: bundle,
      f1: { all: r.f1, '1': r.by_length['1'].f1, '2': r.by_length['2'].f1, '3+': r.by_length['3+'].f1 },
      support: { '1': r.by_length['1'].support, '2': r.by_length['2'].support, '3+': r.by_length['3+'].support },
      ms_per_sentence: msPerSentence,
      ms_per_token: (1000 * r.tagging_seconds) / r.tokens,
    };
    process.stderr.write(`${ds.name} ${route}: F1 ${f(r.f1)} (3+: ${f(r.by_length['3+'].f1)}), ${msPerSentence.toFixed(2)} ms/sentence\n`);
  }
}

const lines = [
  `Strict entity-level F1 (%) on the devel sets, overall and by entity length in tokens (the pipeline's word split); cost = wall-clock ms per sentence, batched as in the pipeline (${cpus().length} cores, ${cpus()[0]?.model ?? 'cpu'}). Written by \`npm run eval:table\`.`,
  '',
  '| data | tagger | F1 | 1 token | 2 tokens | 3+ tokens | ms/sentence |',
  '|---|---|---:|---:|---:|---:|---:|',
];
const calibration: Record<string, unknown> = {};
for (const [id, res] of Object.entries(results)) {
  const name = datasets.find((d) => d.id === id)?.name ?? id;
  for (const route of ['encoder', 'llm'] as const) {
    const r = res.routes[route];
    if (r === undefined) continue;
    lines.push(`| ${name} | ${r.model} | ${f(r.f1.all)} | ${f(r.f1['1'])} | ${f(r.f1['2'])} | ${f(r.f1['3+'])} | ${r.ms_per_sentence.toFixed(2)} |`);
  }
  const { encoder, llm } = res.routes;
  let gain: Record<string, number> | undefined;
  let costRatio: number | undefined;
  if (encoder !== undefined && llm !== undefined) {
    gain = Object.fromEntries((['all', ...buckets] as const).map((b) => [b, llm.f1[b] - encoder.f1[b]]));
    costRatio = llm.ms_per_sentence / encoder.ms_per_sentence;
    const sign = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
    lines.push(
      `| ${name} | **LLM - encoder** | ${sign(gain.all)} | ${sign(gain['1'])} | ${sign(gain['2'])} | ${sign(gain['3+'])} | x${costRatio.toFixed(1)} |`,
    );
  }
  calibration[id] = {
    data: res.data,
    sentences: res.sentences,
    tokens: res.tokens,
    support_by_length: (encoder ?? llm)?.support,
    routes: Object.fromEntries(
      Object.entries(res.routes).map(([k, v]) => [
        k,
        { model: v.model, f1: v.f1, ms_per_sentence: Number(v.ms_per_sentence.toFixed(4)), ms_per_token: Number(v.ms_per_token.toFixed(5)) },
      ]),
    ),
    ...(gain === undefined ? {} : { llm_gain: gain, cost_ratio: Number((costRatio as number).toFixed(3)) }),
  };
}

const table = lines.join('\n');
process.stdout.write(table + '\n');
if (values.only === undefined) {
  await writeFile(
    join(root, 'models/calibration.json'),
    JSON.stringify(
      {
        generated_by: 'npm run eval:table',
        generated_at: new Date().toISOString(),
        machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown' },
        cost_unit: 'wall-clock milliseconds, batched',
        datasets: calibration,
      },
      null,
      2,
    ) + '\n',
  );
  const readmePath = join(root, 'README.md');
  const readme = await readFile(readmePath, 'utf8');
  const start = '<!-- eval-table:start -->';
  const end = '<!-- eval-table:end -->';
  if (readme.includes(start) && readme.includes(end)) {
    await writeFile(readmePath, readme.slice(0, readme.indexOf(start) + start.length) + '\n' + table + '\n' + readme.slice(readme.indexOf(end)));
    process.stderr.write('README.md table and models/calibration.json updated\n');
  }
}
