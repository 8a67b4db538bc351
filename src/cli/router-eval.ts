import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { validateConfig } from '../config/load.js';
import { DataFormatError } from '../errors.js';
import { frontierCsv, frontierSummary, frontierSvg, paretoFront, type FrontierPoint } from '../eval/frontier-plot.js';
import { evaluateRouter, readEvalNotes, replayRouter, tagCorpus, type RouterEvalReport, type RouterSetting } from '../eval/router-eval.js';
import { loadCalibration, POLICY_NAMES, type DomainCalibration, type PolicyName } from '../route/index.js';
import { loadLengthEstimator, type LogisticLengthEstimator } from '../route/length-estimate.js';
import { packageRoot } from '../schemas.js';
import { createLlmTagger } from '../taggers/llm/index.js';
import type { Tagger } from '../taggers/types.js';
import { loadEncoder, resolveExistingModelDir } from '../pipeline/compose.js';
import { reportJson } from './eval.js';

export interface RouterEvalOptions {
  model: string | undefined;
  llmModel: string | undefined;
  data: string;
  format: string;
  json: boolean;
  policy: string;
  budgetMs: number;
  domain?: string;
  calibration?: string;
  noteSentences?: number;
  granularity?: string;
}

const round = (x: number, d = 4): number => Number(x.toFixed(d));

function packagePath(path: string): string {
  return existsSync(resolve(path)) ? resolve(path) : resolve(packageRoot, path);
}

interface Loaded {
  taggers: { encoder: Tagger; llm: Tagger };
  calibration: DomainCalibration;
  estimator: LogisticLengthEstimator | null;
  domain: string;
}

/** Encoder, in-process LLM, calibration and length estimator for a domain (guessed from the encoder's name: jnlpba-encoder -> jnlpba). */
async function loadRouterParts(opts: { model: string | undefined; llmModel: string | undefined; domain?: string; calibration?: string }): Promise<Loaded> {
  const config = validateConfig({
    ...(opts.model === undefined ? {} : { encoder: { modelDir: opts.model } }),
    llm: { adapter: 'onnx', ...(opts.llmModel === undefined ? {} : { modelDir: opts.llmModel }) },
  });
  const encoder = await loadEncoder(config.encoder);
  const llm = await createLlmTagger(config.llm, { modelDir: await resolveExistingModelDir(config.llm.modelDir), encoder: config.encoder });
  const domain = opts.domain ?? encoder.model.id.replace(/-encoder$/, '');
  const calibration = await loadCalibration(packagePath(opts.calibration ?? 'models/calibration.json'), domain);
  const estimatorPath = packagePath(`models/length-estimator/${domain}.json`);
  const estimator = existsSync(estimatorPath) ? await loadLengthEstimator(estimatorPath) : null;
  return { taggers: { encoder, llm }, calibration, estimator, domain };
}

function parsePolicy(policy: string): PolicyName {
  if (!(POLICY_NAMES as readonly string[]).includes(policy)) throw new DataFormatError(`--policy must be one of ${POLICY_NAMES.join(', ')}, got "${policy}"`);
  return policy as PolicyName;
}

function checkFormat(format: string): 'iob' | 'standoff' {
  if (format !== 'iob' && format !== 'standoff') throw new DataFormatError(`--format must be iob or standoff, got "${format}"`);
  return format;
}

function routerJson(r: RouterEvalReport, extra: Record<string, unknown>): Record<string, unknown> {
  return {
    ...reportJson({
      ...r,
      tagging_seconds: (r.cost_ms_per_sentence * r.sentences) / 1000,
      sentences_per_s: r.cost_ms_per_sentence > 0 ? 1000 / r.cost_ms_per_sentence : 0,
    }),
    tagger: 'router',
    policy: r.setting.policy,
    budget_ms: r.setting.budgetMs,
    llm_share: round(r.llm_share),
    cost_ms_per_sentence: round(r.cost_ms_per_sentence, 3),
    over_budget_notes: r.over_budget_notes,
    ...extra,
  };
}

/**
 * `eval --tagger router`: the real processor over the real encoder and
 * in-process LLM, in real time, one note after another.
 */
export async function evalRouterCommand(opts: RouterEvalOptions): Promise<void> {
  const format = checkFormat(opts.format);
  const policy = parsePolicy(opts.policy);
  const parts = await loadRouterParts(opts);
  try {
    const notes = await readEvalNotes(opts.data, format, opts.noteSentences ?? 10);
    const granularity = opts.granularity === 'note' ? 'note' : 'sentence';
    const r = await evaluateRouter(notes, { policy, budgetMs: opts.budgetMs, settings: { granularity } }, parts.calibration, parts.estimator, parts.taggers);
    process.stdout.write(
      `router ${policy} (budget ${opts.budgetMs} ms/note, domain ${parts.domain}): F1 ${(100 * r.f1).toFixed(2)}, 3+ words ${(100 * r.by_length['3+'].f1).toFixed(2)}, ` +
        `LLM share ${(100 * r.llm_share).toFixed(1)}%, ${r.cost_ms_per_sentence.toFixed(2)} ms/sentence over ${r.sentences} sentences in ${r.documents} notes\n`,
    );
    if (opts.json)
      process.stdout.write(
        JSON.stringify(routerJson(r, { model: parts.taggers.encoder.model.id, llm_model: parts.taggers.llm.model.id, domain: parts.domain, mode: 'live' })) +
          '\n',
      );
  } finally {
    await parts.taggers.encoder.close();
    await parts.taggers.llm.close();
  }
}

export interface FrontierOptions {
  model: string | undefined;
  llmModel: string | undefined;
  data: string;
  format: string;
  out: string | undefined;
  domain?: string;
  calibration?: string;
  noteSentences?: number;
  /** Budgets as fractions of the median note's all-LLM cost. */
  budgetFractions?: number[];
}

const DEFAULT_FRACTIONS = [0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1, 1.5];

/**
 * `frontier`: tags the corpus once with each tagger, then replays every
 * policy x budget setting through the real router (costs on a simulated clock,
 * see replayRouter), and writes <out>/<domain>.csv and .svg plus a JSON line
 * with the headline: the share of the LLM's F1 gain kept and at what share of
 * the all-LLM cost.
 */
export async function frontierCommand(opts: FrontierOptions): Promise<void> {
  const format = checkFormat(opts.format);
  const parts = await loadRouterParts(opts);
  try {
    const notes = await readEvalNotes(opts.data, format, opts.noteSentences ?? 10);
    process.stderr.write(`frontier: tagging ${notes.length} notes with ${parts.taggers.encoder.model.id} and ${parts.taggers.llm.model.id}\n`);
    const corpus = await tagCorpus(notes, parts.taggers);
    const models = { encoder: parts.taggers.encoder.model, llm: parts.taggers.llm.model };
    const replay = (s: RouterSetting): Promise<RouterEvalReport> => replayRouter(corpus, s, parts.calibration, parts.estimator, models);
    const unlimited = 1e9;
    const settings: RouterSetting[] = [
      { policy: 'encoder', budgetMs: unlimited, label: 'all encoder' },
      { policy: 'llm', budgetMs: unlimited, label: 'all LLM' },
    ];
    const noteCosts = notes.map((n) => corpus.costs.llm.msPerToken * n.sentences.reduce((k, s) => k + s.tokens.length, 0)).sort((a, b) => a - b);
    const median = noteCosts[Math.floor(noteCosts.length / 2)] ?? 1;
    for (const f of opts.budgetFractions ?? DEFAULT_FRACTIONS) {
      const budgetMs = round(Math.max(0.01, f * median), 2);
      settings.push({ policy: 'llm', budgetMs });
      settings.push({ policy: 'length-aware', budgetMs });
      settings.push({ policy: 'length-aware', budgetMs, settings: { granularity: 'note' }, label: 'note' });
      settings.push({ policy: 'cascade', budgetMs });
    }
    const results: RouterEvalReport[] = [];
    for (const s of settings) results.push(await replay(s));
    const encoderR = results[0];
    const llmR = results[1];
    const gain = llmR.f1 - encoderR.f1;
    const points: FrontierPoint[] = results.map((r, i) => ({
      policy: r.setting.policy === 'length-aware' && r.setting.settings?.granularity === 'note' ? 'length-aware/note' : r.setting.policy,
      budgetMs: i < 2 ? null : r.setting.budgetMs,
      f1: r.f1,
      f1Long: r.by_length['3+'].support > 0 ? r.by_length['3+'].f1 : null,
      costMsPerSentence: r.cost_ms_per_sentence,
      llmShare: r.llm_share,
    }));
    const rows = results.slice(2).map((r) => ({
      r,
      kept: gain > 0 ? (r.f1 - encoderR.f1) / gain : null,
      costShare: llmR.cost_ms_per_sentence > 0 ? r.cost_ms_per_sentence / llmR.cost_ms_per_sentence : 0,
    }));
    const within = rows.filter((x) => x.costShare <= 0.35);
    const bestWithin = within.sort((a, b) => b.r.f1 - a.r.f1 || a.costShare - b.costShare)[0];
    const best = [...rows].sort((a, b) => b.r.f1 - a.r.f1 || a.costShare - b.costShare)[0];
    const describe = (x: (typeof rows)[number] | undefined): Record<string, unknown> | null =>
      x === undefined
        ? null
        : {
            policy: x.r.setting.policy,
            granularity: x.r.setting.settings?.granularity ?? 'sentence',
            budget_ms: x.r.setting.budgetMs,
            f1: round(x.r.f1),
            f1_3plus: round(x.r.by_length['3+'].f1),
            llm_share: round(x.r.llm_share),
            cost_share_of_all_llm: round(x.costShare),
            gain_kept: x.kept === null ? null : round(x.kept),
          };
    // The plot's headline, in words and as the setting it names (the same pure function draws it).
    const headline = frontierSummary(points);
    const bestSetting =
      headline.best === null
        ? null
        : {
            rule: headline.best.rule,
            policy: headline.best.point.policy,
            budget_ms: headline.best.point.budgetMs,
            f1: round(headline.best.point.f1),
            gain_kept: headline.best.gainKept === null ? null : round(headline.best.gainKept),
            cost_share_of_all_llm: headline.best.costShare === null ? null : round(headline.best.costShare),
          };
    const summary = {
      domain: parts.domain,
      data: opts.data,
      notes: notes.length,
      sentences: encoderR.sentences,
      cost_ms_per_word: { encoder: round(corpus.costs.encoder.msPerToken, 5), llm: round(corpus.costs.llm.msPerToken, 5) },
      all_encoder: { f1: round(encoderR.f1), f1_3plus: round(encoderR.by_length['3+'].f1), cost_ms_per_sentence: round(encoderR.cost_ms_per_sentence, 3) },
      all_llm: { f1: round(llmR.f1), f1_3plus: round(llmR.by_length['3+'].f1), cost_ms_per_sentence: round(llmR.cost_ms_per_sentence, 3) },
      llm_gain: round(gain),
      best_within_35pct_cost: describe(bestWithin),
      best_overall: describe(best),
      headline: headline.headline,
      best_setting: bestSetting,
      // One entry per distinct (F1, cost) on the front, named by its first setting.
      pareto: paretoFront(points)
        .map((p) => ({ policy: p.policy, budget_ms: p.budgetMs, f1: round(p.f1), cost_ms_per_sentence: round(p.costMsPerSentence, 3) }))
        .filter((p, i, all) => all.findIndex((q) => q.f1 === p.f1 && q.cost_ms_per_sentence === p.cost_ms_per_sentence) === i),
    };
    const outDir = resolve(opts.out ?? 'frontier');
    await mkdir(outDir, { recursive: true });
    const stem = join(outDir, parts.domain);
    await writeFile(`${stem}.csv`, frontierCsv(points));
    const subtitle = `${notes.length} notes of ${basename(opts.data)}; ${parts.taggers.encoder.model.id} vs ${parts.taggers.llm.model.id}; batched CPU ms on this machine`;
    await writeFile(`${stem}.svg`, frontierSvg(points, { title: `Routing frontier: ${parts.domain} devel`, subtitle }));
    await writeFile(`${stem}.json`, JSON.stringify(summary, null, 2) + '\n');
    process.stderr.write(`frontier: wrote ${stem}.svg, .csv and .json\n`);
    for (const line of headline.headline) process.stderr.write(`frontier: ${line}\n`);
    process.stdout.write(JSON.stringify(summary) + '\n');
  } finally {
    await parts.taggers.encoder.close();
    await parts.taggers.llm.close();
  }
}
