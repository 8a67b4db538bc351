import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { LlmError, RouterError, isRetriable } from '../../src/errors.js';
import { LlmHttpClient, networkErrorCode } from '../../src/taggers/llm/http.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers) await c();
});

async function serve(handler: Handler): Promise<{ url: string; count: () => number; headers: IncomingMessage['headers'][] }> {
  let n = 0;
  const headers: IncomingMessage['headers'][] = [];
  const srv = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      headers.push(req.headers);
      handler(req, res, ++n);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  closers.push(
    () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, count: () => n, headers };
}

const client = (baseUrl: string, over: Partial<ConstructorParameters<typeof LlmHttpClient>[0]> = {}) =>
  new LlmHttpClient({
    baseUrl,
    timeoutMs: 1000,
    maxConcurrency: 4,
    retries: 2,
    retryBackoffMs: 1,
    circuit: { failureThreshold: 50, resetTimeoutMs: 1000 },
    ...over,
  });

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

test('429 and 503 are retried with backoff; the answer after them is returned', async () => {
  const s = await serve((_q, res, n) => (n === 1 ? json(res, 429, {}) : n === 2 ? json(res, 503, {}) : json(res, 200, { ok: n })));
  const c = client(s.url, { apiKey: 'k-123' });
  assert.deepEqual(await c.postJson('/x', { a: 1 }), { ok: 3 });
  assert.equal(s.count(), 3);
  assert.equal(c.stats.retries, 2);
  assert.equal(s.headers[0].authorization, 'Bearer k-123');
});

test('other 4xx are not retried; errors carry status, code and no body or key', async () => {
  const s = await serve((_q, res) => json(res, 422, { error: 'patient text echoed here' }));
  const c = client(s.url, { apiKey: 'k-secret' });
  await assert.rejects(c.postJson('/v1/chat/completions', {}), (e: unknown) => {
    assert.ok(e instanceof LlmError);
    assert.equal(e.code, 'LLM_HTTP_ERROR');
    assert.equal(e.status, 422);
    assert.equal(isRetriable(e), false);
    assert.ok(!e.message.includes('patient') && !e.message.includes('k-secret'), e.message);
    return true;
  });
  assert.equal(s.count(), 1);
});

test('a non-JSON answer is LLM_BAD_RESPONSE, not retried', async () => {
  const s = await serve((_q, res) => {
    res.writeHead(200);
    res.end('<html>proxy login</html>');
  });
  await assert.rejects(client(s.url).getJson('/v1/models'), (e: unknown) => e instanceof RouterError && e.code === 'LLM_BAD_RESPONSE' && !e.retriable);
  assert.equal(s.count(), 1);
});

test('a timeout is LLM_TIMEOUT (retriable) and covers a slow body too', async () => {
  const s = await serve((_q, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"a":');
    setTimeout(() => res.end('1}'), 500);
  });
  await assert.rejects(
    client(s.url, { timeoutMs: 100, retries: 0 }).postJson('/x', {}),
    (e: unknown) => e instanceof RouterError && e.code === 'LLM_TIMEOUT' && e.retriable,
  );
});

test('refused connections are LLM_UNAVAILABLE with the errno code', async () => {
  const s = await serve((_q, res) => json(res, 200, {}));
  await closers.pop()?.();
  await assert.rejects(
    client(s.url, { retries: 1 }).postJson('/x', {}),
    (e: unknown) => e instanceof RouterError && e.code === 'LLM_UNAVAILABLE' && e.retriable && /ECONNREFUSED/.test(e.message),
  );
  assert.equal(
    networkErrorCode(new TypeError('fetch failed', { cause: new AggregateError([Object.assign(new Error('x'), { code: 'ECONNRESET' })]) })),
    'ECONNRESET',
  );
  assert.equal(networkErrorCode(new Error('plain')), undefined);
});

test('a caller abort stops the request and is not counted against the server', async () => {
  const s = await serve((_q, res) => setTimeout(() => json(res, 200, {}), 500));
  const c = client(s.url, { circuit: { failureThreshold: 1, resetTimeoutMs: 10000 } });
  const ctrl = new AbortController();
  const reason = new LlmError('LLM_BUDGET_EXCEEDED', 'budget');
  setTimeout(() => ctrl.abort(reason), 50);
  await assert.rejects(c.postJson('/x', {}, ctrl.signal), (e: unknown) => e === reason);
  assert.equal(c.circuitState, 'closed');
  assert.equal(c.stats.failures, 0);
});
