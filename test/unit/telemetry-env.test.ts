import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ROOT_CONTEXT, trace, type Context } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { validateConfig } from '../../src/config/load.js';
import { createRouterMetrics } from '../../src/telemetry/metrics.js';
import { SAMPLER_NAMES, samplerFromEnv, telemetryIdentity } from '../../src/telemetry/otel-env.js';
import { setupTracing } from '../../src/telemetry/tracing.js';

const telemetry = validateConfig({}).telemetry;

/** OTEL_RESOURCE_ATTRIBUTES is read by the SDK's detector from process.env, so these tests set it there (this file runs in its own process). */
const saved = { OTEL_RESOURCE_ATTRIBUTES: process.env.OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME: process.env.OTEL_SERVICE_NAME };
function setEnv(name: keyof typeof saved, v: string | undefined): void {
  if (v === undefined) delete process.env[name];
  else process.env[name] = v;
}
after(() => {
  setEnv('OTEL_RESOURCE_ATTRIBUTES', saved.OTEL_RESOURCE_ATTRIBUTES);
  setEnv('OTEL_SERVICE_NAME', saved.OTEL_SERVICE_NAME);
});

/** `target_info` labels of a Prometheus exposition. */
function targetInfo(text: string): Map<string, string> {
  const line = text.split('\n').find((l) => l.startsWith('target_info{'));
  assert.ok(line !== undefined, 'target_info is exported');
  return new Map([...line.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
}

test('service.name: OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES, else telemetry.serviceName', () => {
  setEnv('OTEL_RESOURCE_ATTRIBUTES', undefined);
  assert.deepEqual(telemetryIdentity({ serviceName: 'from-config' }, {}), { serviceName: 'from-config', resourceAttributes: {} });
  assert.equal(telemetryIdentity({ serviceName: 'from-config' }, { OTEL_SERVICE_NAME: '  ' }).serviceName, 'from-config', 'a blank variable is unset');
  setEnv('OTEL_RESOURCE_ATTRIBUTES', 'service.name=from-attrs,deployment.environment=staging');
  assert.deepEqual(telemetryIdentity({ serviceName: 'from-config' }, {}), {
    serviceName: 'from-attrs',
    resourceAttributes: { 'deployment.environment': 'staging' },
  });
  assert.equal(telemetryIdentity({ serviceName: 'from-config' }, { OTEL_SERVICE_NAME: 'from-env' }).serviceName, 'from-env');
});

test('OTEL_RESOURCE_ATTRIBUTES: percent-decoded pairs; a malformed value is dropped as a whole and flagged', () => {
  setEnv('OTEL_RESOURCE_ATTRIBUTES', 'deployment.environment=prod, team=nlp%2Cml ,,service.version=1.2.3');
  assert.deepEqual(telemetryIdentity(telemetry, {}).resourceAttributes, { 'deployment.environment': 'prod', team: 'nlp,ml', 'service.version': '1.2.3' });
  setEnv('OTEL_RESOURCE_ATTRIBUTES', 'deployment.environment=prod,broken');
  assert.deepEqual(telemetryIdentity(telemetry, {}), { serviceName: 'bioner-router', resourceAttributes: {}, resourceAttributesIgnored: true });
  setEnv('OTEL_RESOURCE_ATTRIBUTES', ' , ');
  assert.equal(telemetryIdentity(telemetry, {}).resourceAttributesIgnored, undefined, 'an empty list is not an error');
});

test('traces and metrics carry the same resolved identity (env over config)', async () => {
  setEnv('OTEL_RESOURCE_ATTRIBUTES', 'deployment.environment=staging');
  const env = { OTEL_SERVICE_NAME: 'router-from-env' };
  const config = { ...telemetry, serviceName: 'router-from-config' };
  // As run wires it: one identity for both.
  const identity = telemetryIdentity(config, env);
  const metrics = createRouterMetrics(identity);
  const labels = targetInfo(await metrics.collectPrometheus());
  await metrics.shutdown();
  assert.equal(labels.get('service_name'), 'router-from-env');
  assert.equal(labels.get('deployment_environment'), 'staging');

  const exporter = new InMemorySpanExporter();
  const tracing = setupTracing(config, { exporter, env, identity });
  trace.getTracer('t').startSpan('s').end();
  await tracing.forceFlush();
  // Read before shutdown: shutting the in-memory exporter down empties it.
  const [span] = exporter.getFinishedSpans();
  await tracing.shutdown();
  assert.equal(span.resource.attributes['service.name'], 'router-from-env');
  assert.equal(span.resource.attributes['deployment.environment'], 'staging');
  assert.equal(span.resource.attributes['telemetry.sdk.language'], 'nodejs', 'on top of the SDK default resource');

  // Without a passed identity each side still resolves env over config, the same way.
  const second = new InMemorySpanExporter();
  const own = setupTracing(config, { exporter: second, env });
  trace.getTracer('t').startSpan('s').end();
  await own.forceFlush();
  assert.equal(second.getFinishedSpans()[0].resource.attributes['service.name'], 'router-from-env');
  await own.shutdown();
  setEnv('OTEL_SERVICE_NAME', 'metrics-default-env');
  const bare = createRouterMetrics();
  assert.equal(targetInfo(await bare.collectPrometheus()).get('service_name'), 'metrics-default-env', 'createRouterMetrics() reads OTEL_SERVICE_NAME too');
  await bare.shutdown();
  setEnv('OTEL_SERVICE_NAME', saved.OTEL_SERVICE_NAME);
});

const remote = (sampled: boolean): Context =>
  trace.setSpanContext(ROOT_CONTEXT, { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: sampled ? 1 : 0, isRemote: true });

/** Whether the registered tracer records: a root span, a child of a sampled and of an unsampled remote parent (a producer's traceparent). */
async function decisions(
  env: Record<string, string>,
  sampleRatio = 1,
): Promise<{ root: boolean; sampledParent: boolean; unsampledParent: boolean; name: string | undefined; ignored: string | undefined }> {
  const tracing = setupTracing({ ...telemetry, sampleRatio }, { exporter: new InMemorySpanExporter(), env });
  try {
    const t = trace.getTracer('t');
    const rec = (ctx: Context | undefined): boolean => {
      const span = t.startSpan('s', {}, ctx);
      const recording = span.isRecording();
      span.end();
      return recording;
    };
    return {
      root: rec(undefined),
      sampledParent: rec(remote(true)),
      unsampledParent: rec(remote(false)),
      name: tracing.sampling?.name,
      ignored: tracing.sampling?.ignored,
    };
  } finally {
    // Awaited: shutdown unregisters the globals, which must not hit the next case's registration.
    await tracing.shutdown();
  }
}

test('OTEL_TRACES_SAMPLER: every standard name the SDK can build, with OTEL_TRACES_SAMPLER_ARG for the ratio ones', async () => {
  const cases: Array<[Record<string, string>, number, [boolean, boolean, boolean]]> = [
    [{ OTEL_TRACES_SAMPLER: 'always_on' }, 0, [true, true, true]],
    [{ OTEL_TRACES_SAMPLER: 'always_off' }, 1, [false, false, false]],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }, 0, [true, true, true]],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, 1, [false, false, false]],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, 0, [true, true, false]],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, 1, [false, true, false]],
    [{ OTEL_TRACES_SAMPLER: 'PARENTBASED_TRACEIDRATIO', OTEL_TRACES_SAMPLER_ARG: '0' }, 1, [false, true, false]],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }, 0, [true, true, false]],
    // Unset: the config's ratio under a parent-based sampler, as before.
    [{}, 0, [false, true, false]],
    [{}, 1, [true, true, false]],
    // An unusable ratio falls back to the config's.
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: 'lots' }, 0, [false, false, false]],
  ];
  for (const [env, ratio, [root, sampledParent, unsampledParent]] of cases) {
    const got = await decisions(env, ratio);
    const label = `${JSON.stringify(env)} ratio ${ratio}`;
    assert.deepEqual([got.root, got.sampledParent, got.unsampledParent], [root, sampledParent, unsampledParent], label);
    assert.equal(got.name, (env.OTEL_TRACES_SAMPLER ?? 'parentbased_traceidratio').toLowerCase(), label);
    assert.equal(got.ignored, undefined, label);
  }
  assert.deepEqual([...SAMPLER_NAMES].sort(), [
    'always_off',
    'always_on',
    'parentbased_always_off',
    'parentbased_always_on',
    'parentbased_traceidratio',
    'traceidratio',
  ]);
});

test('an unsupported OTEL_TRACES_SAMPLER falls back to the default and says so', async () => {
  const got = await decisions({ OTEL_TRACES_SAMPLER: 'jaeger_remote' }, 0);
  assert.deepEqual(got, { root: false, sampledParent: true, unsampledParent: false, name: 'parentbased_traceidratio', ignored: 'jaeger_remote' });
  const choice = samplerFromEnv({ sampleRatio: 0.25 }, { OTEL_TRACES_SAMPLER: 'xray', OTEL_TRACES_SAMPLER_ARG: '0.5' });
  assert.equal(choice.ratio, 0.5);
  assert.equal(choice.ignored, 'xray');
  assert.equal(samplerFromEnv({ sampleRatio: 0.25 }, {}).ratio, 0.25);
  assert.equal(samplerFromEnv({ sampleRatio: 0.25 }, { OTEL_TRACES_SAMPLER: 'always_on' }).ratio, undefined);
});
