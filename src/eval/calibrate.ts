/**
 * `bioner-router calibrate`: measures the configured encoder and LLM adapter
 * on a labeled set and writes the domain's entry of the calibration file the
 * router starts from (src/route/calibration.ts reads it).
 *
 * Both taggers see the same sentences, through the text stage `eval` uses
 * (IOB: the given tokens, normalised; standoff: the raw documents through
 * prepareText), in calls of different sizes (1 to `maxCallSentences`
 * consecutive sentences, seeded), `concurrency` calls in flight per route as
 * notes are in the service, so the per-call latencies are what the router
 * will see: each route's line `overhead + ms/token x tokens` is a
 * least-squares fit over them. The work goes in waves: a wave's calls run on
 * the encoder, then on the LLM, so an interrupted run stops between or inside
 * a wave and keeps every unit both routes finished.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import pLimit from 'p-limit';
import { DataFormatError, RouterError } from '../errors.js';
import { parseCalibration } from '../route/calibration.js';
import { toEntitySpans, type Tagger } from '../taggers/types.js';
import { normalize } from '../text/normalize.js';
import { prepareText } from '../text/index.js';
import type { Sentence, TokenSpan, WordToken } from '../types.js';
import { bootstrapF1, bucketF1, F1_BUCKETS, quantile, sumCounts, unitCounts, type F1Bucket, type Interval } from './bootstrap.js';
import { iobSpans, readIob, readStandoffDir } from './datasets.js';
import { mulberry32 } from './random.js';
import type { EvalSpan } from './scorer.js';

/** A scoring unit: one IOB sentence, or one standoff document (what the bootstrap resamples). */
export interface CalibrationUnit {
  id: string;
  sentences: Sentence[];
  /** Gold spans in character offsets of the unit's own layout, `words` = pipeline tokens covered. */
  gold: EvalSpan[];
}

export interface CalibrationData {
  units: CalibrationUnit[];
  unit: 'sentence' | 'document';
  /** Sentences in the whole data set (before --limit). */
  available: number;
}

function tokensIn(tokens: readonly WordToken[], start: number, end: number): number {
  let n = 0;
  for (const t of tokens) if (t.start < end && t.end > start) n++;
  return Math.max(1, n);
}

/**
 * The labeled set as units. IOB: each sentence is a unit, its given tokens
 * laid out with one space between them (the layout `eval` scores). Standoff:
 * each document is a unit, through the pipeline's text stage. `limit`: at most
 * that many sentences (standoff: whole documents while under it).
 */
export async function readCalibrationData(path: string, format: 'iob' | 'standoff', limit = Infinity): Promise<CalibrationData> {
  if (format === 'iob') {
    const data = await readIob(path);
    const units = data.slice(0, Math.min(data.length, limit)).map((s, i): CalibrationUnit => {
      let offset = 0;
      const tokens: WordToken[] = s.tokens.map((t) => {
        const tok = { text: normalize(t).text, start: offset, end: offset + t.length };
        offset += t.length + 1;
        return tok;
      });
      const gold = iobSpans(s.tags).map((g) => ({ start: tokens[g.first].start, end: tokens[g.last].end, label: g.label, words: g.last - g.first + 1 }));
      return { id: String(i), sentences: [{ index: 0, start: 0, end: Math.max(0, offset - 1), tokens }], gold };
    });
    return { units, unit: 'sentence', available: data.length };
  }
  const docs = await readStandoffDir(path);
  const units: CalibrationUnit[] = [];
  let sentences = 0;
  let available = 0;
  for (const doc of docs) {
    const prepared = prepareText(doc.text).sentences;
    available += prepared.length;
    if (sentences >= limit || (units.length > 0 && sentences + prepared.length > limit)) continue;
    const tokens = prepared.flatMap((s) => s.tokens);
    units.push({
      id: doc.id,
      sentences: prepared,
      gold: doc.spans.map((g) => ({ start: g.start, end: g.end, label: g.label, words: tokensIn(tokens, g.start, g.end) })),
    });
    sentences += prepared.length;
  }
  return { units, unit: 'document', available };
}

export interface CalibrateProgress {
  /** Sentences both routes have tagged. */
  done: number;
  total: number;
  /** Sentences per second so far (both routes). */
  rate: number;
  /** Seconds left at that rate. */
  etaSeconds: number;
}

export interface CalibrateOptions {
  taggers: { encoder: Tagger; llm: Tagger };
  /** Calls in flight per route (processing.concurrency: notes tagged at once in the service). */
  concurrency: number;
  /** Largest call, in sentences (calls are 1..this, seeded). */
  maxCallSentences?: number;
  seed?: number;
  /** Aborted: stop at once, keep what both routes finished (the result is marked partial). */
  signal?: AbortSignal;
  onProgress?: (p: CalibrateProgress) => void;
}

type RouteName = 'encoder' | 'llm';
/** One timed call: its size in word tokens and its wall time. */
export interface CallSample {
  tokens: number;
  ms: number;
}

export interface CalibrationMeasurement {
  /** Units both routes finished (an interrupted run: fewer than given). */
  units: CalibrationUnit[];
  predictions: Record<RouteName, Map<Sentence, TokenSpan[]>>;
  calls: Record<RouteName, CallSample[]>;
  /** Wall time each route's phases took, summed over waves (ms). */
  wallMs: Record<RouteName, number>;
  partial: boolean;
}

const isAbort = (signal: AbortSignal | undefined): boolean => signal?.aborted === true;

/** Tags every unit with both taggers (see the module comment); rejects on a tagger failure, returns a partial measurement when aborted. */
export async function measureCalibration(units: readonly CalibrationUnit[], options: CalibrateOptions): Promise<CalibrationMeasurement> {
  const random = mulberry32(options.seed ?? 1);
  const maxCall = Math.max(1, options.maxCallSentences ?? 16);
  const all = units.flatMap((u) => u.sentences);
  const calls: Sentence[][] = [];
  for (let i = 0; i < all.length; ) {
    const size = 1 + Math.floor(random() * maxCall);
    calls.push(all.slice(i, i + size));
    i += size;
  }
  const concurrency = Math.max(1, options.concurrency);
  // A wave keeps every slot busy a few times over, so queueing inside a wave looks like the service's.
  const waveCalls = concurrency * 4;
  const predictions: CalibrationMeasurement['predictions'] = { encoder: new Map(), llm: new Map() };
  const samples: CalibrationMeasurement['calls'] = { encoder: [], llm: [] };
  const wallMs = { encoder: 0, llm: 0 };
  const started = performance.now();
  let done = 0;
  let partial = false;
  const runWave = async (route: RouteName, wave: Sentence[][]): Promise<void> => {
    const tagger = options.taggers[route];
    const limit = pLimit(concurrency);
    const t0 = performance.now();
    try {
      await Promise.all(
        wave.map((call) =>
          limit(async () => {
            if (isAbort(options.signal)) return;
            const tokens = call.reduce((n, s) => n + s.tokens.length, 0);
            const c0 = performance.now();
            const spans = await tagger.tagSentences(call, { signal: options.signal });
            samples[route].push({ tokens, ms: performance.now() - c0 });
            for (const [i, s] of call.entries()) predictions[route].set(s, spans[i]);
          }),
        ),
      );
    } finally {
      wallMs[route] += performance.now() - t0;
    }
  };
  for (let w = 0; w < calls.length; w += waveCalls) {
    if (isAbort(options.signal)) {
      partial = true;
      break;
    }
    const wave = calls.slice(w, w + waveCalls);
    try {
      await runWave('encoder', wave);
      await runWave('llm', wave);
    } catch (err) {
      // Cancelled calls end with the abort reason; that is the interrupt, not a failure.
      if (isAbort(options.signal) && err instanceof RouterError) {
        partial = true;
        break;
      }
      throw err;
    }
    if (isAbort(options.signal)) {
      partial = true;
      break;
    }
    done += wave.reduce((n, c) => n + c.length, 0);
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    options.onProgress?.({ done, total: all.length, rate, etaSeconds: rate > 0 ? (all.length - done) / rate : Infinity });
  }
  const complete = units.filter((u) => u.sentences.every((s) => predictions.encoder.has(s) && predictions.llm.has(s)));
  return { units: complete, predictions, calls: samples, wallMs, partial: partial || complete.length < units.length };
}

// ---------------------------------------------------------------- the calibration entry

export interface LatencyModel {
  overhead_ms: number;
  ms_per_token: number;
  p50_ms: number;
  p95_ms: number;
  calls: number;
  min_tokens: number;
  max_tokens: number;
}

/**
 * Least squares of ms on tokens over the calls; a negative intercept or slope
 * is noise and is refitted through the origin or as a constant, as the
 * router's online model does (cost-model.ts).
 */
export function fitLatency(calls: readonly CallSample[]): LatencyModel | undefined {
  if (calls.length === 0) return undefined;
  const n = calls.length;
  let sx = 0;
  let sy = 0;
  let sxx = 0;
  let sxy = 0;
  for (const c of calls) {
    sx += c.tokens;
    sy += c.ms;
    sxx += c.tokens * c.tokens;
    sxy += c.tokens * c.ms;
  }
  const det = n * sxx - sx * sx;
  let overhead: number;
  let slope: number;
  if (!(det > 1e-9 * n * sxx)) {
    // One call size only: no split between overhead and per-token cost can be told, so it is all per token.
    overhead = 0;
    slope = sx > 0 ? sy / sx : 0;
  } else {
    slope = (n * sxy - sx * sy) / det;
    overhead = (sy - slope * sx) / n;
    if (overhead < 0) [overhead, slope] = [0, sxx > 0 ? Math.max(0, sxy / sxx) : 0];
    else if (slope < 0) [overhead, slope] = [Math.max(0, sy / n), 0];
  }
  const ms = calls.map((c) => c.ms).sort((a, b) => a - b);
  const tokens = calls.map((c) => c.tokens);
  const round = (x: number, d: number): number => Number(x.toFixed(d));
  return {
    overhead_ms: round(overhead, 4),
    ms_per_token: round(slope, 6),
    p50_ms: round(quantile(ms, 0.5), 3),
    p95_ms: round(quantile(ms, 0.95), 3),
    calls: n,
    min_tokens: Math.min(...tokens),
    max_tokens: Math.max(...tokens),
  };
}

export interface CalibrationMeta {
  data: string;
  format: 'iob' | 'standoff';
  unit: 'sentence' | 'document';
  /** Sentences in the data set (before --limit). */
  available: number;
  seed: number;
  resamples: number;
  /** Per route: what was measured (model ids, adapter settings); ids and names only. */
  routes: Record<RouteName, Record<string, string | number | boolean>>;
  /** Realignment counts of the openai adapter (tokens, matched, changed, dropped, extra, invalidTags, malformed). */
  realignment?: Readonly<Record<string, number>>;
  /** How the LLM's span scores were obtained (openai adapter). */
  scores?: Readonly<Record<string, number>>;
  interrupted: boolean;
}

const round4 = (x: number | null): number | null => (x === null ? null : Number(x.toFixed(6)));
const roundInterval = (i: Interval | null): Interval | null => (i === null ? null : [Number(i[0].toFixed(6)), Number(i[1].toFixed(6))]);

/** Per-unit counts of one route's predictions. */
function routeCounts(m: CalibrationMeasurement, route: RouteName): Float64Array[] {
  return m.units.map((u) => {
    const tokens = u.sentences.flatMap((s) => s.tokens);
    const spans = toEntitySpans(
      u.sentences,
      u.sentences.map((s) => m.predictions[route].get(s) ?? []),
      route === 'llm' ? 'llm' : 'encoder',
    );
    return unitCounts(
      u.gold,
      spans.map((p) => ({ start: p.start, end: p.end, label: p.label, words: tokensIn(tokens, p.start, p.end) })),
    );
  });
}

/**
 * The domain's entry: what src/route/calibration.ts reads (routes.<r>.f1 per
 * bucket, ms_per_token, support_by_length) plus the new fields: 95% intervals
 * of each F1 and of the gain, each route's fitted per-call latency model, the
 * LLM's realignment counts, and `partial` for an interrupted run.
 */
export function calibrationEntry(m: CalibrationMeasurement, meta: CalibrationMeta): Record<string, unknown> {
  const counts = { encoder: routeCounts(m, 'encoder'), llm: routeCounts(m, 'llm') };
  const boot = bootstrapF1([counts.encoder, counts.llm], meta.resamples, meta.seed);
  const sentences = m.units.reduce((n, u) => n + u.sentences.length, 0);
  const tokens = m.units.reduce((n, u) => n + u.sentences.reduce((k, s) => k + s.tokens.length, 0), 0);
  const totals = { encoder: sumCounts(counts.encoder), llm: sumCounts(counts.llm) };
  const f1Of = (c: Float64Array): Record<F1Bucket, number | null> =>
    Object.fromEntries(F1_BUCKETS.map((b, k) => [b, round4(bucketF1(c, k))])) as Record<F1Bucket, number | null>;
  const support = Object.fromEntries(['1', '2', '3+'].map((b, k) => [b, totals.encoder[k * 4 + 1]]));
  const routes: Record<string, unknown> = {};
  for (const [k, route] of (['encoder', 'llm'] as const).entries()) {
    const latency = fitLatency(m.calls[route]);
    const f1 = f1Of(totals[route]);
    const all = 3 * 4;
    const c = totals[route];
    routes[route] = {
      ...meta.routes[route],
      f1,
      f1_ci95: Object.fromEntries(F1_BUCKETS.map((b) => [b, roundInterval(boot.f1[k][b])])),
      precision: round4(c[all + 3] === 0 ? 0 : c[all + 2] / c[all + 3]),
      recall: round4(c[all + 1] === 0 ? 0 : c[all] / c[all + 1]),
      // Throughput of the route's phases over everything it tagged (the eval:table measure, with this run's concurrency).
      ms_per_sentence: Number((m.wallMs[route] / Math.max(1, m.predictions[route].size)).toFixed(4)),
      ms_per_token: Number(
        (
          m.wallMs[route] /
          Math.max(
            1,
            m.calls[route].reduce((n, s) => n + s.tokens, 0),
          )
        ).toFixed(6),
      ),
      ...(latency === undefined ? {} : { latency }),
      ...(route === 'llm' && meta.realignment !== undefined ? { realignment: meta.realignment } : {}),
      ...(route === 'llm' && meta.scores !== undefined ? { scores: meta.scores } : {}),
    };
  }
  const fe = f1Of(totals.encoder);
  const fl = f1Of(totals.llm);
  const gain = Object.fromEntries(F1_BUCKETS.map((b) => [b, fe[b] === null || fl[b] === null ? null : round4((fl[b] as number) - (fe[b] as number))]));
  const encLatency = fitLatency(m.calls.encoder);
  const llmLatency = fitLatency(m.calls.llm);
  return {
    generated_by: 'bioner-router calibrate',
    generated_at: new Date().toISOString(),
    data: meta.data,
    format: meta.format,
    sentences,
    tokens,
    documents: meta.unit === 'document' ? m.units.length : undefined,
    available_sentences: meta.available,
    partial: m.partial,
    ...(meta.interrupted ? { interrupted: true } : {}),
    support_by_length: support,
    routes,
    llm_gain: gain,
    llm_gain_ci95: boot.gain === null ? null : Object.fromEntries(F1_BUCKETS.map((b) => [b, roundInterval(boot.gain?.[b] ?? null)])),
    cost_ratio:
      encLatency !== undefined && llmLatency !== undefined && encLatency.p50_ms > 0 ? Number((llmLatency.p50_ms / encLatency.p50_ms).toFixed(3)) : undefined,
    bootstrap: { resamples: meta.resamples, seed: meta.seed, unit: meta.unit, units: m.units.length, interval: 'percentile, 95%' },
  };
}

/**
 * Writes (or replaces) `domain`'s entry in the calibration file at `path`,
 * keeping every other domain and top-level field. The new file is checked
 * to load for the domain (as the router loads it), written to a temporary
 * file beside it and renamed over it, so a reader never sees half a file.
 * An existing file that is not a calibration file is left alone (error).
 */
export async function writeCalibrationEntry(path: string, domain: string, entry: Record<string, unknown>): Promise<void> {
  let file: Record<string, unknown> = { generated_by: 'bioner-router calibrate', cost_unit: 'wall-clock milliseconds', datasets: {} };
  let existing: string | undefined;
  try {
    existing = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new DataFormatError(`cannot read ${path}`, { cause: err });
  }
  if (existing !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(existing);
    } catch (err) {
      throw new DataFormatError(`${path} is not JSON; not overwriting it (give --out another file)`, { cause: err });
    }
    const datasets = (parsed as { datasets?: unknown } | null)?.datasets;
    if (
      parsed === null ||
      typeof parsed !== 'object' ||
      Array.isArray(parsed) ||
      datasets === null ||
      typeof datasets !== 'object' ||
      Array.isArray(datasets)
    ) {
      throw new DataFormatError(`${path} has no "datasets" object; not overwriting it (give --out another file)`);
    }
    file = parsed as Record<string, unknown>;
  }
  file.datasets = { ...(file.datasets as Record<string, unknown>), [domain]: entry };
  const text = `${JSON.stringify(file, null, 2)}\n`;
  // What the router will do with it, before it replaces anything.
  parseCalibration(JSON.parse(text), domain);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new DataFormatError(`cannot write ${path}`, { cause: err });
  }
}
