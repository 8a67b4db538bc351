import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import type { RoutingRecord } from '../../src/route/record.js';
import { createRouterMetrics, METRIC_SERIES } from '../../src/telemetry/metrics.js';
import { BionerAttr } from '../../src/telemetry/attributes.js';

const root = new URL('../../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8');

/** Span attributes the collector must keep (the allow-list of the telemetry issue); everything else must be dropped. */
const ALLOWED = [
  'messaging.system',
  'messaging.destination.name',
  'messaging.kafka.message.key',
  'messaging.kafka.offset',
  'messaging.destination.partition.id',
  'messaging.operation.type',
  'error.type',
  'bioner.note.id',
  'bioner.route.policy',
  'bioner.route.budget_ms',
  'bioner.route.effective_budget_ms',
  'bioner.route.budget_source',
  'bioner.route.predicted_encoder_ms',
  'bioner.route.predicted_llm_ms',
  'bioner.route.chosen',
  'bioner.route.sentences_llm',
  'bioner.route.estimated_gain',
  'bioner.route.reasons',
  'bioner.tagger.route',
  'bioner.tagger.sentences',
  'bioner.tagger.model',
  'bioner.text.sentences',
  'bioner.text.words',
  'bioner.note.chars',
  // Every attribute the router sets must pass, so the allow-list cannot drift from the code.
  ...Object.values(BionerAttr),
];
const DENIED = [
  'bioner.note.text',
  'bioner.patient.id',
  'patient.id',
  'note.text',
  'db.statement',
  'exception.message',
  'http.url',
  'bioner.note.id.extra',
  'xmessaging.system',
  'bioner.route',
  'error.type.detail',
  'messaging',
];

interface CollectorConfig {
  receivers: Record<string, { protocols?: Record<string, { endpoint?: string }> }>;
  processors: Record<string, { trace_statements?: Array<{ context: string; statements: string[] }> }>;
  exporters: Record<string, unknown>;
  service: { pipelines: Record<string, { receivers: string[]; processors: string[]; exporters: string[] }> };
}

/** The regex of `keep_matching_keys(attributes, "<pattern>")`, unescaped from its OTTL string literal. */
function keepPattern(statement: string): RegExp | undefined {
  const m = /^keep_matching_keys\(attributes, "((?:[^"\\]|\\.)*)"\)$/.exec(statement.trim());
  if (m === null) return undefined;
  return new RegExp(m[1].replace(/\\(.)/g, '$1'));
}

test('the collector config drops every span attribute outside the allow-list in the traces pipeline', () => {
  const config = parseYaml(read('deploy/otel-collector.yaml')) as CollectorConfig;
  assert.equal(config.receivers.otlp.protocols?.http?.endpoint, '0.0.0.0:4318');
  assert.equal(config.receivers.otlp.protocols?.grpc?.endpoint, '0.0.0.0:4317');
  const traces = config.service.pipelines.traces;
  assert.deepEqual(traces.receivers, ['otlp']);
  const allowName = traces.processors.find((p) => p.startsWith('transform/'));
  assert.ok(allowName !== undefined, 'a transform processor in the traces pipeline');
  assert.ok(traces.processors.indexOf(allowName) < traces.processors.indexOf('batch'), 'the allow-list runs before batching/export');
  for (const p of traces.processors) assert.ok(p in config.processors, `processor ${p} is defined`);
  for (const e of traces.exporters) assert.ok(e in config.exporters, `exporter ${e} is defined`);
  assert.ok(
    traces.exporters.some((e) => e.startsWith('otlp')),
    'traces go to an OTLP backend',
  );
  assert.ok(
    Object.values(config.service.pipelines).some((pl) => pl.exporters.some((e) => e.startsWith('prometheus'))),
    'a Prometheus exporter',
  );

  const statements = config.processors[allowName].trace_statements ?? [];
  const span = statements.find((s) => s.context === 'span');
  assert.ok(span !== undefined, 'span-context statements');
  const patterns = span.statements.map(keepPattern);
  assert.equal(patterns.length, 1);
  const pattern = patterns[0];
  assert.ok(pattern !== undefined, `a keep_matching_keys statement: ${span.statements[0]}`);
  for (const key of ALLOWED) assert.ok(pattern.test(key), `${key} is kept`);
  for (const key of DENIED) assert.ok(!pattern.test(key), `${key} is dropped`);
  const events = statements.find((s) => s.context === 'spanevent');
  const eventPattern = events === undefined ? undefined : keepPattern(events.statements[0]);
  assert.ok(
    eventPattern !== undefined && !eventPattern.test('exception.message') && eventPattern.test('exception.type'),
    'span events keep no exception message',
  );
});

const routing = (over: Partial<RoutingRecord>): RoutingRecord => ({
  policy: 'length-aware',
  budgetMs: 1000,
  sentences: 4,
  sentencesEncoder: 2,
  sentencesLlm: 2,
  reasons: [],
  granularity: 'sentence',
  budgetSource: 'default',
  effectiveBudgetMs: 800,
  loadFactor: 1,
  predictedEncoderMs: 10,
  predictedLlmMs: 100,
  actualEncoderMs: 9,
  actualLlmMs: 90,
  llmSentences: [1, 2],
  estimatedGain: 0.02,
  ...over,
});

/** Every series name the metrics module exposes after a few representative hook events. */
async function exportedSeries(): Promise<{ names: Set<string>; text: string }> {
  const m = createRouterMetrics();
  const h = m.hooks;
  h.noteReceived?.({ topic: 'in', partition: 0, offset: '0', bytes: 100 });
  h.routeDecided?.({ noteId: 'n1', policy: 'length-aware', budgetMs: 1000, sentences: 4, routes: { encoder: 2, llm: 2, encoder_fallback: 0 }, reasons: [] });
  h.taggerCalled?.({ noteId: 'n1', route: 'encoder', sentences: 2, ms: 9, ok: true });
  h.taggerCalled?.({ noteId: 'n1', route: 'llm', sentences: 2, ms: 90, ok: true });
  h.notePublished?.({
    noteId: 'n1',
    topic: 'out',
    spans: 3,
    totalMs: 120,
    routes: { encoder: 1, llm: 2, encoder_fallback: 0 },
    routing: routing({ reasons: ['llm_cap', 'llm_cap:sentence_share'] }),
  });
  h.taggerCalled?.({ noteId: 'n2', route: 'llm', sentences: 3, ms: 900, ok: false });
  h.taggerCalled?.({ noteId: 'n2', route: 'encoder_fallback', sentences: 3, ms: 12, ok: true });
  h.notePublished?.({
    noteId: 'n2',
    topic: 'out',
    spans: 1,
    totalMs: 950,
    routes: { encoder: 0, llm: 0, encoder_fallback: 1 },
    routing: routing({
      sentences: 5,
      sentencesEncoder: 5,
      sentencesLlm: 0,
      reasons: ['llm_fallback', 'llm_fallback:LLM_TIMEOUT'],
      estimatedGain: -0.01,
      llmSentences: [],
    }),
  });
  h.noteDeadLettered?.({ topic: 'in', partition: 0, offset: '3', code: 'DECODE_FAILED', stage: 'decode' });
  h.inFlightChanged?.({ inFlight: 2, paused: false });
  h.tombstone?.({ topic: 'in', partition: 0, offset: '4', propagated: true });
  h.dlqValueDropped?.({ topic: 'in', partition: 0, offset: '5', code: 'NOTE_TOO_LARGE', bytes: 2_000_000 });
  h.schemaRegistryFailed?.({ code: 'SCHEMA_REGISTRY_UNAVAILABLE' });
  m.observe({
    circuitState: () => 'half-open',
    inFlight: () => 2,
    paused: () => false,
    consumerLag: () => 5,
    llmCap: () => ({ usage: { sentence_share: 0.5 } }),
  });
  const text = await m.collectPrometheus();
  await m.shutdown();
  const names = new Set(
    text
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(l)?.[0] ?? ''),
  );
  return { names, text };
}

test('the metrics module exports exactly the documented series, with codes for labels and nothing else', async () => {
  const { names, text } = await exportedSeries();
  const histograms = [METRIC_SERIES.taggerDuration, METRIC_SERIES.noteDuration, METRIC_SERIES.llmShare, METRIC_SERIES.effectiveBudget];
  const expected = new Set<string>(['target_info']);
  for (const s of Object.values(METRIC_SERIES)) {
    if ((histograms as string[]).includes(s)) for (const suffix of ['_bucket', '_sum', '_count']) expected.add(s + suffix);
    else expected.add(s);
  }
  assert.deepEqual([...names].sort(), [...expected].sort());
  // Fallback accounting: n2's 3 failed-LLM sentences are encoder_fallback, its other 2 plain encoder.
  assert.match(text, /^bioner_sentences_total\{route="encoder_fallback",policy="length-aware"[^}]*\} 3$/m);
  assert.match(text, /^bioner_sentences_total\{route="encoder",policy="length-aware"[^}]*\} 4$/m);
  assert.match(text, /^bioner_sentences_total\{route="llm",policy="length-aware"[^}]*\} 2$/m);
  assert.match(text, /^bioner_llm_fallbacks_total\{code="LLM_TIMEOUT"[^}]*\} 1$/m);
  assert.match(text, /^bioner_budget_overruns_total\{policy="length-aware"[^}]*\} 1$/m);
  assert.match(text, /^bioner_llm_circuit_state\{[^}]*\} 1$/m);
  assert.match(text, /^bioner_tombstones_total\{outcome="propagated"[^}]*\} 1$/m);
  assert.match(text, /^bioner_dlq_value_dropped_total\{code="NOTE_TOO_LARGE"[^}]*\} 1$/m);
  assert.match(text, /^bioner_schema_registry_errors_total\{code="SCHEMA_REGISTRY_UNAVAILABLE"[^}]*\} 1$/m);
  assert.match(text, /^bioner_route_estimated_gain_total\{policy="length-aware",sign="positive"[^}]*\} 0\.02$/m);
  assert.match(text, /^bioner_route_estimated_gain_total\{policy="length-aware",sign="negative"[^}]*\} 0\.01$/m);
  // Labels: only the low-cardinality set (le for buckets, otel_scope_name from the exporter, target_info's resource).
  const labelNames = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.startsWith('target_info')) continue;
    for (const m of line.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labelNames.add(m[1]);
  }
  assert.match(text, /^bioner_llm_capped_total\{policy="length-aware",limit="sentence_share"[^}]*\} 1$/m);
  assert.match(text, /^bioner_llm_cap_usage\{limit="sentence_share"[^}]*\} 0\.5$/m);
  assert.deepEqual([...labelNames].sort(), ['code', 'le', 'limit', 'ok', 'otel_scope_name', 'outcome', 'policy', 'route', 'sign', 'stage']);
  assert.ok(!text.includes('"n1"') && !text.includes('"n2"'), 'no note id in the exposition');
});

test('every PromQL expression of the dashboard names only series the metrics module exports, and every panel asked for is there', async () => {
  const { names } = await exportedSeries();
  const dashboard = JSON.parse(read('deploy/grafana/bioner-router-dashboard.json')) as {
    templating: { list: Array<{ name: string; type: string; query: unknown; definition?: string }> };
    panels: Array<{ title: string; type: string; datasource?: { uid?: string }; targets?: Array<{ expr: string }> }>;
  };
  const dsVar = dashboard.templating.list.find((v) => v.type === 'datasource');
  assert.ok(dsVar !== undefined && dsVar.query === 'prometheus', 'a Prometheus datasource variable');
  const exprs: string[] = [];
  for (const p of dashboard.panels) {
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, `\${${dsVar.name}}`, `${p.title} uses the datasource variable`);
    assert.ok((p.targets ?? []).length > 0, `${p.title} has queries`);
    for (const t of p.targets ?? []) exprs.push(t.expr);
  }
  for (const v of dashboard.templating.list) if (v.definition !== undefined) exprs.push(v.definition);
  const used = new Set<string>();
  for (const expr of exprs) {
    const refs = [...expr.matchAll(/\b[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{[])/g)].map((m) => m[0]).filter((n) => n !== 'by' && n !== 'without');
    const series = [...expr.matchAll(/\bbioner_[a-z0-9_]+/g)].map((m) => m[0]);
    assert.ok(series.length > 0, `expr names a bioner series: ${expr}`);
    for (const s of [...series, ...refs.filter((r) => !r.startsWith('$'))]) {
      assert.ok(names.has(s), `${s} (in ${expr}) is exported by the metrics module`);
      used.add(s);
    }
  }
  // The panels the issue asks for, by the series they must read.
  for (const s of [
    'bioner_sentences_total',
    'bioner_tagger_duration_ms_bucket',
    'bioner_route_llm_share_sum',
    'bioner_route_effective_budget_ms_sum',
    'bioner_llm_fallbacks_total',
    'bioner_dlq_total',
    'bioner_note_duration_ms_bucket',
    'bioner_budget_overruns_total',
    'bioner_llm_circuit_state',
    'bioner_notes_in_flight',
    'bioner_consumer_lag',
  ])
    assert.ok(used.has(s), `a panel reads ${s}`);
});
