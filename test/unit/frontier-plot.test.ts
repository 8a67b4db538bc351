import { test } from 'node:test';
import assert from 'node:assert/strict';
import { frontierCsv, frontierSummary, frontierSvg, paretoFront, type FrontierPoint } from '../../src/eval/frontier-plot.js';
import { InternalError } from '../../src/errors.js';

const pt = (policy: string, budgetMs: number | null, f1: number, cost: number, extra: Partial<FrontierPoint> = {}): FrontierPoint => ({
  policy,
  budgetMs,
  f1,
  f1Long: 0.5,
  costMsPerSentence: cost,
  llmShare: policy === 'llm' ? 1 : policy === 'encoder' ? 0 : 0.3,
  ...extra,
});

const SAMPLE: FrontierPoint[] = [
  pt('encoder', null, 0.81, 2),
  pt('llm', null, 0.78, 10),
  pt('length-aware', 2, 0.812, 2.5, { f1Long: null }),
  pt('length-aware', 6, 0.83, 7.5),
  pt('length-aware', 4, 0.818, 4.2),
  pt('cascade', 2, 0.815, 2.2, { label: '2 ms' }),
  pt('cascade', 4, 0.819, 4.2),
  pt('cascade', 8, 0.817, 8.2),
];

// ------------------------------------------------------------ tiny XML checker

interface Element {
  name: string;
  attrs: Map<string, string>;
}

/** Tokenises the SVG, checks balanced tags, quoted attributes, no raw `<`/`&` in text; returns the elements. */
function parseXml(xml: string): Element[] {
  const elements: Element[] = [];
  const stack: string[] = [];
  const entity = /&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;
  const checkText = (s: string, where: string): void => {
    const stripped = s.replace(entity, '');
    assert.ok(!/[<&]/.test(stripped), `raw < or & in ${where}: ${JSON.stringify(s)}`);
  };
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    if (lt < 0) {
      checkText(xml.slice(i), 'trailing text');
      break;
    }
    checkText(xml.slice(i, lt), 'text');
    const gt = xml.indexOf('>', lt);
    assert.ok(gt > lt, 'unterminated tag');
    const tag = xml.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      assert.equal(stack.pop(), name, `mismatched </${name}>`);
      continue;
    }
    const selfClosing = tag.endsWith('/');
    const body = selfClosing ? tag.slice(0, -1) : tag;
    const m = /^([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*$/.exec(body);
    assert.ok(m, `malformed tag <${tag}>`);
    const attrs = new Map<string, string>();
    for (const a of m[2].matchAll(/([\w:-]+)="([^"]*)"/g)) {
      assert.ok(!attrs.has(a[1]), `duplicate attribute ${a[1]} in <${m[1]}>`);
      checkText(a[2], `attribute ${a[1]}`);
      attrs.set(a[1], a[2]);
    }
    elements.push({ name: m[1], attrs });
    if (!selfClosing) stack.push(m[1]);
    if (elements.length === 1) assert.equal(m[1], 'svg', 'root element is <svg>');
    if (stack.length === 0 && !selfClosing) assert.fail('element closed at top level?');
  }
  assert.deepEqual(stack, [], 'unclosed tags');
  return elements;
}

/** All (x, y) coordinates drawn, from positional attributes, polylines and absolute M/L paths. */
function coordinates(els: Element[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const num = (s: string): number => {
    assert.match(s, /^-?\d+(\.\d+)?$/, `not a plain number: ${s}`);
    return Number(s);
  };
  for (const e of els) {
    const a = e.attrs;
    for (const [x, y] of [
      ['x', 'y'],
      ['cx', 'cy'],
      ['x1', 'y1'],
      ['x2', 'y2'],
    ]) {
      if (a.has(x) || a.has(y)) out.push([num(a.get(x) ?? ''), num(a.get(y) ?? '')]);
    }
    const points = a.get('points');
    if (points !== undefined)
      for (const p of points.split(' ')) {
        const [x, y] = p.split(',');
        out.push([num(x), num(y)]);
      }
    const d = a.get('d');
    if (d !== undefined) {
      for (const seg of d
        .replace(/Z/g, '')
        .split(/[ML]/)
        .map((s) => s.trim())
        .filter(Boolean)) {
        const [x, y] = seg.split(/\s+/);
        out.push([num(x), num(y)]);
      }
    }
    const r = a.get('r');
    if (r !== undefined) assert.ok(num(r) > 0);
  }
  return out;
}

function checkSvg(svg: string, points: readonly FrontierPoint[]): Element[] {
  assert.ok(!/NaN|Infinity|undefined/.test(svg), 'no NaN / Infinity / undefined anywhere');
  const els = parseXml(svg);
  const root = els[0].attrs;
  assert.equal(root.get('xmlns'), 'http://www.w3.org/2000/svg');
  const [vx, vy, vw, vh] = (root.get('viewBox') ?? '').split(' ').map(Number);
  assert.deepEqual([vx, vy], [0, 0]);
  for (const [x, y] of coordinates(els)) {
    assert.ok(Number.isFinite(x) && Number.isFinite(y), `finite (${x}, ${y})`);
    assert.ok(x >= 0 && x <= vw && y >= 0 && y <= vh, `(${x}, ${y}) inside 0 0 ${vw} ${vh}`);
  }
  const markers = els.filter((e) => e.attrs.get('class') === 'marker');
  assert.equal(markers.length, points.length, 'one marker per point');
  for (const policy of new Set(points.map((p) => p.policy))) {
    assert.ok(svg.includes(`>${policy}</text>`), `legend names ${policy}`);
  }
  return els;
}

// ------------------------------------------------------------ CSV

test('CSV: header, one row per point, nulls empty, RFC-4180 quoting', () => {
  const csv = frontierCsv([
    pt('encoder', null, 0.81, 2, { f1Long: null }),
    pt('cascade', 40, 0.8125, 3.5, { llmShare: 0.25, label: 'budget "tight", 40 ms' }),
    pt('llm', null, 0.78, 10, { label: 'two\nlines' }),
  ]);
  assert.equal(
    csv,
    [
      'policy,budget_ms,f1,f1_3plus,cost_ms_per_sentence,llm_share,label',
      'encoder,,0.81,,2,0,',
      'cascade,40,0.8125,0.5,3.5,0.25,"budget ""tight"", 40 ms"',
      'llm,,0.78,0.5,10,1,"two\nlines"',
      '',
    ].join('\n'),
  );
  assert.equal(frontierCsv([]), 'policy,budget_ms,f1,f1_3plus,cost_ms_per_sentence,llm_share,label\n');
});

// ------------------------------------------------------------ Pareto front

test('paretoFront keeps the non-dominated points, sorted by cost', () => {
  const a = pt('encoder', null, 0.8, 1);
  const b = pt('cascade', 1, 0.82, 2);
  const c = pt('cascade', 2, 0.81, 3); // dominated by b
  const d = pt('length-aware', 1, 0.85, 5);
  const e = pt('llm', null, 0.85, 6); // same F1 as d, more cost: dominated
  const f = pt('length-aware', 2, 0.79, 1); // same cost as a, lower F1: dominated
  const g = pt('cascade', 3, 0.9, 9);
  assert.deepEqual(paretoFront([g, e, c, a, f, d, b]), [a, b, d, g]);
  assert.deepEqual(paretoFront([]), []);
  assert.deepEqual(paretoFront([c]), [c]);
  const twin = { ...a };
  assert.deepEqual(paretoFront([a, twin]), [a, twin], 'exact duplicates do not dominate each other');
});

// ------------------------------------------------------------ SVG

test('SVG: well-formed, one marker per point, legend, fixed points labelled, Pareto dashed, deterministic', () => {
  const svg = frontierSvg(SAMPLE, { title: 'Routing frontier', subtitle: 'BC5CDR test' });
  const els = checkSvg(svg, SAMPLE);
  assert.match(svg, /^<svg /);
  assert.match(svg, /width="820" height="540" viewBox="0 0 820 540"/);
  assert.match(svg, /sans-serif/);
  assert.ok(svg.includes('>all encoder</text>') && svg.includes('>all LLM</text>'));
  assert.ok(svg.includes('>2 ms</text>'), 'point label drawn');
  assert.ok(svg.includes('>Routing frontier</text>') && svg.includes('>BC5CDR test</text>'));
  assert.ok(svg.includes('>Cost (ms per sentence)</text>') && svg.includes('>Entity F1 (%)</text>'));
  assert.ok(svg.includes('>Pareto front</text>'));
  const pareto = els.filter((e) => e.attrs.get('class') === 'pareto');
  assert.equal(pareto.length, 1);
  assert.ok(pareto[0].attrs.has('stroke-dasharray'));
  assert.equal(pareto[0].attrs.get('points')?.split(' ').length, paretoFront(SAMPLE).length);
  // One line per policy with 2+ budgeted points, vertices in cost order.
  const series = els.filter((e) => e.attrs.get('class') === 'series');
  assert.equal(series.length, 2);
  for (const s of series) {
    const xs = (s.attrs.get('points') ?? '').split(' ').map((p) => Number(p.split(',')[0]));
    assert.deepEqual(
      xs,
      [...xs].sort((a, b) => a - b),
    );
  }
  // Fixed points are larger; every policy has its own colour.
  const radius = (e: Element): number => Number(e.attrs.get('r') ?? 0);
  const markers = els.filter((e) => e.attrs.get('class') === 'marker');
  const circles = markers.filter((e) => e.name === 'circle');
  assert.equal(circles.length, 1, 'encoder uses circles');
  assert.ok(radius(circles[0]) > 5);
  const fills = new Set(els.filter((e) => e.attrs.get('class') === 'legend-marker').map((e) => e.attrs.get('fill')));
  assert.equal(fills.size, 4);
  // Known policies keep their style whichever others are present.
  const llmOnly = frontierSvg([pt('llm', null, 0.78, 10)], { title: 't' });
  const llmMarker = (x: string): string | undefined =>
    parseXml(x)
      .find((e) => e.attrs.get('class') === 'legend-marker' && e.attrs.get('fill') !== undefined)
      ?.attrs.get('fill');
  assert.equal(llmMarker(llmOnly), fills.size === 4 ? [...fills][1] : undefined);
  // Same input, same bytes.
  assert.equal(frontierSvg(SAMPLE, { title: 'Routing frontier', subtitle: 'BC5CDR test' }), svg);
});

test('SVG: custom size, unknown policies get their own style', () => {
  const points = [...SAMPLE, pt('oracle', 5, 0.9, 6), pt('oracle', 9, 0.91, 9)];
  const svg = frontierSvg(points, { title: 't', width: 900, height: 500 });
  assert.match(svg, /viewBox="0 0 900 500"/);
  checkSvg(svg, points);
});

test('SVG degenerate: one point, none, same cost, same F1, all-zero, null f1Long', () => {
  const cases: Array<[string, FrontierPoint[]]> = [
    ['one point', [pt('encoder', null, 0.8, 2)]],
    ['no points', []],
    ['same cost', [pt('cascade', 1, 0.8, 3), pt('cascade', 2, 0.85, 3), pt('llm', null, 0.7, 3)]],
    ['same F1', [pt('encoder', null, 0.8, 1), pt('cascade', 1, 0.8, 2), pt('llm', null, 0.8, 9)]],
    ['all zero', [pt('encoder', null, 0, 0), pt('llm', null, 0, 0)]],
    ['perfect F1', [pt('encoder', null, 1, 0.5), pt('llm', null, 1, 0.5)]],
    ['null f1Long', [pt('cascade', 1, 0.8, 2, { f1Long: null }), pt('cascade', 2, 0.82, 4, { f1Long: null })]],
    ['tiny range', [pt('cascade', 1, 0.8, 0.001), pt('cascade', 2, 0.80001, 0.0011)]],
  ];
  for (const [name, points] of cases) {
    const svg = frontierSvg(points, { title: name });
    checkSvg(svg, points);
    assert.equal(frontierSvg(points, { title: name }), svg, `${name}: deterministic`);
  }
  assert.match(frontierSvg([pt('cascade', 1, 0.8, 2, { f1Long: null })], { title: 'x' }), /F1 3\+ words n\/a/);
});

test('SVG escapes text: title, subtitle, policy and label', () => {
  const points = [pt('a<b>&"c\'', 1, 0.8, 2, { label: '<script>&' })];
  const svg = frontierSvg(points, { title: 'F1 <&> "cost"', subtitle: "it's <sub>" });
  parseXml(svg);
  assert.ok(svg.includes('>F1 &lt;&amp;&gt; &quot;cost&quot;</text>'));
  assert.ok(svg.includes('>it&apos;s &lt;sub&gt;</text>'));
  assert.ok(svg.includes('>a&lt;b&gt;&amp;&quot;c&apos;</text>'));
  assert.ok(svg.includes('>&lt;script&gt;&amp;</text>'));
  assert.ok(!svg.includes('<script'));
});

test('SVG rejects non-finite F1 or cost', () => {
  assert.throws(() => frontierSvg([pt('cascade', 1, Number.NaN, 2)], { title: 't' }), InternalError);
  assert.throws(() => frontierSvg([pt('cascade', 1, 0.8, Number.POSITIVE_INFINITY)], { title: 't' }), InternalError);
});

// ------------------------------------------------------------ headline

test('frontierSummary: LLM gain, 3+ words and cost ratio; best keeps >= 80% of the gain at <= 35% of the all-LLM cost', () => {
  const points = [
    pt('encoder', null, 0.8, 1, { f1Long: 0.5 }),
    pt('llm', null, 0.86, 10, { f1Long: 0.62 }),
    pt('cascade', 10, 0.85, 3), // keeps 83% at 30%: meets the bar
    pt('cascade', 20, 0.855, 4), // keeps 92% at 40%: too dear
    pt('length-aware', 10, 0.849, 3.5), // meets the bar, lower F1
    pt('length-aware', 5, 0.85, 3.5), // same F1 as cascade 10, dearer
  ];
  const s = frontierSummary(points);
  assert.ok(s.gain !== null && Math.abs(s.gain - 0.06) < 1e-12);
  assert.ok(s.gainLong !== null && Math.abs(s.gainLong - 0.12) < 1e-12);
  assert.equal(s.costRatio, 10);
  assert.equal(s.best?.point, points[2]);
  assert.equal(s.best?.rule, 'kept');
  assert.ok(Math.abs((s.best?.gainKept ?? 0) - 5 / 6) < 1e-12);
  assert.ok(Math.abs((s.best?.costShare ?? 0) - 0.3) < 1e-12);
  assert.deepEqual(s.headline, [
    "all LLM: +6.0 F1 (3+ words +12.0) at 10.0x the encoder's cost",
    'best: cascade at 10 ms keeps 83% of the gain at 30% of the all-LLM cost',
  ]);
  assert.deepEqual(frontierSummary([...points].reverse()).headline, s.headline, 'input order only breaks exact ties');
});

test('frontierSummary: without a setting at the bar, the highest-F1 Pareto point below the all-LLM cost; else says none beats all encoder', () => {
  const enc = pt('encoder', null, 0.8, 1, { f1Long: null });
  const llm = pt('llm', null, 0.9, 8);
  const cheap = pt('cascade', 4, 0.84, 3); // 40% of the gain at 37.5% of the cost
  const better = pt('length-aware', 8, 0.87, 6); // 70% at 75%
  const dominated = pt('llm', 6, 0.86, 7);
  const s = frontierSummary([enc, llm, cheap, better, dominated]);
  assert.equal(s.best?.point, better);
  assert.equal(s.best?.rule, 'front');
  assert.deepEqual(s.headline, [
    "all LLM: +10.0 F1 at 8.0x the encoder's cost",
    'best below the all-LLM cost: length-aware at 8 ms keeps 70% of the gain at 75% of the all-LLM cost',
  ]);
  const none = frontierSummary([enc, llm, pt('cascade', 4, 0.8, 1), pt('llm', 2, 0.79, 2)]);
  assert.equal(none.best, null);
  assert.equal(none.headline[1], 'no routed setting beats all encoder below the all-LLM cost');
});

test('frontierSummary: a negative gain is stated as such; a routed setting that still beats all encoder is named', () => {
  const enc = pt('encoder', null, 0.7935, 0.642, { f1Long: 0.58 });
  const llm = pt('llm', null, 0.741, 4.975, { f1Long: 0.5115 });
  const sitting = [pt('length-aware', 4.85, 0.7935, 0.642), pt('cascade', 4.85, 0.79352, 0.6422), pt('llm', 9.7, 0.7896, 0.92)];
  const s = frontierSummary([enc, llm, ...sitting]);
  assert.ok(s.gain !== null && s.gain < 0);
  assert.equal(s.best, null, 'a gain that prints as 0.0 is none');
  assert.deepEqual(s.headline, [
    "all LLM: -5.2 F1 (3+ words -6.9) at 7.7x the encoder's cost",
    "the LLM gains nothing here: every setting's best is all encoder",
  ]);
  const fixer = pt('cascade', 20, 0.8, 2);
  const t = frontierSummary([enc, llm, ...sitting, fixer]);
  assert.equal(t.best?.point, fixer);
  assert.equal(t.best?.rule, 'beats-encoder');
  assert.equal(t.best?.gainKept, null);
  assert.equal(t.headline[1], 'the LLM gains nothing overall; best: cascade at 20 ms, +0.7 F1 over all encoder at 40% of the all-LLM cost');
  // A gain that rounds to zero reads 0.0 (never -0.0) and is no gain.
  const flat = frontierSummary([pt('encoder', null, 0.8, 1), pt('llm', null, 0.7998, 2)]);
  assert.equal(flat.headline[0], "all LLM: 0.0 F1 (3+ words 0.0) at 2.0x the encoder's cost");
  assert.equal(flat.headline[1], "the LLM gains nothing here: every setting's best is all encoder");
  // No headline without both fixed points; no cost ratio for a free encoder.
  assert.deepEqual(frontierSummary([pt('cascade', 1, 0.8, 2)]), { gain: null, gainLong: null, costRatio: null, best: null, headline: [] });
  assert.equal(frontierSummary([pt('encoder', null, 0.8, 0), pt('llm', null, 0.9, 2)]).headline[0], 'all LLM: +10.0 F1 (3+ words 0.0)');
});

test('SVG headline: the summary in large type under the title, wrapped to the width; the best setting ringed and named in the legend', () => {
  const points = [
    pt('encoder', null, 0.8, 1),
    pt('llm', null, 0.86, 10),
    pt('cascade', 10, 0.85, 3),
    pt('cascade', 20, 0.855, 6),
    pt('length-aware', 10, 0.83, 2),
  ];
  const svg = frontierSvg(points, { title: 'Routing frontier', subtitle: 'sub' });
  const els = checkSvg(svg, points);
  const head = /<g class="headline" font-size="(\d+)" font-weight="600">\n([\s\S]*?)\n<\/g>/.exec(svg);
  assert.ok(head, 'headline group');
  assert.ok(Number(head[1]) >= 18, 'large type');
  const lines = [...head[2].matchAll(/>([^<]*)<\/text>/g)].map((m) => m[1].replace(/&apos;/g, "'"));
  assert.deepEqual(lines, frontierSummary(points).headline);
  const best = els.filter((e) => e.attrs.get('class') === 'best');
  assert.equal(best.length, 1);
  assert.ok(svg.includes('>best setting</text>'));
  // The best point's marker sits inside the ring.
  const [bx, by] = [Number(best[0].attrs.get('cx')), Number(best[0].attrs.get('cy'))];
  assert.ok(markerCentres(svg).some((m) => m.tip.startsWith('cascade, budget 10 ms') && Math.hypot(m.x - bx, m.y - by) < 1.5));
  // A narrow canvas wraps the headline onto more lines, all inside it.
  const narrow = frontierSvg(points, { title: 't', width: 420 });
  checkSvg(narrow, points);
  const narrowLines = /<g class="headline"[^>]*>\n([\s\S]*?)\n<\/g>/.exec(narrow)?.[1].split('\n') ?? [];
  assert.ok(narrowLines.length > lines.length, `${narrowLines.length} lines`);
  // No fixed points: no headline, no ring.
  const bare = frontierSvg([pt('cascade', 1, 0.8, 2)], { title: 't' });
  assert.ok(!bare.includes('class="headline"') && !bare.includes('class="best"'));
});

// ------------------------------------------------------------ dodge and budget labels

interface Centre {
  x: number;
  y: number;
  tip: string;
  fill: string;
}

/** Marker centres (a circle's centre, a path's bounding-box centre), each with its tooltip, which names the point. */
function markerCentres(svg: string): Centre[] {
  const out: Centre[] = [];
  for (const m of svg.matchAll(/<(circle|path) class="marker" ([^>]*)><title>([^<]*)<\/title>/g)) {
    const attrs = new Map([...m[2].matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]] as const));
    const fill = attrs.get('fill') ?? '';
    if (m[1] === 'circle') {
      out.push({ x: Number(attrs.get('cx')), y: Number(attrs.get('cy')), tip: m[3], fill });
      continue;
    }
    const xy = (attrs.get('d') ?? '').replace(/[MLZ]/g, ' ').trim().split(/\s+/).map(Number);
    const xs = xy.filter((_, i) => i % 2 === 0);
    const ys = xy.filter((_, i) => i % 2 === 1);
    out.push({ x: (Math.min(...xs) + Math.max(...xs)) / 2, y: (Math.min(...ys) + Math.max(...ys)) / 2, tip: m[3], fill });
  }
  return out;
}

/** bc5cdr's shape: gain-based policies that route nothing sit exactly on the all-encoder point at every budget. */
const ON_ENCODER: FrontierPoint[] = [
  pt('encoder', null, 0.7935, 0.642),
  pt('llm', null, 0.741, 4.975),
  ...[4.85, 9.7, 24.25, 48.51].flatMap((b, i) => [
    pt('length-aware', b, 0.7935, 0.642),
    pt('length-aware/note', b, 0.7935, 0.642),
    pt('cascade', b, i === 0 ? 0.7935 : 0.79 - 0.01 * i, i === 0 ? 0.6422 : 0.8 + i),
    pt('llm', b, i === 0 ? 0.79336 : 0.788 - 0.012 * i, i === 0 ? 0.6429 : 0.9 + i),
  ]),
];

test('SVG dodge: markers of different policies on one spot fan out with leader lines; every policy shows and is in the legend', () => {
  const svg = frontierSvg(ON_ENCODER, { title: 'bc5cdr' });
  const els = checkSvg(svg, ON_ENCODER);
  const centres = markerCentres(svg);
  assert.equal(centres.length, ON_ENCODER.length);
  const enc = centres.find((c) => c.tip.startsWith('encoder:'));
  assert.ok(enc);
  const near = centres.filter((c) => /budget 4\.85 ms/.test(c.tip));
  assert.equal(near.length, 4, 'one 4.85 ms point per routed policy, all on the encoder point');
  // No two markers of different policies share a position, nor hide under the encoder's marker.
  const policyOf = (c: Centre): string => c.tip.split(/[,:]/)[0];
  for (const [i, a] of centres.entries()) {
    for (const b of centres.slice(i + 1)) {
      if (policyOf(a) !== policyOf(b)) assert.ok(Math.hypot(a.x - b.x, a.y - b.y) >= 6, `${a.tip} vs ${b.tip}: ${a.x},${a.y} / ${b.x},${b.y}`);
    }
  }
  // The fixed marker stays on its true point; a moved one has a leader from its true point to it.
  const leaders = els.filter((e) => e.attrs.get('class') === 'leader');
  assert.ok(leaders.length >= 4);
  for (const c of near) {
    assert.ok(
      leaders.some(
        (l) =>
          Math.hypot(Number(l.attrs.get('x2')) - c.x, Number(l.attrs.get('y2')) - c.y) < 1.5 &&
          Math.hypot(Number(l.attrs.get('x1')) - enc.x, Number(l.attrs.get('y1')) - enc.y) < 3,
      ),
      `leader from the encoder point to ${c.tip}`,
    );
    assert.ok(Math.hypot(c.x - enc.x, c.y - enc.y) < 30, 'moved only a little');
  }
  // Same-policy points on one spot are one mark (drawn at one place).
  const la = centres.filter((c) => c.tip.startsWith('length-aware,'));
  assert.equal(new Set(la.map((c) => `${c.x},${c.y}`)).size, 1);
  assert.ok(svg.includes('>moved aside: line to point</text>'));
  // Points apart from the crowd keep their true positions: no leader for them.
  assert.ok(!leaders.some((l) => l.attrs.get('x1') === l.attrs.get('x2') && l.attrs.get('y1') === l.attrs.get('y2')));
  assert.equal(frontierSvg(ON_ENCODER, { title: 'bc5cdr' }), svg, 'deterministic');
  // On the plot's edge (a free encoder at cost 0, at the top F1) the fan turns inwards rather than under the hub.
  const edge = [
    pt('encoder', null, 0.8, 0),
    pt('llm', null, 0.7, 5),
    pt('length-aware', 1, 0.8, 0),
    pt('length-aware/note', 1, 0.8, 0),
    pt('cascade', 1, 0.8, 0),
  ];
  const edgeSvg = frontierSvg(edge, { title: 'edge' });
  checkSvg(edgeSvg, edge);
  const ec = markerCentres(edgeSvg);
  for (const [i, a] of ec.entries()) for (const b of ec.slice(i + 1)) assert.ok(Math.hypot(a.x - b.x, a.y - b.y) >= 6, `${a.tip} vs ${b.tip}`);
  // Nothing coincides: nothing moves.
  const apart = frontierSvg(SAMPLE.slice(0, 4), { title: 't' });
  assert.ok(!apart.includes('class="leader"') && !apart.includes('moved aside'));
});

test('SVG budget labels: every routed point labelled with its budget where it fits, a shared spot with the range, none overlapping', () => {
  const points = [pt('encoder', null, 0.8, 1), pt('llm', null, 0.9, 10), pt('cascade', 5, 0.84, 3), pt('cascade', 20, 0.87, 6), pt('llm', 12.5, 0.83, 8)];
  const svg = frontierSvg(points, { title: 't' });
  const els = checkSvg(svg, points);
  const labels = (s: string): string[] => [...s.matchAll(/<text [^>]*class="budget"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(labels(svg).sort(), ['12.5 ms', '20 ms', '5 ms']);
  assert.ok(svg.includes('>all encoder</text>') && svg.includes('>all LLM</text>'));
  // Label boxes (estimated at 0.6 em per character) do not overlap one another.
  const boxes = els
    .filter((e) => e.name === 'text' && e.attrs.get('class') === 'budget')
    .map((e, i) => ({ x: Number(e.attrs.get('x')), y: Number(e.attrs.get('y')), w: labels(svg)[i].length * 6 }));
  for (const [i, a] of boxes.entries()) for (const b of boxes.slice(i + 1)) assert.ok(a.x + a.w <= b.x || b.x + b.w <= a.x || Math.abs(a.y - b.y) >= 10);
  // On the encoder point: one range label per policy mark, the crowd's labels never stacked on one spot.
  const crowded = frontierSvg(ON_ENCODER, { title: 'bc5cdr' });
  const cl = labels(crowded);
  assert.ok(cl.includes('4.85\u201348.51 ms'), `a range for length-aware's shared spot: ${cl.join(' | ')}`);
  const pos = [...crowded.matchAll(/<text x="([\d.]+)" y="([\d.]+)" class="budget"/g)].map((m) => `${m[1]},${m[2]}`);
  assert.equal(new Set(pos).size, pos.length);
  assert.ok(cl.length >= 8, `${cl.length} budget labels`);
});

test('SVG legend: many policies all listed inside a taller canvas; long names widen the legend column', () => {
  const many = Array.from({ length: 14 }, (_, i) => pt(`policy-${String(i).padStart(2, '0')}`, i + 1, 0.7 + i * 0.01, 1 + i));
  const points = [pt('encoder', null, 0.7, 1), pt('llm', null, 0.9, 20), ...many, pt('a-rather-long-policy-name/with-granularity', 3, 0.75, 4)];
  const svg = frontierSvg(points, { title: 't', height: 240 });
  const els = checkSvg(svg, points);
  const H = Number(els[0].attrs.get('height'));
  assert.ok(H > 240, `canvas grew to ${H}`);
  const legendText = els.filter((e) => e.name === 'text' && Number(e.attrs.get('x')) > 600);
  for (const t of legendText) assert.ok(Number(t.attrs.get('y')) <= H - 4);
  assert.ok(Number(els[0].attrs.get('width')) >= 820);
});
