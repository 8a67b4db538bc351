/**
 * Routing-frontier plot and table: F1 against cost for each routing policy and
 * latency budget, as a standalone SVG (for the README) and a CSV.
 *
 * Hand-written SVG rather than vega + vega-lite: vega-lite 6 does render SVG in
 * Node 20 offline, without canvas, and deterministically, but it adds ~75 packages
 * (~25 MB) to the runtime dependencies of a streaming router for one scatter plot.
 * The chart needed here is small (linear axes, markers, lines, a legend), so a
 * ~200-line generator with fixed number formatting keeps output byte-stable and
 * dependency-free. Pure: no I/O, same input => same bytes.
 */

import { InternalError } from '../errors.js';
import { POLICY_NAMES } from '../config/schema.js';

export interface FrontierPoint {
  policy: string; // 'encoder' | 'llm' | 'length-aware' | 'cascade' | ...
  budgetMs: number | null; // null for the fixed all-encoder / all-LLM points
  f1: number; // 0..1
  f1Long: number | null; // F1 on entities of 3+ words, 0..1
  costMsPerSentence: number;
  llmShare: number; // share of sentences tagged by the LLM, 0..1
  label?: string; // optional point label
}

export interface FrontierPlotOptions {
  title: string;
  subtitle?: string;
  width?: number;
  height?: number;
}

// ---------------------------------------------------------------- CSV

const CSV_COLUMNS = ['policy', 'budget_ms', 'f1', 'f1_3plus', 'cost_ms_per_sentence', 'llm_share', 'label'] as const;

function csvField(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '';
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Header row + one row per point (RFC-4180 quoting, `\n` line ends, trailing newline). Nulls are empty fields. */
export function frontierCsv(points: readonly FrontierPoint[]): string {
  const rows = [CSV_COLUMNS.join(',')];
  for (const p of points) {
    rows.push([p.policy, p.budgetMs, p.f1, p.f1Long, p.costMsPerSentence, p.llmShare, p.label].map(csvField).join(','));
  }
  return rows.join('\n') + '\n';
}

// ---------------------------------------------------------------- Pareto front

/** Non-dominated points (higher F1, lower cost are better), sorted by cost, then by F1 descending; exact duplicates are all kept. */
export function paretoFront(points: readonly FrontierPoint[]): FrontierPoint[] {
  const dominated = (p: FrontierPoint, q: FrontierPoint): boolean =>
    q.f1 >= p.f1 && q.costMsPerSentence <= p.costMsPerSentence && (q.f1 > p.f1 || q.costMsPerSentence < p.costMsPerSentence);
  return points
    .map((p, i) => ({ p, i }))
    .filter(({ p }) => !points.some((q) => dominated(p, q)))
    .sort((a, b) => a.p.costMsPerSentence - b.p.costMsPerSentence || b.p.f1 - a.p.f1 || a.i - b.i)
    .map(({ p }) => p);
}

// ---------------------------------------------------------------- Headline

/** The bar for "best": a routed setting keeping this share of the LLM's gain ... */
export const BEST_GAIN_KEPT = 0.8;
/** ... at no more than this share of the all-LLM cost. */
export const BEST_COST_SHARE = 0.35;

export interface FrontierBest {
  point: FrontierPoint;
  /** 'kept': meets the 80% / 35% bar; 'front': highest-F1 Pareto point below the all-LLM cost; 'beats-encoder': the LLM loses overall but this setting still beats all encoder. */
  rule: 'kept' | 'front' | 'beats-encoder';
  gainKept: number | null; // share of the LLM's F1 gain kept, null when the LLM gains nothing
  costShare: number | null; // cost over the all-LLM cost, null when that is 0
}

export interface FrontierSummary {
  gain: number | null; // all-LLM F1 minus all-encoder F1 (0..1 scale); null without both fixed points
  gainLong: number | null; // the same on entities of 3+ words
  costRatio: number | null; // all-LLM cost over all-encoder cost
  best: FrontierBest | null;
  headline: string[]; // the sentences the plot prints in large type
}

const isFixed = (p: FrontierPoint, policy: string): boolean => p.budgetMs === null && p.policy === policy;

/** F1 difference in points, one decimal, explicit sign; a difference that rounds to zero reads "0.0", never "-0.0". */
function signedPoints(v: number): string {
  const s = (v * 100).toFixed(1);
  if (Number(s) === 0) return '0.0';
  return v > 0 ? `+${s}` : s;
}

/** A budget in ms, at most 2 decimals. */
const budgetText = (ms: number): string => n(ms);
const settingName = (p: FrontierPoint): string => (p.budgetMs === null ? p.policy : `${p.policy} at ${budgetText(p.budgetMs)} ms`);
const percent = (v: number): string => String(Math.round(v * 100));

/** Highest F1, then lowest cost, then input order. */
function pickBest(points: readonly FrontierPoint[], order: readonly FrontierPoint[]): FrontierPoint | undefined {
  return [...points].sort((a, b) => b.f1 - a.f1 || a.costMsPerSentence - b.costMsPerSentence || order.indexOf(a) - order.indexOf(b))[0];
}

/**
 * The plot's headline: the LLM's gain over all encoder (and on 3+ word entities) at what multiple of
 * the encoder's cost, and the best routed setting: the highest-F1 one keeping >= 80% of the gain at
 * <= 35% of the all-LLM cost, else the highest-F1 Pareto point below the all-LLM cost. Gains that
 * round to 0.0 F1 points count as none, so the text never claims a gain it prints as zero. Pure.
 */
export function frontierSummary(points: readonly FrontierPoint[]): FrontierSummary {
  const enc = points.find((p) => isFixed(p, 'encoder'));
  const llm = points.find((p) => isFixed(p, 'llm'));
  if (enc === undefined || llm === undefined) return { gain: null, gainLong: null, costRatio: null, best: null, headline: [] };
  const gain = llm.f1 - enc.f1;
  const gainLong = llm.f1Long !== null && enc.f1Long !== null ? llm.f1Long - enc.f1Long : null;
  const costRatio = enc.costMsPerSentence > 0 ? llm.costMsPerSentence / enc.costMsPerSentence : null;
  const long = gainLong === null ? '' : ` (3+ words ${signedPoints(gainLong)})`;
  const ratio = costRatio === null ? '' : ` at ${costRatio.toFixed(1)}x the encoder's cost`;
  const headline = [`all LLM: ${signedPoints(gain)} F1${long}${ratio}`];
  const routed = points.filter((p) => p.budgetMs !== null);
  const costShare = (p: FrontierPoint): number | null => (llm.costMsPerSentence > 0 ? p.costMsPerSentence / llm.costMsPerSentence : null);
  const gains = (p: FrontierPoint): boolean => Number(((p.f1 - enc.f1) * 100).toFixed(1)) > 0;
  const onFront = new Set(paretoFront(points));
  let best: FrontierBest | null = null;
  if (gains(llm)) {
    const kept = (p: FrontierPoint): number => (p.f1 - enc.f1) / gain;
    const meets = routed.filter((p) => {
      const share = costShare(p);
      return kept(p) >= BEST_GAIN_KEPT && share !== null && share <= BEST_COST_SHARE;
    });
    const front = routed.filter((p) => onFront.has(p) && p.costMsPerSentence < llm.costMsPerSentence && gains(p));
    const bar = pickBest(meets, points);
    const fallback = pickBest(front, points);
    const chosen = bar ?? fallback;
    if (chosen !== undefined) {
      best = { point: chosen, rule: bar !== undefined ? 'kept' : 'front', gainKept: kept(chosen), costShare: costShare(chosen) };
      const share = best.costShare === null ? '' : ` at ${percent(best.costShare)}% of the all-LLM cost`;
      const lead = bar !== undefined ? 'best' : 'best below the all-LLM cost';
      headline.push(`${lead}: ${settingName(chosen)} keeps ${percent(kept(chosen))}% of the gain${share}`);
    } else {
      headline.push('no routed setting beats all encoder below the all-LLM cost');
    }
  } else {
    const chosen = pickBest(
      routed.filter((p) => onFront.has(p) && gains(p)),
      points,
    );
    if (chosen !== undefined) {
      best = { point: chosen, rule: 'beats-encoder', gainKept: null, costShare: costShare(chosen) };
      const share = best.costShare === null ? '' : ` at ${percent(best.costShare)}% of the all-LLM cost`;
      headline.push(`the LLM gains nothing overall; best: ${settingName(chosen)}, ${signedPoints(chosen.f1 - enc.f1)} F1 over all encoder${share}`);
    } else {
      headline.push("the LLM gains nothing here: every setting's best is all encoder");
    }
  }
  return { gain, gainLong, costRatio, best, headline };
}

// ---------------------------------------------------------------- SVG helpers

const FONT = '-apple-system, BlinkMacSystemFont, Segoe UI, Helvetica, Arial, sans-serif';
const KNOWN_POLICIES: readonly string[] = POLICY_NAMES;
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
type Shape = 'circle' | 'square' | 'triangle' | 'diamond' | 'triangle-down' | 'cross';
const SHAPES: readonly Shape[] = ['circle', 'square', 'triangle', 'diamond', 'triangle-down', 'cross'];

/** Text and attribute escaping (&, <, >, both quotes). */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Coordinate: at most 2 decimals, no "-0". */
function n(v: number): string {
  const r = Math.round(v * 100) / 100;
  return Object.is(r, -0) ? '0' : String(r);
}

/** Rough rendered width of sans-serif text (no font metrics offline): enough to wrap lines and keep labels apart. */
function textWidth(s: string, size: number): number {
  let w = 0;
  for (const ch of s) {
    w += /[mwMW]/.test(ch) ? 0.86 : /[A-Z]/.test(ch) ? 0.68 : /[0-9]/.test(ch) ? 0.56 : /[ilj.,:;'|!()]/.test(ch) ? 0.3 : ch === ' ' ? 0.28 : 0.53;
  }
  return w * size;
}

/** Greedy word wrap to `max` px. */
function wrap(s: string, size: number, max: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of s.split(' ')) {
    const next = line === '' ? word : `${line} ${word}`;
    if (line !== '' && textWidth(next, size) > max) {
      lines.push(line);
      line = word;
    } else {
      line = next;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

interface Axis {
  lo: number;
  hi: number;
  ticks: number[];
  decimals: number;
}

/** Linear axis over [lo, hi] (hi > lo) extended to round ticks (steps 1, 2, 5 x 10^k). */
function niceAxis(lo: number, hi: number, count = 5): Axis {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const ratio = raw / mag; // in [1, 10): nearest of 1, 2, 5, 10 on a log scale
  const step = (ratio >= Math.sqrt(50) ? 10 : ratio >= Math.sqrt(10) ? 5 : ratio >= Math.sqrt(2) ? 2 : 1) * mag;
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const round = (v: number): number => Number(v.toFixed(decimals));
  const start = round(Math.floor(lo / step + 1e-9) * step);
  const end = round(Math.ceil(hi / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let i = 0; i <= Math.round((end - start) / step); i++) ticks.push(round(start + i * step));
  return { lo: start, hi: end, ticks, decimals };
}

function markerPath(shape: Shape, x: number, y: number, r: number): string {
  const pts = (list: Array<[number, number]>): string => 'M' + list.map(([dx, dy]) => `${n(x + dx)} ${n(y + dy)}`).join(' L') + ' Z';
  const s = r * 0.9;
  switch (shape) {
    case 'square':
      return pts([
        [-s, -s],
        [s, -s],
        [s, s],
        [-s, s],
      ]);
    case 'triangle':
      return pts([
        [0, -r * 1.15],
        [r, r * 0.75],
        [-r, r * 0.75],
      ]);
    case 'triangle-down':
      return pts([
        [0, r * 1.15],
        [r, -r * 0.75],
        [-r, -r * 0.75],
      ]);
    case 'diamond':
      return pts([
        [0, -r * 1.25],
        [r, 0],
        [0, r * 1.25],
        [-r, 0],
      ]);
    case 'cross': {
      const a = r * 0.35;
      return pts([
        [-a, -r],
        [a, -r],
        [a, -a],
        [r, -a],
        [r, a],
        [a, a],
        [a, r],
        [-a, r],
        [-a, a],
        [-r, a],
        [-r, -a],
        [-a, -a],
      ]);
    }
    case 'circle':
      return '';
  }
}

/** One marker element (class "marker" or "legend-marker"), optionally with a tooltip. */
function marker(cls: string, shape: Shape, x: number, y: number, r: number, fill: string, stroke: string, strokeWidth: number, tip?: string): string {
  const paint = `fill="${fill}" stroke="${stroke}" stroke-width="${strokeWidth}"`;
  const body = tip === undefined ? '' : `<title>${escapeXml(tip)}</title>`;
  const open =
    shape === 'circle'
      ? `<circle class="${cls}" cx="${n(x)}" cy="${n(y)}" r="${n(r)}" ${paint}`
      : `<path class="${cls}" d="${markerPath(shape, x, y, r)}" ${paint}`;
  return body === '' ? `${open}/>` : `${open}>${body}</${shape === 'circle' ? 'circle' : 'path'}>`;
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${n(x)}" y="${n(y)}"${attrs ? ' ' + attrs : ''}>${escapeXml(content)}</text>`;
}

const pct = (v: number): string => (v * 100).toFixed(1);

function tooltip(p: FrontierPoint): string {
  const budget = p.budgetMs === null ? '' : `, budget ${p.budgetMs} ms`;
  const long = p.f1Long === null ? 'n/a' : `${pct(p.f1Long)}%`;
  const label = p.label ? ` (${p.label})` : '';
  return `${p.policy}${budget}${label}: F1 ${pct(p.f1)}%, F1 3+ words ${long}, ${p.costMsPerSentence.toFixed(2)} ms/sentence, LLM share ${pct(p.llmShare)}%`;
}

function fixedLabel(p: FrontierPoint): string | null {
  if (p.budgetMs !== null) return null;
  return p.policy === 'encoder' ? 'all encoder' : p.policy === 'llm' ? 'all LLM' : null;
}

interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

const overlaps = (a: Box, b: Box): boolean => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;

/** Markers closer than this (px) to a group's first point are fanned out around it. */
const COINCIDE_PX = 7;
const COINCIDE_FIXED_PX = 10; // the fixed points' markers are larger
const R_FIXED = 7;
const R_ROUTED = 4.5;

interface Placed {
  x: number; // drawn position (moved aside when it shared its spot)
  y: number;
  tx: number; // true position
  ty: number;
  r: number;
}

/**
 * Drawn marker positions. Points are grouped greedily around a seed (fixed points first, then input
 * order) when their markers would sit within a few px of it; a group holding two or more policies
 * keeps its first fixed point in place and fans the others, one slot per distinct (policy,
 * position), over a half ring above it (turned right, down or left where that would leave the plot), so every
 * policy's colour and shape shows. Same-policy points on one spot share a slot: they are one mark.
 */
function placeMarkers(
  points: readonly FrontierPoint[],
  px: (p: FrontierPoint) => number,
  py: (p: FrontierPoint) => number,
  rank: (p: FrontierPoint) => number,
  area: Box,
): Placed[] {
  const placed: Placed[] = points.map((p) => {
    const r = fixedLabel(p) === null ? R_ROUTED : R_FIXED;
    return { x: px(p), y: py(p), tx: px(p), ty: py(p), r };
  });
  const order = points.map((_, i) => i).sort((a, b) => Number(fixedLabel(points[b]) !== null) - Number(fixedLabel(points[a]) !== null) || a - b);
  const group = new Array<number>(points.length).fill(-1);
  const groups: number[][] = [];
  for (const i of order) {
    if (group[i] >= 0) continue;
    const seed = placed[i];
    const limit = seed.r === R_FIXED ? COINCIDE_FIXED_PX : COINCIDE_PX;
    const members = [i];
    group[i] = groups.length;
    for (const j of order) {
      if (group[j] >= 0) continue;
      const lim = placed[j].r === R_FIXED ? Math.max(limit, COINCIDE_FIXED_PX) : limit;
      if (Math.hypot(placed[j].tx - seed.tx, placed[j].ty - seed.ty) < lim) {
        members.push(j);
        group[j] = groups.length;
      }
    }
    groups.push(members);
  }
  for (const members of groups) {
    if (new Set(members.map((i) => points[i].policy)).size < 2) continue;
    const centre = placed[members[0]];
    const hub = centre.r === R_FIXED ? members[0] : -1; // a fixed seed stays put; routed-only groups all move
    const slots = new Map<string, number[]>();
    const rest = members
      .filter((i) => i !== hub)
      .sort((a, b) => rank(points[a]) - rank(points[b]) || points[a].costMsPerSentence - points[b].costMsPerSentence || points[a].f1 - points[b].f1 || a - b);
    for (const i of rest) {
      const key = `${points[i].policy}\u0000${n(placed[i].tx)}\u0000${n(placed[i].ty)}`;
      const slot = slots.get(key);
      if (slot === undefined) slots.set(key, [i]);
      else slot.push(i);
    }
    const k = slots.size;
    // Slots ~12 px apart along the arc; the ring clears the hub's larger marker.
    const radius = Math.max(hub >= 0 ? 17 : 10, ((k - 1) * 12) / Math.PI);
    // A half ring over the top, else (near an edge of the plot) the first of right, below, left that fits.
    const arc = (from: number): Array<[number, number]> =>
      Array.from({ length: k }, (_, s) => {
        const angle = k === 1 ? from - Math.PI / 2 : from - (s * Math.PI) / (k - 1);
        return [centre.tx + radius * Math.cos(angle), centre.ty - radius * Math.sin(angle)];
      });
    // Centres on the plot (a marker may straddle an axis, as the points at cost 0 do).
    const inside = ([x, y]: [number, number]): boolean => x >= area.x0 && x <= area.x1 && y >= area.y0 && y <= area.y1;
    const arcs = [Math.PI, Math.PI / 2, 0, -Math.PI / 2].map(arc);
    const chosen = arcs.find((ps) => ps.every(inside)) ?? arcs[0];
    for (const [s, slot] of [...slots.values()].entries()) {
      const [x, y] = chosen[s];
      for (const i of slot) {
        placed[i].x = Math.min(area.x1, Math.max(area.x0, x)); // kept on the canvas even where no arc fits
        placed[i].y = Math.min(area.y1, Math.max(area.y0, y));
      }
    }
  }
  return placed;
}

// ---------------------------------------------------------------- SVG

/**
 * Scatter of F1 (%) against cost (ms per sentence): one colour + marker per
 * policy (legend on the right), same-policy points joined in cost order, the
 * fixed all-encoder / all-LLM points enlarged and labelled, routed points
 * labelled with their budget, markers that share a spot fanned out with leader
 * lines, the Pareto front dashed, the best setting ringed, and the headline of
 * frontierSummary in large type under the title. Throws InternalError on a
 * non-finite f1 or cost.
 */
export function frontierSvg(points: readonly FrontierPoint[], options: FrontierPlotOptions): string {
  for (const p of points) {
    if (!Number.isFinite(p.f1) || !Number.isFinite(p.costMsPerSentence)) {
      throw new InternalError(`frontier point ${p.policy}/${String(p.budgetMs)}: f1 and costMsPerSentence must be finite`, { stage: 'eval' });
    }
  }
  const summary = frontierSummary(points);

  // Policies: the known ones in a fixed order with fixed styles (the same colour in every plot),
  // then the rest alphabetically with the styles after those.
  const present = [...new Set(points.map((p) => p.policy))];
  const others = present.filter((k) => !KNOWN_POLICIES.includes(k)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const policies = [...KNOWN_POLICIES.filter((k) => present.includes(k)), ...others];
  const styleIndex = (pol: string): number => (KNOWN_POLICIES.includes(pol) ? KNOWN_POLICIES.indexOf(pol) : KNOWN_POLICIES.length + others.indexOf(pol));
  const style = new Map(
    policies.map((pol) => {
      const i = styleIndex(pol);
      return [pol, { colour: COLOURS[i % COLOURS.length], shape: SHAPES[i % SHAPES.length] }];
    }),
  );
  const styleOf = (pol: string): { colour: string; shape: Shape } => style.get(pol) ?? { colour: COLOURS[0], shape: SHAPES[0] };
  const front = paretoFront(points);
  // Exact duplicates of one point (routing nothing) make no line.
  const frontLine = new Set(front.map((p) => `${p.f1}\u0000${p.costMsPerSentence}`)).size > 1;
  const best = summary.best?.point;
  const moved = (pl: Placed): boolean => pl.x !== pl.tx || pl.y !== pl.ty;

  // Canvas: the legend column is as wide as its longest name, the canvas tall enough for every
  // legend entry and for the headline wrapped to the width.
  const legendNames = [...policies, 'Pareto front', 'moved aside: line to point', 'best setting'];
  const right = Math.max(170, Math.ceil(24 + 32 + Math.max(...legendNames.map((s) => textWidth(s, 12))) + 12));
  const left = 64;
  const W = Math.max(left + right + 240, Math.round(options.width ?? 820));
  const hasSub = options.subtitle !== undefined && options.subtitle !== '';
  const HEAD = 18;
  const headLines = summary.headline.flatMap((s) => wrap(s, HEAD, W - 32));
  const headTop = hasSub ? 56 : 38;
  const top = headTop + headLines.length * (HEAD + 6) + (headLines.length > 0 ? 16 : 14);
  const bottom = 52;
  const legendEntries = policies.length + 3;
  const H = Math.max(top + bottom + 200, top + 8 + legendEntries * 20 + bottom, Math.round(options.height ?? 540));
  const pw = W - left - right;
  const ph = H - top - bottom;

  // Domains: cost from 0 (relative cost reads at a glance), F1 padded and kept in [0, 100].
  const costs = points.map((p) => p.costMsPerSentence);
  const f1s = points.map((p) => p.f1 * 100);
  let xLo = Math.min(0, ...costs);
  let xHi = costs.length ? Math.max(...costs) * 1.05 : 1;
  if (!(xHi > xLo)) xHi = xLo + 1;
  let yLo = f1s.length ? Math.min(...f1s) : 0;
  let yHi = f1s.length ? Math.max(...f1s) : 100;
  const pad = Math.max((yHi - yLo) * 0.08, 1);
  yLo = yLo >= 0 ? Math.max(0, yLo - pad) : yLo - pad;
  yHi = yHi <= 100 ? Math.min(100, yHi + pad) : yHi + pad;
  if (!(yHi > yLo)) yHi = yLo + 1;
  const xa = niceAxis(xLo, xHi);
  const ya = niceAxis(yLo, yHi);
  xLo = xa.lo;
  xHi = xa.hi;
  const sx = (v: number): number => left + ((v - xLo) / (xHi - xLo)) * pw;
  const sy = (v: number): number => top + ph - ((v - ya.lo) / (ya.hi - ya.lo)) * ph;
  const px = (p: FrontierPoint): number => sx(p.costMsPerSentence);
  const py = (p: FrontierPoint): number => sy(p.f1 * 100);
  const area: Box = { x0: left, y0: top, x1: left + pw, y1: top + ph };
  const placed = placeMarkers(points, px, py, (p) => styleIndex(p.policy), area);
  const byCost = (a: FrontierPoint, b: FrontierPoint): number => a.costMsPerSentence - b.costMsPerSentence || a.f1 - b.f1;
  const polyline = (ps: readonly FrontierPoint[], attrs: string): string =>
    `<polyline points="${ps.map((p) => `${n(px(p))},${n(py(p))}`).join(' ')}" fill="none" ${attrs}/>`;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12" fill="#222">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    text(16, 26, options.title, 'font-size="16" font-weight="600"'),
  );
  if (hasSub) out.push(text(16, 44, options.subtitle ?? '', 'fill="#555"'));
  if (headLines.length > 0) {
    out.push(`<g class="headline" font-size="${HEAD}" font-weight="600">`);
    for (const [i, line] of headLines.entries()) out.push(text(16, headTop + HEAD + i * (HEAD + 6), line));
    out.push('</g>');
  }

  // Grid, axes, ticks.
  out.push('<g class="axes" stroke="#e3e3e3" stroke-width="1">');
  for (const t of xa.ticks) out.push(`<line x1="${n(sx(t))}" y1="${n(top)}" x2="${n(sx(t))}" y2="${n(top + ph)}"/>`);
  for (const t of ya.ticks) out.push(`<line x1="${n(left)}" y1="${n(sy(t))}" x2="${n(left + pw)}" y2="${n(sy(t))}"/>`);
  out.push(`<path d="M${n(left)} ${n(top)} L${n(left)} ${n(top + ph)} L${n(left + pw)} ${n(top + ph)}" fill="none" stroke="#444"/>`);
  for (const t of xa.ticks) out.push(`<line x1="${n(sx(t))}" y1="${n(top + ph)}" x2="${n(sx(t))}" y2="${n(top + ph + 5)}" stroke="#444"/>`);
  for (const t of ya.ticks) out.push(`<line x1="${n(left - 5)}" y1="${n(sy(t))}" x2="${n(left)}" y2="${n(sy(t))}" stroke="#444"/>`);
  out.push('</g>', '<g class="tick-labels" fill="#444" font-size="11">');
  for (const t of xa.ticks) out.push(text(sx(t), top + ph + 18, t.toFixed(xa.decimals), 'text-anchor="middle"'));
  for (const t of ya.ticks) out.push(text(left - 8, sy(t) + 4, t.toFixed(ya.decimals), 'text-anchor="end"'));
  out.push('</g>');
  out.push(text(left + pw / 2, H - 12, 'Cost (ms per sentence)', 'text-anchor="middle"'));
  const yl = { x: 18, y: top + ph / 2 };
  out.push(text(yl.x, yl.y, 'Entity F1 (%)', `text-anchor="middle" transform="rotate(-90 ${n(yl.x)} ${n(yl.y)})"`));

  // One line per policy through the true positions, the Pareto front over them (dashes let the
  // series show through), leaders from moved markers to their true points, then the markers.
  for (const pol of policies) {
    const ps = points.filter((p) => p.policy === pol && fixedLabel(p) === null).sort(byCost);
    if (ps.length > 1) out.push(polyline(ps, `class="series" stroke="${styleOf(pol).colour}" stroke-width="2" stroke-opacity="0.8"`));
  }
  if (frontLine) out.push(polyline(front, 'class="pareto" stroke="#222" stroke-width="1.5" stroke-dasharray="5 4"'));
  const leaders = new Set<string>();
  const anchors = new Set<string>();
  for (const pl of placed) {
    if (!moved(pl)) continue;
    const line = `<line class="leader" x1="${n(pl.tx)}" y1="${n(pl.ty)}" x2="${n(pl.x)}" y2="${n(pl.y)}" stroke="#666" stroke-width="0.75"/>`;
    if (!leaders.has(line)) out.push(line);
    leaders.add(line);
    anchors.add(`<circle class="anchor" cx="${n(pl.tx)}" cy="${n(pl.ty)}" r="1.5" fill="#444"/>`);
  }
  out.push(...anchors);
  const bestIndex = best === undefined ? -1 : points.indexOf(best);
  // Routed markers, the best one last among them (on top of its neighbours), then the fixed ones.
  const layer = (i: number): number => (fixedLabel(points[i]) !== null ? 2 : i === bestIndex ? 1 : 0);
  const ordered = [...points.keys()].sort((a, b) => layer(a) - layer(b) || a - b);
  for (const i of ordered) {
    const p = points[i];
    const { colour, shape } = styleOf(p.policy);
    const fixed = fixedLabel(p) !== null;
    out.push(marker('marker', shape, placed[i].x, placed[i].y, placed[i].r, colour, fixed ? '#111' : '#fff', fixed ? 1.5 : 1, tooltip(p)));
  }
  if (bestIndex >= 0) {
    const pl = placed[bestIndex];
    out.push(`<circle class="best" cx="${n(pl.x)}" cy="${n(pl.y)}" r="${n(pl.r + 4.5)}" fill="none" stroke="#111" stroke-width="1.5"/>`);
  }

  // Labels. "all encoder" / "all LLM" always, in bold below the marker (routed points mostly sit
  // above the fixed ones), flipped left near the right edge. Then each routed mark gets its budget
  // (or its `label`), the best setting first, the rest by policy and cost, at the first of right /
  // left / above / below that clears every marker and earlier label; a label that fits nowhere is
  // left out rather than drawn over another.
  const halo = 'paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round"';
  const taken: Box[] = placed.map((pl) => ({ x0: pl.x - pl.r - 1, y0: pl.y - pl.r - 1, x1: pl.x + pl.r + 1, y1: pl.y + pl.r + 1 }));
  const slack: Box = { x0: area.x0 + 2, y0: area.y0 + 1, x1: area.x1 + 16, y1: area.y1 - 1 };
  /** The first candidate baseline start whose box stays in the plot and clears `taken` (bar the own marker), else null. */
  const fit = (candidates: ReadonlyArray<[number, number]>, w: number, size: number, own: number): [number, number] | null => {
    for (const [tx, ty] of candidates) {
      const box: Box = { x0: tx - 1, y0: ty - size * 0.8, x1: tx + w + 1, y1: ty + size * 0.2 };
      if (box.x0 < slack.x0 || box.x1 > slack.x1 || box.y0 < slack.y0 || box.y1 > slack.y1) continue;
      if (taken.some((t, j) => j !== own && overlaps(box, t))) continue;
      taken.push(box);
      return [tx, ty];
    }
    return null;
  };
  for (const i of ordered) {
    const fixed = fixedLabel(points[i]);
    if (fixed === null) continue;
    const { x, y, r } = placed[i];
    const w = textWidth(fixed, 12) * 1.08; // bold
    const low = (dy: number): number => (y + dy <= top + ph - 4 ? y + dy : Math.max(top + 10, y - 12));
    const flip = x > left + pw - 90;
    const under: [number, number] = [flip ? x + 6 - w : x - 6, low(22)];
    const candidates: Array<[number, number]> = [under, [x - r - 5 - w, y + 4], [x + r + 5, y + 4]];
    for (const dy of [22, 34, -14]) for (const sx0 of [flip ? x + 6 - w : x - 6, flip ? x - 6 : x + 6 - w, x - w / 2, left + 4]) candidates.push([sx0, y + dy]);
    const at = fit(candidates, w, 12, i);
    const [tx, ty] = at ?? under; // always drawn, over a marker if it must
    if (at === null) taken.push({ x0: tx - 1, y0: ty - 10, x1: tx + w + 1, y1: ty + 3 });
    out.push(text(tx, ty, fixed, `font-weight="600" ${halo}`));
  }
  // One label per drawn mark: same-policy points that share a spot read as a budget range.
  const marks = new Map<string, number[]>();
  const routedOrder = [...points.keys()]
    .filter((i) => points[i].budgetMs !== null)
    .sort(
      (a, b) =>
        Number(b === bestIndex) - Number(a === bestIndex) ||
        styleIndex(points[a].policy) - styleIndex(points[b].policy) ||
        points[a].costMsPerSentence - points[b].costMsPerSentence ||
        a - b,
    );
  for (const i of routedOrder) {
    const key = `${points[i].policy}\u0000${n(placed[i].x)}\u0000${n(placed[i].y)}`;
    const mark = marks.get(key);
    if (mark === undefined) marks.set(key, [i]);
    else mark.push(i);
  }
  const LABEL = 10;
  for (const mark of marks.values()) {
    const first = points[mark[0]];
    const budgets = [...new Set(mark.map((i) => points[i].budgetMs ?? 0))].sort((a, b) => a - b);
    const content =
      mark.length === 1 && first.label
        ? first.label
        : budgets.length === 1
          ? `${budgetText(budgets[0])} ms`
          : `${budgetText(budgets[0])}\u2013${budgetText(budgets[budgets.length - 1])} ms`;
    const pl = placed[mark[0]];
    const { x, y, r } = pl;
    const isBest = mark[0] === bestIndex;
    const w = textWidth(content, LABEL) * (isBest ? 1.08 : 1);
    const gap = isBest ? r + 6 : r + 3;
    const rightOf: [number, number] = [x + gap, y + 3.5];
    const leftOf: [number, number] = [x - gap - w, y + 3.5];
    const above: [number, number] = [x - w / 2, y - gap - 1];
    const below: [number, number] = [x - w / 2, y + gap + 8];
    // A fanned marker's label goes on its outer side, away from the crowd it was moved out of.
    const dx = pl.x - pl.tx;
    const dy = pl.y - pl.ty;
    const candidates: Array<[number, number]> = !moved(pl)
      ? [rightOf, leftOf, above, below]
      : Math.abs(dx) < Math.abs(dy) * 0.6
        ? dy < 0
          ? [above, rightOf, leftOf, below]
          : [below, rightOf, leftOf, above]
        : dx < 0
          ? [leftOf, dy < 0 ? above : below, rightOf]
          : [rightOf, dy < 0 ? above : below, leftOf];
    const at = fit(candidates, w, LABEL, mark[0]);
    if (at === null) continue;
    const weight = isBest ? ' font-weight="600"' : '';
    out.push(text(at[0], at[1], content, `class="budget" font-size="${LABEL}"${weight} fill="${styleOf(first.policy).colour}" ${halo}`));
  }

  // Legend: every policy with points, then the line and mark keys that appear in the plot.
  const lx = left + pw + 24;
  let ly = top + 8;
  out.push('<g class="legend">');
  for (const pol of policies) {
    const { colour, shape } = styleOf(pol);
    out.push(`<line x1="${n(lx)}" y1="${n(ly)}" x2="${n(lx + 24)}" y2="${n(ly)}" stroke="${colour}" stroke-width="2"/>`);
    out.push(marker('legend-marker', shape, lx + 12, ly, 4.5, colour, '#fff', 1));
    out.push(text(lx + 32, ly + 4, pol));
    ly += 20;
  }
  if (frontLine) {
    out.push(`<line x1="${n(lx)}" y1="${n(ly)}" x2="${n(lx + 24)}" y2="${n(ly)}" stroke="#222" stroke-width="1.5" stroke-dasharray="5 4"/>`);
    out.push(text(lx + 32, ly + 4, 'Pareto front'));
    ly += 20;
  }
  if (leaders.size > 0) {
    out.push(`<line x1="${n(lx + 4)}" y1="${n(ly)}" x2="${n(lx + 20)}" y2="${n(ly - 5)}" stroke="#666" stroke-width="0.75"/>`);
    out.push(`<circle cx="${n(lx + 4)}" cy="${n(ly)}" r="1.5" fill="#444"/>`);
    out.push(text(lx + 32, ly + 4, 'moved aside: line to point', 'fill="#555"'));
    ly += 20;
  }
  if (bestIndex >= 0) {
    out.push(`<circle cx="${n(lx + 12)}" cy="${n(ly)}" r="7" fill="none" stroke="#111" stroke-width="1.5"/>`);
    out.push(text(lx + 32, ly + 4, 'best setting'));
  }
  out.push('</g>');
  if (points.length === 0) out.push(text(left + pw / 2, top + ph / 2, 'no data', 'text-anchor="middle" fill="#888"'));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
