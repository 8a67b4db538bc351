import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { validateConfig } from '../../src/config/load.js';
import { LlmHttpClient } from '../../src/taggers/llm/http.js';
import { setupTracing, tracer, type Tracing } from '../../src/telemetry/tracing.js';

const exporter = new InMemorySpanExporter();
let tracing: Tracing;
before(() => {
  tracing = setupTracing(validateConfig({}).telemetry, { exporter });
});
after(async () => {
  await tracing.shutdown();
});

test('each LLM request is a CLIENT span under the caller: method, server, url, status, resend count, circuit state; no body', async () => {
  let n = 0;
  const srv = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      n++;
      res.writeHead(n === 1 ? 503 : 200, { 'content-type': 'application/json' });
      res.end(n === 1 ? '{}' : '{"ok":true}');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  try {
    const client = new LlmHttpClient({
      baseUrl: `http://127.0.0.1:${port}`,
      timeoutMs: 2000,
      maxConcurrency: 2,
      retries: 1,
      retryBackoffMs: 1,
      circuit: { failureThreshold: 5, resetTimeoutMs: 1000 },
    });
    const parent = tracer().startSpan('tag llm');
    const answer = await context.with(trace.setSpan(context.active(), parent), () =>
      client.postJson('/v1/chat/completions', { messages: [{ role: 'user', content: 'PHI-MARKER text' }] }),
    );
    parent.end();
    assert.deepEqual(answer, { ok: true });
    await tracing.forceFlush();
    const spans = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
    assert.equal(spans.length, 2, 'one span per attempt');
    for (const s of spans) {
      assert.equal(s.name, 'POST /v1/chat/completions');
      assert.equal(s.parentSpanContext?.spanId, parent.spanContext().spanId, 'child of the tagger call');
      assert.equal(s.attributes['http.request.method'], 'POST');
      assert.equal(s.attributes['server.address'], '127.0.0.1');
      assert.equal(s.attributes['server.port'], port);
      assert.equal(s.attributes['url.full'], `http://127.0.0.1:${port}/v1/chat/completions`);
      assert.equal(s.attributes['bioner.llm.circuit_state'], 'closed');
      assert.ok(!JSON.stringify(s.attributes).includes('PHI-MARKER'));
    }
    const [first, second] = spans.sort((a, b) => Number(a.attributes['http.request.resend_count']) - Number(b.attributes['http.request.resend_count']));
    assert.equal(first.attributes['http.request.resend_count'], 0);
    assert.equal(first.attributes['http.response.status_code'], 503);
    assert.equal(first.status.code, SpanStatusCode.ERROR);
    assert.equal(first.attributes['error.type'], 'LLM_HTTP_ERROR');
    assert.equal(second.attributes['http.request.resend_count'], 1);
    assert.equal(second.attributes['http.response.status_code'], 200);
    assert.notEqual(second.status.code, SpanStatusCode.ERROR);
  } finally {
    await new Promise<void>((r) => srv.close(() => r()));
  }
});
