import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRouterMetrics, RUNTIME_SERIES } from '../../src/telemetry/metrics.js';
import { SERVICE_VERSION } from '../../src/telemetry/otel-env.js';

test('runtime series: RSS, V8 heap, event-loop utilisation and build info (service version and models); service.version on the resource', async () => {
  const m = createRouterMetrics({ serviceName: 'bioner-router-test', runtime: true });
  try {
    m.observe({
      build: () => ({
        serviceVersion: SERVICE_VERSION,
        encoderModel: { id: 'bc5cdr-encoder', version: '1.0.0' },
        llmModel: { id: 'bc5cdr-decoder-classifier', version: '1.0.0' },
      }),
    });
    const text = await m.collectPrometheus();
    const rss = new RegExp(`^${RUNTIME_SERIES.rss}\\{[^}]*\\} (\\d+)`, 'm').exec(text);
    assert.ok(rss !== null && Number(rss[1]) > 10 * 2 ** 20, 'RSS in bytes');
    assert.match(text, new RegExp(`^${RUNTIME_SERIES.heapUsed}\\{`, 'm'));
    assert.match(text, new RegExp(`^${RUNTIME_SERIES.eventLoopUtilization}\\{`, 'm'));
    assert.match(
      text,
      /^bioner_build_info\{[^}]*service_version="[^"]+"[^}]*encoder_model="bc5cdr-encoder"[^}]*encoder_model_version="1\.0\.0"[^}]*llm_model="bc5cdr-decoder-classifier"[^}]*\} 1$/m,
    );
    assert.match(text, new RegExp(`^target_info\\{[^}]*service_version="${SERVICE_VERSION.replace(/\./g, '\\.')}"`, 'm'));
    assert.notEqual(SERVICE_VERSION, 'unknown');
  } finally {
    await m.shutdown();
  }
  // Without `runtime` none of them is exported (the pipeline-series test pins that set exactly).
  const plain = createRouterMetrics({ serviceName: 'bioner-router-test' });
  const text = await plain.collectPrometheus();
  await plain.shutdown();
  for (const name of Object.values(RUNTIME_SERIES)) assert.doesNotMatch(text, new RegExp(`^${name}`, 'm'));
});
