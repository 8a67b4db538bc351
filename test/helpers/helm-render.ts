import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

/**
 * A small renderer for the subset of Go templates / Helm functions that
 * helm/bioner-router uses (no helm binary exists where this project is built).
 * Supported: {{- -}} trimming, comments, `.Values.x` chains, `$`, `$var :=`,
 * if / else if / else / end, with, range (list or map, `$k, $v :=`), define,
 * include, template, pipelines and parentheses, and the functions in FUNCS.
 * Anything outside the subset throws, so a template that strays fails the test.
 */

type Value = unknown;
type Node =
  | { kind: 'text'; text: string }
  | { kind: 'action'; expr: string }
  | { kind: 'if'; branches: Array<{ cond: string | null; body: Node[] }> }
  | { kind: 'with'; expr: string; body: Node[]; elseBody: Node[] }
  | { kind: 'range'; expr: string; keyVar?: string; valVar?: string; body: Node[]; elseBody: Node[] };

export class TemplateError extends Error {}

interface Token {
  kind: 'text' | 'action';
  text: string;
}

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      out.push({ kind: 'text', text: src.slice(i) });
      break;
    }
    let text = src.slice(i, open);
    let start = open + 2;
    if (src[start] === '-' && /\s/.test(src[start + 1] ?? '')) {
      text = text.replace(/\s+$/, '');
      start += 1;
    }
    out.push({ kind: 'text', text });
    const close = src.indexOf('}}', start);
    if (close < 0) throw new TemplateError('unclosed action');
    let end = close;
    let trimAfter = false;
    if (src[close - 1] === '-' && /\s/.test(src[close - 2] ?? '')) {
      end = close - 1;
      trimAfter = true;
    }
    out.push({ kind: 'action', text: src.slice(start, end).trim() });
    i = close + 2;
    if (trimAfter) while (i < src.length && /\s/.test(src[i])) i++;
  }
  return out;
}

interface Parsed {
  body: Node[];
  defines: Map<string, Node[]>;
}

function parse(src: string, defines: Map<string, Node[]>): Node[] {
  const tokens = tokenize(src);
  let pos = 0;
  const parseList = (terminators: string[]): { nodes: Node[]; end: string } => {
    const nodes: Node[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos++];
      if (t.kind === 'text') {
        if (t.text !== '') nodes.push({ kind: 'text', text: t.text });
        continue;
      }
      const a = t.text;
      if (a.startsWith('/*')) continue;
      const word = a.split(/\s+/)[0];
      if (terminators.includes(word) || (word === 'else' && terminators.includes('else'))) return { nodes, end: a };
      if (word === 'if') {
        const branches: Array<{ cond: string | null; body: Node[] }> = [];
        let cond: string | null = a.slice(2).trim();
        for (;;) {
          const r = parseList(['else', 'end']);
          branches.push({ cond, body: r.nodes });
          if (r.end === 'end') break;
          const rest = r.end.slice(4).trim();
          if (rest.startsWith('if ')) cond = rest.slice(3).trim();
          else if (rest === '') cond = null;
          else throw new TemplateError(`unsupported: {{${r.end}}}`);
        }
        nodes.push({ kind: 'if', branches });
      } else if (word === 'with' || word === 'range') {
        let expr = a.slice(word.length).trim();
        let keyVar: string | undefined;
        let valVar: string | undefined;
        const m = /^(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.+)$/.exec(expr);
        if (m) {
          if (word === 'with') throw new TemplateError('with $x := is outside the subset');
          if (m[2]) {
            keyVar = m[1];
            valVar = m[2];
          } else valVar = m[1];
          expr = m[3];
        }
        const r = parseList(['else', 'end']);
        let elseBody: Node[] = [];
        if (r.end !== 'end') {
          if (r.end.trim() !== 'else') throw new TemplateError(`unsupported: {{${r.end}}}`);
          const r2 = parseList(['end']);
          elseBody = r2.nodes;
        }
        if (word === 'with') nodes.push({ kind: 'with', expr, body: r.nodes, elseBody });
        else nodes.push({ kind: 'range', expr, keyVar, valVar, body: r.nodes, elseBody });
      } else if (word === 'define') {
        const name = JSON.parse(a.slice(6).trim()) as string;
        const r = parseList(['end']);
        defines.set(name, r.nodes);
      } else if (word === 'end' || word === 'else') {
        throw new TemplateError(`unexpected {{${a}}}`);
      } else {
        nodes.push({ kind: 'action', expr: a });
      }
    }
    if (terminators.length > 0) throw new TemplateError(`missing {{end}} (expected ${terminators.join('/')})`);
    return { nodes, end: '' };
  };
  return parseList([]).nodes;
}

// ---------- expressions ----------

type Expr =
  | { t: 'lit'; v: Value }
  | { t: 'field'; base: 'dot' | string; path: string[] }
  | { t: 'call'; fn: string; args: Expr[] }
  | { t: 'pipe'; stages: Expr[] }
  | { t: 'paren'; inner: Expr };

function lexExpr(s: string): string[] {
  const toks: string[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') j += s[j] === '\\' ? 2 : 1;
      toks.push(s.slice(i, j + 1));
      i = j + 1;
    } else if (c === '(' || c === ')' || c === '|') {
      toks.push(c);
      i++;
    } else if (s.startsWith(':=', i)) {
      toks.push(':=');
      i += 2;
    } else {
      let j = i;
      while (j < s.length && !/[\s()|"]/.test(s[j])) j++;
      toks.push(s.slice(i, j));
      i = j;
    }
  }
  return toks;
}

function parseExpr(src: string): Expr {
  const toks = lexExpr(src);
  let p = 0;
  const operand = (): Expr => {
    const t = toks[p++];
    if (t === undefined) throw new TemplateError(`incomplete expression: ${src}`);
    if (t === '(') {
      const inner = pipeline();
      if (toks[p++] !== ')') throw new TemplateError(`missing ) in ${src}`);
      return { t: 'paren', inner };
    }
    if (t.startsWith('"')) return { t: 'lit', v: JSON.parse(t) };
    if (/^-?\d+(\.\d+)?$/.test(t)) return { t: 'lit', v: Number(t) };
    if (t === 'true' || t === 'false') return { t: 'lit', v: t === 'true' };
    if (t === 'nil') return { t: 'lit', v: null };
    if (t === '.') return { t: 'field', base: 'dot', path: [] };
    if (t.startsWith('.')) return { t: 'field', base: 'dot', path: t.slice(1).split('.') };
    if (t.startsWith('$')) {
      const [v, ...path] = t.split('.');
      return { t: 'field', base: v, path };
    }
    return { t: 'call', fn: t, args: [] };
  };
  const command = (): Expr => {
    const first = operand();
    if (first.t === 'call') {
      while (p < toks.length && toks[p] !== '|' && toks[p] !== ')') first.args.push(operand());
      return first;
    }
    if (p < toks.length && toks[p] !== '|' && toks[p] !== ')') throw new TemplateError(`unexpected ${toks[p]} in ${src}`);
    return first;
  };
  const pipeline = (): Expr => {
    const stages = [command()];
    while (toks[p] === '|') {
      p++;
      const st = command();
      if (st.t !== 'call') throw new TemplateError(`pipe into non-function in ${src}`);
      stages.push(st);
    }
    return stages.length === 1 ? stages[0] : { t: 'pipe', stages };
  };
  const e = pipeline();
  if (p !== toks.length) throw new TemplateError(`trailing tokens in ${src}`);
  return e;
}

// ---------- evaluation ----------

function truthy(v: Value): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

function toStr(v: Value): string {
  if (v === undefined || v === null) return '<no value>';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(toStr).join(' ')}]`;
  return `map[${Object.entries(v as Record<string, Value>)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, x]) => `${k}:${toStr(x)}`)
    .join(' ')}]`;
}

function toInt(v: Value): number {
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  return 0;
}

function num(v: Value, fn: string): number {
  if (typeof v !== 'number') throw new TemplateError(`${fn}: expected a number, got ${toStr(v)}`);
  return v;
}

function printf(fmt: string, args: Value[]): string {
  let i = 0;
  return fmt.replace(/%[-0-9.]*([sdvq%])/g, (_m, verb: string) => {
    if (verb === '%') return '%';
    const a = args[i++];
    if (verb === 'd') return String(toInt(a));
    if (verb === 'q') return JSON.stringify(toStr(a));
    return toStr(a);
  });
}

type Scope = Map<string, Value>;

export class HelmChart {
  private readonly defines = new Map<string, Node[]>();
  private readonly templates = new Map<string, Node[]>();

  constructor(readonly dir: string) {
    const tdir = join(dir, 'templates');
    for (const f of readdirSync(tdir).sort()) {
      if (!/\.(ya?ml|tpl)$/.test(f)) continue;
      const body = parse(readFileSync(join(tdir, f), 'utf8'), this.defines);
      if (!f.startsWith('_')) this.templates.set(f, body);
    }
  }

  templateNames(): string[] {
    return [...this.templates.keys()];
  }

  /** Renders every template with `values` (already merged over values.yaml); name -> text. */
  render(values: Record<string, Value>, release = { Name: 'bioner', Namespace: 'default' }): Map<string, string> {
    const chart = parseYaml(readFileSync(join(this.dir, 'Chart.yaml'), 'utf8')) as Record<string, Value>;
    const root = {
      Values: values,
      Release: { Name: release.Name, Namespace: release.Namespace, Service: 'Helm' },
      Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
    };
    const out = new Map<string, string>();
    for (const [name, body] of this.templates) {
      const scope: Scope = new Map([['$', root]]);
      out.set(name, this.exec(body, root, scope));
    }
    return out;
  }

  private exec(nodes: Node[], dot: Value, scope: Scope): string {
    let s = '';
    for (const n of nodes) {
      switch (n.kind) {
        case 'text':
          s += n.text;
          break;
        case 'action': {
          const m = /^(\$\w+)\s*:=\s*(.+)$/.exec(n.expr);
          if (m) {
            scope.set(m[1], this.eval(parseExpr(m[2]), dot, scope));
            break;
          }
          const v = this.eval(parseExpr(n.expr), dot, scope);
          s += toStr(v);
          break;
        }
        case 'if': {
          for (const b of n.branches) {
            if (b.cond === null || truthy(this.eval(parseExpr(b.cond), dot, scope))) {
              s += this.exec(b.body, dot, new Map(scope));
              break;
            }
          }
          break;
        }
        case 'with': {
          const v = this.eval(parseExpr(n.expr), dot, scope);
          s += truthy(v) ? this.exec(n.body, v, new Map(scope)) : this.exec(n.elseBody, dot, new Map(scope));
          break;
        }
        case 'range': {
          const v = this.eval(parseExpr(n.expr), dot, scope);
          const entries: Array<[Value, Value]> = Array.isArray(v)
            ? v.map((x, i) => [i, x])
            : v !== null && typeof v === 'object'
              ? Object.keys(v as object)
                  .sort()
                  .map((k) => [k, (v as Record<string, Value>)[k]])
              : [];
          if (entries.length === 0) {
            s += this.exec(n.elseBody, dot, new Map(scope));
            break;
          }
          for (const [k, x] of entries) {
            const sc = new Map(scope);
            if (n.keyVar) sc.set(n.keyVar, k);
            if (n.valVar) sc.set(n.valVar, x);
            s += this.exec(n.body, x, sc);
          }
          break;
        }
      }
    }
    return s;
  }

  private eval(e: Expr, dot: Value, scope: Scope, piped?: { v: Value }): Value {
    switch (e.t) {
      case 'lit':
        return e.v;
      case 'paren':
        return this.eval(e.inner, dot, scope);
      case 'field': {
        let v: Value;
        if (e.base === 'dot') v = dot;
        else {
          if (!scope.has(e.base)) throw new TemplateError(`undefined variable ${e.base}`);
          v = scope.get(e.base);
        }
        for (const key of e.path) {
          if (v === null || v === undefined) throw new TemplateError(`nil pointer evaluating .${e.path.join('.')}`);
          if (typeof v !== 'object' || Array.isArray(v)) throw new TemplateError(`can't evaluate field ${key} in ${toStr(v)}`);
          v = (v as Record<string, Value>)[key];
        }
        return v;
      }
      case 'pipe': {
        let v = this.eval(e.stages[0], dot, scope);
        for (const st of e.stages.slice(1)) v = this.eval(st, dot, scope, { v });
        return v;
      }
      case 'call': {
        const args = e.args.map((a) => this.eval(a, dot, scope));
        if (piped) args.push(piped.v);
        return this.call(e.fn, args, dot);
      }
    }
  }

  private call(fn: string, a: Value[], _dot: Value): Value {
    switch (fn) {
      case 'include':
      case 'template': {
        const body = this.defines.get(String(a[0]));
        if (!body) throw new TemplateError(`no template "${toStr(a[0])}"`);
        return this.exec(body, a[1], new Map([['$', a[1]]]));
      }
      case 'toYaml':
        if (a[0] === null || a[0] === undefined) return 'null';
        // Helm's toYaml goes through JSON: map keys come out sorted.
        return stringifyYaml(a[0], { lineWidth: 0, sortMapEntries: true }).replace(/\n$/, '');
      case 'nindent':
      case 'indent': {
        const pad = ' '.repeat(toInt(a[0]));
        const body = toStr(a[1])
          .split('\n')
          .map((l) => pad + l)
          .join('\n');
        return fn === 'nindent' ? '\n' + body : body;
      }
      case 'quote':
        return a.map((x) => JSON.stringify(x === undefined || x === null ? '' : toStr(x))).join(' ');
      case 'default':
        return truthy(a[1]) ? a[1] : a[0];
      case 'required':
        if (a[1] === null || a[1] === undefined || a[1] === '') throw new TemplateError(String(a[0]));
        return a[1];
      case 'fail':
        throw new TemplateError(String(a[0]));
      case 'printf':
        return printf(String(a[0]), a.slice(1));
      case 'trimSuffix':
        return toStr(a[1]).endsWith(String(a[0])) ? toStr(a[1]).slice(0, -String(a[0]).length) : toStr(a[1]);
      case 'trunc':
        return toStr(a[1]).slice(0, toInt(a[0]));
      case 'join':
        if (!Array.isArray(a[1])) throw new TemplateError('join: expected a list');
        return (a[1] as Value[]).map(toStr).join(String(a[0]));
      case 'toString':
        return toStr(a[0]);
      case 'eq':
        return a.slice(1).some((x) => x === a[0]);
      case 'ne':
        return a[0] !== a[1];
      case 'and':
        return a.reduce((acc, x) => (truthy(acc) ? x : acc));
      case 'or':
        return a.find((x) => truthy(x)) ?? a[a.length - 1];
      case 'not':
        return !truthy(a[0]);
      case 'gt':
        return num(a[0], fn) > num(a[1], fn);
      case 'lt':
        return num(a[0], fn) < num(a[1], fn);
      case 'ge':
        return num(a[0], fn) >= num(a[1], fn);
      case 'le':
        return num(a[0], fn) <= num(a[1], fn);
      case 'int':
        return toInt(a[0]);
      case 'add':
        return a.reduce<number>((s, x) => s + toInt(x), 0);
      case 'mul':
        return a.reduce<number>((s, x) => s * toInt(x), 1);
      case 'div': {
        const d = toInt(a[1]);
        if (d === 0) throw new TemplateError('div: division by zero');
        return Math.trunc(toInt(a[0]) / d);
      }
      default:
        throw new TemplateError(`function "${fn}" is outside the supported subset`);
    }
  }
}

/** Helm's value merge: maps merge recursively, anything else (lists included) is replaced. */
export function mergeValues(base: Value, over: Value): Value {
  if (over === undefined) return structuredClone(base);
  if (base && over && typeof base === 'object' && typeof over === 'object' && !Array.isArray(base) && !Array.isArray(over)) {
    const out: Record<string, Value> = structuredClone(base) as Record<string, Value>;
    for (const [k, v] of Object.entries(over as Record<string, Value>)) {
      if (v === null) delete out[k];
      else out[k] = mergeValues(out[k], v);
    }
    return out;
  }
  return structuredClone(over);
}

export type { Parsed };

/** Renders one template string against `root` (its `define`s are visible to itself); for testing the renderer. */
export function renderString(src: string, root: Record<string, Value>): string {
  const chart = Object.create(HelmChart.prototype) as HelmChart;
  const defines = new Map<string, Node[]>();
  Object.assign(chart, { defines, templates: new Map() });
  const body = parse(src, defines);
  return (chart as unknown as { exec(n: Node[], d: Value, s: Scope): string }).exec(body, root, new Map([['$', root]]));
}
