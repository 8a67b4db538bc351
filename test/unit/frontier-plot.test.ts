import { test } from 'node:test';
import assert from 'node:assert/strict';
import { frontierCsv, frontierSvg, paretoFront, type FrontierPoint } from '../../src/eval/frontier-plot.js';
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
  assert.match(svg, /width="720" height="440" viewBox="0 0 720 440"/);
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
