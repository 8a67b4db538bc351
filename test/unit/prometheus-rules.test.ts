import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { METRIC_SERIES } from '../../src/telemetry/metrics.js';
import { findTool, repoRoot, runTool } from '../helpers/tools.js';

/**
 * The alert rules, their unit tests and every Grafana query, run through a real promtool
 * (scripts/fetch-tools.sh; Debian's prometheus package). promtool has no query linter, so
 * each dashboard expression becomes a recording rule in a temporary file and `promtool check
 * rules` parses it: that is what catches a query Grafana would show as an error panel.
 */
const promtool = findTool('promtool');
const skip = promtool.skip;
const read = (p: string): string => readFileSync(join(repoRoot, p), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'bioner-promtool-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: Array<{ name: string; rules: Rule[] }>;
}
const alerts = parseYaml(read('deploy/alerts.yaml')) as RuleFile;
const alertRules = alerts.groups.flatMap((g) => g.rules);

interface Dashboard {
  templating: { list: Array<{ name: string; type: string; definition?: string }> };
  panels: Array<{ id: number; title: string; type: string; targets?: Array<{ refId: string; expr: string }> }>;
}
const dashboard = JSON.parse(read('deploy/grafana/bioner-router-dashboard.json')) as Dashboard;

/**
 * A Grafana query as Prometheus would receive it: interval macros become a range, dashboard
 * variables (only ever used inside label matchers here) match anything.
 */
function asPromQL(expr: string): string {
  return expr.replace(/\$\{?__(rate_interval|interval|range)\}?/g, '5m').replace(/\$\{(\w+)(:\w+)?\}|\$(\w+)/g, '.*');
}

/** Every PromQL query of the dashboard: panel targets, and the selector inside each `label_values(selector, label)` variable. */
function dashboardQueries(): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of dashboard.panels) for (const t of p.targets ?? []) out.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr });
  for (const v of dashboard.templating.list) {
    if (v.definition === undefined) continue;
    const m = /^label_values\((.+),\s*\w+\)$/.exec(v.definition);
    assert.ok(m !== null, `variable ${v.name}: only label_values(selector, label) is understood, got ${v.definition}`);
    out.push({ where: `variable ${v.name}`, expr: m[1] });
  }
  return out;
}

/** `promtool check rules` on recording rules made of these expressions; the rule index in promtool's message maps back to `where`. */
function checkAsRecordingRules(queries: Array<{ where: string; expr: string }>, file: string): { status: number; output: string } {
  const rules: RuleFile = { groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: asPromQL(q.expr) })) }] };
  const path = join(tmp, file);
  writeFileSync(path, toYaml(rules));
  const r = runTool(promtool, ['check', 'rules', path]);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('promtool check rules deploy/alerts.yaml', { skip }, () => {
  const r = runTool(promtool, ['check', 'rules', 'deploy/alerts.yaml']);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${alertRules.length} rules found`));
});

test('promtool test rules deploy/alerts.test.yaml: every alert has a firing case', { skip }, () => {
  const r = runTool(promtool, ['test', 'rules', 'deploy/alerts.test.yaml']);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /SUCCESS/);
  const tests = parseYaml(read('deploy/alerts.test.yaml')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }> };
  const fired = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
  for (const r of alertRules) assert.ok(r.alert !== undefined && fired.has(r.alert), `${r.alert ?? r.record}: no test case where it fires`);
});

test('every Grafana query parses (each dashboard expr checked by promtool as a recording rule)', { skip }, () => {
  const queries = dashboardQueries();
  assert.ok(queries.length >= 15, `${queries.length} queries`);
  const r = checkAsRecordingRules(queries, 'dashboard-rules.yaml');
  // promtool names the failing rule by its 1-based index in the group: say which panel that is.
  const where = [...r.output.matchAll(/rule (\d+)/g)].map((m) => queries[Number(m[1]) - 1]?.where ?? '?');
  assert.equal(r.status, 0, `${where.join('; ')}\n${r.output}`);
  assert.match(r.output, new RegExp(`SUCCESS: ${queries.length} rules found`));
});

test('the check catches the broken "Estimated gain per note" query this dashboard used to ship', { skip }, () => {
  const broken =
    '(sum by (policy) (rate(bioner_route_estimated_gain_total{job=~"$job", sign="positive"}[$__rate_interval])) or sum by (policy) (rate(bioner_notes_total{job=~"$job", outcome="published"}[$__rate_interval])) * 0) - (sum by (policy) (rate(bioner_route_estimated_gain_total{job=~"$job", sign="negative"}[$__rate_interval])) or sum by (policy) (rate(bioner_notes_total{job=~"$job", outcome="published"}[$__rate_interval])) * 0)) / sum by (policy) (rate(bioner_notes_total{job=~"$job", outcome="published"}[$__rate_interval]))';
  const r = checkAsRecordingRules([{ where: 'old panel 5', expr: broken }], 'broken-rules.yaml');
  assert.notEqual(r.status, 0);
  assert.match(r.output, /unexpected right parenthesis/);
});

test('"Estimated gain per note" computes net gain / published notes, also when no note had a negative gain', { skip }, () => {
  const panel = dashboard.panels.find((p) => p.title === 'Estimated gain per note');
  assert.ok(panel?.targets?.[0] !== undefined);
  const expr = asPromQL(panel.targets[0].expr);
  // 60 notes/min published; +0.02 and -0.005 per note on average for length-aware; encoder has no negative series at all.
  const unit = {
    rule_files: [],
    evaluation_interval: '1m',
    tests: [
      {
        interval: '1m',
        input_series: [
          { series: 'bioner_notes_total{job="bioner-router", instance="a", outcome="published", policy="length-aware"}', values: '0+60x10' },
          { series: 'bioner_route_estimated_gain_total{job="bioner-router", instance="a", policy="length-aware", sign="positive"}', values: '0+1.2x10' },
          { series: 'bioner_route_estimated_gain_total{job="bioner-router", instance="a", policy="length-aware", sign="negative"}', values: '0+0.3x10' },
          { series: 'bioner_notes_total{job="bioner-router", instance="a", outcome="published", policy="encoder"}', values: '0+60x10' },
          { series: 'bioner_route_estimated_gain_total{job="bioner-router", instance="a", policy="encoder", sign="positive"}', values: '0+0.6x10' },
        ],
        promql_expr_test: [
          // Scaled and rounded: promtool 2.42 compares floats exactly.
          {
            expr: `round((${expr}) * 1000)`,
            eval_time: '10m',
            exp_samples: [
              { labels: '{policy="encoder"}', value: 10 },
              { labels: '{policy="length-aware"}', value: 15 },
            ],
          },
        ],
      },
    ],
  };
  const path = join(tmp, 'gain.test.yaml');
  writeFileSync(path, toYaml(unit));
  const r = runTool(promtool, ['test', 'rules', path]);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});

test("deploy/alerts.yaml: every bioner_* series is one the router exports; the others are Prometheus' own or kafka-exporter's", () => {
  const known = new Set<string>();
  for (const name of Object.values(METRIC_SERIES)) for (const suffix of ['', '_bucket', '_sum', '_count']) known.add(name + suffix);
  const external = new Set(['up', 'kafka_consumergroup_lag', 'kafka_consumergroup_current_offset']);
  const used = new Set<string>();
  for (const r of alertRules) {
    assert.match(r.alert ?? '', /^BionerRouter/);
    assert.ok(['warning', 'critical'].includes(r.labels?.severity ?? ''), `${r.alert}: severity`);
    assert.ok((r.annotations?.summary ?? '') !== '' && (r.annotations?.description ?? '') !== '', `${r.alert}: summary and description`);
    // Metric names: identifiers followed by a selector, a range or a closing parenthesis, minus PromQL's own words.
    for (const m of r.expr.matchAll(/\b([a-z_][a-z0-9_]*)\s*(?=\{|\[|\)|\s*(?:>|<|==|$))/g)) {
      const name = m[1];
      if (
        /^(by|on|unless|and|or|without|sum|max|min|rate|increase|delta|absent|clamp_min|histogram_quantile|le|job|instance|policy|code|stage|namespace|pod|consumergroup|topic)$/.test(
          name,
        )
      )
        continue;
      assert.ok(known.has(name) || external.has(name), `${r.alert}: ${name} is neither exported by the router nor a known external series`);
      used.add(name);
    }
  }
  for (const s of [
    'up',
    'bioner_dlq_total',
    'bioner_llm_fallbacks_total',
    'bioner_budget_overruns_total',
    'bioner_llm_circuit_state',
    'bioner_consumer_lag',
    'bioner_notes_total',
    'bioner_note_duration_ms_bucket',
    'kafka_consumergroup_lag',
  ]) {
    assert.ok(used.has(s), `an alert uses ${s}`);
  }
});

test('deploy/otel-collector.yaml exports traces over TLS unless insecure is chosen explicitly', () => {
  const config = parseYaml(read('deploy/otel-collector.yaml')) as {
    exporters: Record<string, { endpoint?: string; tls?: { insecure?: boolean; insecure_skip_verify?: boolean } }>;
  };
  const otlp = Object.entries(config.exporters).filter(([name]) => /^otlp(http)?(\/|$)/.test(name));
  assert.ok(otlp.length > 0, 'an OTLP exporter');
  for (const [name, e] of otlp) {
    assert.notEqual(e.tls?.insecure, true, `${name}: tls.insecure must not be the default`);
    assert.notEqual(e.tls?.insecure_skip_verify, true, `${name}: certificate verification stays on`);
    assert.doesNotMatch(e.endpoint ?? '', /^http:\/\//, `${name}: no plaintext http:// endpoint`);
  }
});

test('deploy/otel-collector.yaml and deploy/alerts.yaml parse the same once indented under `config:` / `spec:` (how deploy/RUNBOOK.md wraps them)', () => {
  const indent = (text: string): string =>
    text
      .split('\n')
      .map((l) => (l === '' ? l : `  ${l}`))
      .join('\n');
  for (const [file, key] of [
    ['deploy/otel-collector.yaml', 'config'],
    ['deploy/alerts.yaml', 'spec'],
  ] as const) {
    const wrapped = parseYaml(`mode: deployment\n${key}:\n${indent(read(file))}`) as Record<string, unknown>;
    assert.deepEqual(wrapped[key], parseYaml(read(file)), file);
  }
});
