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

// ---------------------------------------------------------------- SVG

/**
 * Scatter of F1 (%) against cost (ms per sentence): one colour + marker per
 * policy (legend on the right), same-policy points joined in cost order, the
 * fixed all-encoder / all-LLM points enlarged and labelled, the Pareto front
 * dashed. Throws RangeError on a non-finite f1 or cost.
 */
export function frontierSvg(points: readonly FrontierPoint[], options: FrontierPlotOptions): string {
  for (const p of points) {
    if (!Number.isFinite(p.f1) || !Number.isFinite(p.costMsPerSentence)) {
      throw new InternalError(`frontier point ${p.policy}/${String(p.budgetMs)}: f1 and costMsPerSentence must be finite`, { stage: 'eval' });
    }
  }
  const W = Math.max(360, Math.round(options.width ?? 720));
  const H = Math.max(240, Math.round(options.height ?? 440));
  const hasSub = options.subtitle !== undefined && options.subtitle !== '';
  const left = 64;
  const right = 170;
  const top = hasSub ? 70 : 52;
  const bottom = 52;
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
  const byCost = (a: FrontierPoint, b: FrontierPoint): number => a.costMsPerSentence - b.costMsPerSentence || a.f1 - b.f1;
  const polyline = (ps: readonly FrontierPoint[], attrs: string): string =>
    `<polyline points="${ps.map((p) => `${n(px(p))},${n(py(p))}`).join(' ')}" fill="none" ${attrs}/>`;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12" fill="#222">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    text(16, 26, options.title, 'font-size="16" font-weight="600"'),
  );
  if (hasSub) out.push(text(16, 46, options.subtitle ?? '', 'fill="#555"'));

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

  // One line per policy, the Pareto front over them (dashes let the series show through), then markers.
  for (const pol of policies) {
    const ps = points.filter((p) => p.policy === pol && fixedLabel(p) === null).sort(byCost);
    if (ps.length > 1) out.push(polyline(ps, `class="series" stroke="${styleOf(pol).colour}" stroke-width="2" stroke-opacity="0.8"`));
  }
  const front = paretoFront(points);
  if (front.length > 1) out.push(polyline(front, 'class="pareto" stroke="#222" stroke-width="1.5" stroke-dasharray="5 4"'));
  const ordered = [...points.filter((p) => fixedLabel(p) === null), ...points.filter((p) => fixedLabel(p) !== null)];
  for (const p of ordered) {
    const { colour, shape } = styleOf(p.policy);
    const fixed = fixedLabel(p) !== null;
    out.push(marker('marker', shape, px(p), py(p), fixed ? 7 : 4.5, colour, fixed ? '#111' : '#fff', fixed ? 1.5 : 1, tooltip(p)));
  }

  // Point labels, flipped left near the right edge: "all encoder" / "all LLM" in bold below the
  // marker (routed points mostly sit above the fixed ones), others from `label`, above right.
  const halo = 'paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round"';
  for (const p of ordered) {
    const fixed = fixedLabel(p);
    const content = fixed ?? p.label;
    if (!content) continue;
    const x = px(p);
    const y = py(p);
    const flip = x > left + pw - 90;
    if (fixed !== null) {
      const below = y + 22 <= top + ph - 4;
      const attrs = `${flip ? 'text-anchor="end" ' : ''}font-weight="600" ${halo}`;
      out.push(text(flip ? x + 6 : x - 6, below ? y + 22 : Math.max(top + 10, y - 12), content, attrs));
    } else {
      const attrs = `${flip ? 'text-anchor="end" ' : ''}font-size="11" ${halo}`;
      out.push(text(flip ? x - 8 : x + 8, Math.max(top + 10, y - 6), content, attrs));
    }
  }

  // Legend.
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
  if (front.length > 1) {
    out.push(`<line x1="${n(lx)}" y1="${n(ly)}" x2="${n(lx + 24)}" y2="${n(ly)}" stroke="#222" stroke-width="1.5" stroke-dasharray="5 4"/>`);
    out.push(text(lx + 32, ly + 4, 'Pareto front'));
  }
  out.push('</g>');
  if (points.length === 0) out.push(text(left + pw / 2, top + ph / 2, 'no data', 'text-anchor="middle" fill="#888"'));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
