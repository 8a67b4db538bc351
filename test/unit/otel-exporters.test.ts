import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createRouterMetrics, metricsExporterNames } from '../../src/telemetry/metrics.js';
import { startTelemetryServer } from '../../src/telemetry/server.js';
import { setupTracing, traceExporterNames, tracer } from '../../src/telemetry/tracing.js';

const telemetry = validateConfig({}).telemetry;

test('OTEL_TRACES_EXPORTER wins over telemetry.tracesExporter: otlp, console, a list, none; an unknown name is refused', () => {
  assert.deepEqual(traceExporterNames(telemetry, {}), ['otlp']);
  assert.deepEqual(traceExporterNames({ ...telemetry, tracesExporter: 'console' }, {}), ['console']);
  assert.deepEqual(traceExporterNames(telemetry, { OTEL_TRACES_EXPORTER: 'console' }), ['console']);
  assert.deepEqual(traceExporterNames(telemetry, { OTEL_TRACES_EXPORTER: ' otlp , console,otlp' }), ['otlp', 'console']);
  assert.deepEqual(traceExporterNames(telemetry, { OTEL_TRACES_EXPORTER: 'console,none' }), []);
  assert.deepEqual(traceExporterNames({ ...telemetry, tracesExporter: 'none' }, { OTEL_TRACES_EXPORTER: '' }), []);
  assert.throws(
    () => traceExporterNames(telemetry, { OTEL_TRACES_EXPORTER: 'zipkin' }),
    (e: unknown) => e instanceof ConfigError && e.field === 'OTEL_TRACES_EXPORTER' && /zipkin/.test(e.message),
  );
});

test('OTEL_TRACES_EXPORTER=console prints each span as it ends; none registers nothing', async () => {
  const printed: unknown[] = [];
  const dir = console.dir;
  console.dir = (item: unknown) => void printed.push(item);
  try {
    const tracing = setupTracing(telemetry, { env: { OTEL_TRACES_EXPORTER: 'console' } });
    assert.deepEqual(tracing.exporters, ['console']);
    tracer().startSpan('route encoder').end();
    await tracing.shutdown();
  } finally {
    console.dir = dir;
  }
  assert.ok(
    printed.some((p) => typeof p === 'object' && p !== null && (p as { name?: unknown }).name === 'route encoder'),
    JSON.stringify(printed).slice(0, 300),
  );
  // The demo's way: its own in-memory exporter, plus what an explicit OTEL_TRACES_EXPORTER names; without it, only its own.
  const mine = new InMemorySpanExporter();
  const both = setupTracing(telemetry, { exporter: mine, alsoFromEnv: true, env: { OTEL_TRACES_EXPORTER: 'console' } });
  assert.deepEqual(both.exporters, ['custom', 'console']);
  await both.shutdown();
  const own = setupTracing(telemetry, { exporter: mine, alsoFromEnv: true, env: {} });
  assert.deepEqual(own.exporters, ['custom']);
  await own.shutdown();
  const none = setupTracing(telemetry, { env: { OTEL_TRACES_EXPORTER: 'none' } });
  assert.equal(none.enabled, false);
  assert.deepEqual(none.exporters, []);
});

test('OTEL_METRICS_EXPORTER: prometheus by default, otlp/console push, none; /metrics is off without prometheus; unknown names refused', async () => {
  assert.deepEqual(metricsExporterNames({}), ['prometheus']);
  assert.deepEqual(metricsExporterNames({ OTEL_METRICS_EXPORTER: 'otlp, prometheus' }), ['otlp', 'prometheus']);
  assert.deepEqual(metricsExporterNames({ OTEL_METRICS_EXPORTER: 'console,none' }), []);
  assert.deepEqual(metricsExporterNames({ OTEL_SDK_DISABLED: 'true' }), []);
  assert.throws(
    () => metricsExporterNames({ OTEL_METRICS_EXPORTER: 'statsd' }),
    (e: unknown) => e instanceof ConfigError && e.field === 'OTEL_METRICS_EXPORTER',
  );

  const printed: unknown[] = [];
  const dir = console.dir;
  console.dir = (item: unknown) => void printed.push(item);
  const m = createRouterMetrics({ serviceName: 'bioner-router-test', exporters: ['console'] });
  try {
    m.hooks.noteReceived?.({ topic: 'in', partition: 0, offset: '0', bytes: 10 });
    await m.meterProvider.forceFlush();
  } finally {
    console.dir = dir;
    await m.shutdown();
  }
  assert.equal(m.servesPrometheus, false);
  assert.ok(
    printed.some((p) => JSON.stringify(p).includes('bioner.notes.received')),
    'the console exporter printed the counter',
  );

  const server = await startTelemetryServer({ port: 0, host: '127.0.0.1', metrics: m, ready: () => ({ ok: true, checks: {} }) });
  try {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 404);
    assert.match(await res.text(), /OTEL_METRICS_EXPORTER/);
  } finally {
    await server.close();
  }
});
