import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { startLlmServer, type LlmServer } from '../../src/taggers/llm/reference-server.js';
import { validateConfig } from '../../src/config/load.js';
import { TaggerError } from '../../src/errors.js';
import { NoteProcessor } from '../../src/pipeline/processor.js';
import { createRouter } from '../../src/route/index.js';
import { EncoderTagger } from '../../src/taggers/encoder.js';
import { LlmTokenClassifier, OpenAiChatTagger, createLlmTagger, type LlmTagger } from '../../src/taggers/llm/index.js';
import {
  formatAnswer,
  mismatches,
  parseAnswer,
  spansFromTags,
  tagsFromSpans,
  tokensFromMessages,
  type AnswerLine,
  type ChatMessage,
  type RealignStats,
} from '../../src/taggers/llm/realign.js';
import { toEntitySpans } from '../../src/taggers/types.js';
import { prepareText } from '../../src/text/index.js';
import type { EntitySpan, Sentence } from '../../src/types.js';
import { fixtureNotes } from '../helpers/pipeline.js';

const LLM_MODEL = new URL('../../models/bc5cdr-decoder-classifier', import.meta.url).pathname;
const ENCODER_MODEL = new URL('../../models/bc5cdr-encoder', import.meta.url).pathname;
const ENCODER_CONFIG = validateConfig({}).encoder;

let server: LlmServer;
let onnx: LlmTokenClassifier;
let encoder: EncoderTagger;
const opened: Array<{ close(): Promise<void> }> = [];

/** An LLM tagger from the llm config section as the product builds it. */
async function llmTagger(llm: Record<string, unknown>): Promise<LlmTagger> {
  const config = validateConfig({ llm: { modelDir: LLM_MODEL, ...llm } });
  const tagger = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder });
  opened.push(tagger);
  return tagger;
}

/** A small real HTTP server whose behaviour a test can change; it counts the requests it received. */
interface TestServer {
  url: string;
  requests: number;
  handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>;
  close(): Promise<void>;
}

async function testServer(handler: TestServer['handler']): Promise<TestServer> {
  const state = { requests: 0, handler } as TestServer;
  const srv: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.requests++;
      void Promise.resolve(state.handler(req, res, Buffer.concat(chunks))).catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  state.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  opened.push(state);
  return state;
}

/** Forwards a request to the real serve-llm. */
async function proxy(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
  const answer = await fetch(server.url + (req.url ?? '/'), {
    method: req.method,
    headers: { 'content-type': 'application/json' },
    body: req.method === 'GET' ? undefined : body.toString('utf8'),
  });
  const text = await answer.text();
  res.writeHead(answer.status, { 'content-type': 'application/json' });
  res.end(text);
}

const fail500 = (_req: IncomingMessage, res: ServerResponse): void => {
  res.writeHead(500, { 'content-type': 'application/json' });
  res.end('{"error":{"message":"boom","code":500}}');
};

before(async () => {
  server = await startLlmServer({ modelDir: LLM_MODEL, port: 0 });
  const inProcess = await llmTagger({ adapter: 'onnx' });
  assert.ok(inProcess instanceof LlmTokenClassifier);
  onnx = inProcess;
  encoder = await EncoderTagger.load(ENCODER_MODEL);
});

after(async () => {
  for (const o of opened.reverse()) await o.close().catch(() => undefined);
  await encoder?.close();
  await server?.close();
});

const NOTE = fixtureNotes()[0].text;
const shape = (spans: EntitySpan[]) => spans.map((s) => [s.start, s.end, s.label, s.route]);

async function tagNote(tagger: LlmTagger | EncoderTagger, text: string): Promise<{ sentences: Sentence[]; spans: EntitySpan[] }> {
  const { sentences } = prepareText(text);
  return { sentences, spans: toEntitySpans(sentences, await tagger.tagSentences(sentences), tagger.route) };
}

describe('serve-llm with the reference decoder', () => {
  test('health and model listing', async () => {
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: Array<{ id: string }> };
    assert.equal(models.data[0].id, onnx.model.id);
    assert.equal((await fetch(`${server.url}/nowhere`)).status, 404);
    const bad = await fetch(`${server.url}/pooling`, { method: 'POST', body: '{"input": "x", "task": "embed"}' });
    assert.equal(bad.status, 400);
  });

  test('the in-process decoder tags a fixture note with offsets on word boundaries', async (t) => {
    const { sentences, spans } = await tagNote(onnx, NOTE);
    assert.ok(sentences.length > 5);
    // A bundle that reports devel F1 0 (the "-smoke" interface preview) cannot be asked to find entities; any trained one must.
    const trained = ((JSON.parse(readFileSync(join(LLM_MODEL, 'config.json'), 'utf8')) as { bioner?: { devel_f1?: number } }).bioner?.devel_f1 ?? 1) > 0;
    if (trained) assert.ok(spans.length > 0, 'the reference decoder finds entities in a clinical note');
    else t.diagnostic(`bundle reports devel F1 0 (smoke preview): ${spans.length} spans, entity count not asserted`);
    const starts = new Set(sentences.flatMap((s) => s.tokens.map((t) => t.start)));
    const ends = new Set(sentences.flatMap((s) => s.tokens.map((t) => t.end)));
    for (const s of spans) {
      assert.equal(s.route, 'llm');
      assert.ok(starts.has(s.start) && ends.has(s.end), 'spans cover whole word tokens');
      assert.ok(['Chemical', 'Disease'].includes(s.label));
      const piece = NOTE.slice(s.start, s.end);
      assert.equal(piece, piece.trim());
    }
  });

  test('/pooling answers the same logits as the model in-process', async () => {
    const ids = onnx.encodeText('Cisplatin induced acute renal failure.');
    const res = await fetch(`${server.url}/pooling`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: server.model, input: ids, task: 'token_classify' }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { data: Array<{ index: number; data: number[][] }>; usage: { prompt_tokens: number } };
    assert.equal(body.data[0].data.length, ids.length);
    assert.equal(body.usage.prompt_tokens, ids.length);
    const [local] = await onnx.logits([ids]);
    const L = onnx.labels.length;
    for (const [p, row] of body.data[0].data.entries()) for (const [k, v] of row.entries()) assert.ok(Math.abs(v - local[p * L + k]) < 1e-4, `logit ${p},${k}`);
  });
});

describe('remote adapters against serve-llm', () => {
  test('vllm-pooling: the same spans as the in-process adapter', async () => {
    const pooling = await llmTagger({ adapter: 'vllm-pooling', baseUrl: server.url, model: server.model });
    const before = server.stats.byPath['/pooling'] ?? 0;
    const remote = await tagNote(pooling, NOTE);
    const local = await tagNote(onnx, NOTE);
    assert.ok((server.stats.byPath['/pooling'] ?? 0) - before >= remote.sentences.length, 'one request per window');
    assert.deepEqual(shape(remote.spans), shape(local.spans));
    for (const [i, s] of remote.spans.entries()) assert.ok(Math.abs(s.score - local.spans[i].score) < 1e-4);
  });

  for (const [structuredOutputs, logprobs] of [
    [true, true],
    [false, true],
    [true, false],
  ] as const) {
    test(`openai (${structuredOutputs ? 'structured JSON' : 'token lines'}, ${logprobs ? 'logprobs' : 'no logprobs'}): the in-process tags realigned, scores ${logprobs ? 'the in-process ones' : '1.0'}`, async () => {
      const chat = (await llmTagger({ adapter: 'openai', baseUrl: server.url, model: server.model, structuredOutputs, logprobs })) as LlmTagger & {
        stats: { tokens: number; matched: number; changed: number; dropped: number };
      };
      const remote = await tagNote(chat, NOTE);
      const { sentences } = prepareText(NOTE);
      const local = await onnx.tagSentences(sentences);
      // What the server answers is the in-process tags as BIO lines; the adapter realigns and repairs them.
      const labels = onnx.labels;
      const realigned = local.map((spans, i) =>
        spansFromTags(
          tagsFromSpans(spans, sentences[i].tokens.length, labels).map((t) => labels.indexOf(t)),
          labels,
        ),
      );
      const expected = toEntitySpans(sentences, realigned, 'llm');
      assert.deepEqual(shape(expected), shape(toEntitySpans(sentences, local, 'llm')), 'valid BIO survives the round trip unchanged');
      assert.deepEqual(shape(remote.spans), shape(expected));
      // With logprobs the server reports the model's tag probabilities, so a span scores as in-process (to float32 noise: the server batches differently); without, 1.0.
      const inProcess = toEntitySpans(sentences, local, 'llm');
      for (const [i, s] of remote.spans.entries()) {
        if (logprobs) assert.ok(Math.abs(s.score - inProcess[i].score) < 1e-5, `span ${i}: ${s.score} vs ${inProcess[i].score}`);
        else assert.equal(s.score, 1);
      }
      const tokens = sentences.reduce((n, s) => n + s.tokens.length, 0);
      assert.equal(chat.stats.tokens, tokens);
      assert.equal(chat.stats.matched, tokens);
      assert.equal(chat.stats.changed + chat.stats.dropped, 0);
    });
  }

  test('with a model that does find entities (the encoder bundle served as a stand-in), remote spans are non-empty and identical', async () => {
    const standIn = await startLlmServer({ modelDir: ENCODER_MODEL, port: 0 });
    opened.push(standIn);
    const local = await tagNote(encoder, NOTE);
    assert.ok(local.spans.length > 0);
    const config = validateConfig({ llm: { modelDir: ENCODER_MODEL, baseUrl: standIn.url } }).llm;
    for (const adapter of ['vllm-pooling', 'openai'] as const) {
      const tagger = await createLlmTagger({ ...config, adapter }, { modelDir: ENCODER_MODEL, encoder: ENCODER_CONFIG });
      opened.push(tagger);
      const remote = await tagNote(tagger, NOTE);
      assert.deepEqual(
        remote.spans.map((s) => [s.start, s.end, s.label]),
        local.spans.map((s) => [s.start, s.end, s.label]),
        adapter,
      );
      for (const s of remote.spans) assert.equal(NOTE.slice(s.start, s.end), NOTE.slice(s.start, s.end).trim());
    }
  });

  /**
   * Realignment over real HTTP: a proxy forwards each chat/completions request
   * to serve-llm with the trained bc5cdr decoder, then edits one answer line per
   * sentence (an entity token where there is one, so the edit removes entity
   * tags and the assertions are not vacuous) before the adapter reads it.
   */
  type Edit = 'drop' | 'add' | 'change';
  for (const [edit, structuredOutputs] of [
    ['drop', false],
    ['add', true],
    ['change', false],
    ['change', true],
  ] as Array<[Edit, boolean]>) {
    test(`openai realignment over HTTP (${structuredOutputs ? 'structured JSON' : 'token lines'}): the answer ${edit === 'add' ? 'adds a line' : edit === 'drop' ? 'drops a token line' : "changes a token's text"}`, async () => {
      // Per sentence (keyed by its token lines): the tags serve-llm answered and the input token edited.
      const edited = new Map<string, { index: number; tags: string[] }>();
      // Counted per request: a note may repeat a sentence (a heading), which the map holds once.
      let edits = 0;
      const rewriter = await testServer(async (req, res, body) => {
        const upstream = await fetch(server.url + (req.url ?? '/'), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: body.toString('utf8'),
        });
        const answer = (await upstream.json()) as { choices: Array<{ message: { content: string } }> };
        const tokens = tokensFromMessages((JSON.parse(body.toString('utf8')) as { messages: ChatMessage[] }).messages) ?? [];
        const parsed = parseAnswer(answer.choices[0].message.content);
        assert.deepEqual(
          parsed.lines.map((l) => l.token),
          tokens,
          'serve-llm answers every token as given',
        );
        const unique = (i: number): boolean => tokens.indexOf(tokens[i]) === tokens.lastIndexOf(tokens[i]);
        // A token that occurs once, so the realignment cannot pair its edit with a twin; a one-token sentence is left alone (an empty answer is a bad response, not a mismatch).
        let index = parsed.lines.findIndex((l, i) => l.tag !== 'O' && unique(i));
        if (index < 0) index = tokens.findIndex((_, i) => unique(i));
        let lines: AnswerLine[] = parsed.lines;
        if (tokens.length >= 2 && index >= 0) {
          edited.set(tokens.join('\n'), { index, tags: parsed.lines.map((l) => l.tag) });
          edits++;
          if (edit === 'drop') lines = lines.filter((_, i) => i !== index);
          else if (edit === 'change') lines = lines.map((l, i) => (i === index ? { token: `${l.token}_x`, tag: l.tag } : l));
          else lines = [...lines.slice(0, index), { token: 'inserted_x', tag: 'B-Chemical' }, ...lines.slice(index)];
        }
        answer.choices[0].message.content = formatAnswer(lines, parsed.format === 'json');
        res.writeHead(upstream.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      });
      const perSentence: RealignStats[] = [];
      const config = validateConfig({ llm: { modelDir: LLM_MODEL, adapter: 'openai', baseUrl: rewriter.url, model: server.model, structuredOutputs } });
      const chat = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder, onRealign: (s) => perSentence.push(s) });
      opened.push(chat);
      assert.ok(chat instanceof OpenAiChatTagger);

      const remote = await tagNote(chat, NOTE);
      const { sentences } = prepareText(NOTE);
      const localPer = await onnx.tagSentences(sentences);
      const local = { spans: toEntitySpans(sentences, localPer, 'llm') };
      assert.ok(local.spans.length > 0, 'the trained decoder finds entities in the note');

      // Character ranges of the edited input tokens.
      const hit: Array<{ start: number; end: number }> = [];
      const expectedTags = sentences.map((s, i) => {
        const e = edited.get(s.tokens.map((t) => t.text).join('\n'));
        if (e === undefined) return tagsFromSpans(localPer[i], s.tokens.length, onnx.labels);
        if (edit !== 'add') hit.push({ start: s.tokens[e.index].start, end: s.tokens[e.index].end });
        return e.tags.map((tag, t) => (edit !== 'add' && t === e.index ? 'O' : tag));
      });
      assert.ok(edits >= sentences.length - 5, `most sentences were edited (${edits}/${sentences.length})`);

      // Spans: what the answered tags give once the edited token is O, at the input tokens' offsets.
      const expected = toEntitySpans(
        sentences,
        expectedTags.map((tags) =>
          spansFromTags(
            tags.map((t) => onnx.labels.indexOf(t)),
            onnx.labels,
          ),
        ),
        'llm',
      );
      assert.deepEqual(shape(remote.spans), shape(expected));
      assert.ok(remote.spans.length > 0);
      const covers = (s: { start: number; end: number }, h: { start: number; end: number }): boolean => s.start < h.end && h.start < s.end;
      // Independently of the realignment code: every in-process span away from an edit comes back at the same offsets, none covers an edited token.
      const away = local.spans.filter((s) => !hit.some((h) => covers(s, h)));
      const got = new Set(remote.spans.map((s) => `${s.start}:${s.end}:${s.label}`));
      for (const s of away) assert.ok(got.has(`${s.start}:${s.end}:${s.label}`), `span ${NOTE.slice(s.start, s.end)} survives`);
      for (const s of remote.spans) {
        assert.ok(!hit.some((h) => covers(s, h)), `no span covers an edited token (${NOTE.slice(s.start, s.end)})`);
        assert.equal(NOTE.slice(s.start, s.end), NOTE.slice(s.start, s.end).trim());
      }
      if (edit === 'add') assert.deepEqual(shape(remote.spans), shape(local.spans), 'an inserted line changes nothing');
      else assert.ok(local.spans.length - away.length > 0, 'edits hit entity tokens, so entity tags were lost');

      // The mismatch count: one per edited sentence for a dropped or changed token; an inserted line is "extra", not a mismatch.
      const tokens = sentences.reduce((n, s) => n + s.tokens.length, 0);
      const stats = chat.stats;
      assert.equal(stats.tokens, tokens);
      assert.equal(stats.dropped, edit === 'drop' ? edits : 0);
      assert.equal(stats.changed, edit === 'change' ? edits : 0);
      assert.equal(stats.extra, edit === 'add' ? edits : 0);
      assert.equal(mismatches(stats), edit === 'add' ? 0 : edits);
      assert.equal(stats.matched, tokens - mismatches(stats));
      assert.equal(perSentence.length, sentences.length, 'onRealign is called once per sentence');
      assert.equal(
        perSentence.reduce((n, s) => n + mismatches(s), 0),
        mismatches(stats),
      );
    });
  }

  test('llm.maxConcurrency bounds the requests in flight', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const counting = await testServer(async (req, res, body) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 100));
      const answer = await fetch(server.url + (req.url ?? '/'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body.toString('utf8'),
      });
      const text = await answer.text();
      // Counted out before the answer is written, so the client cannot start its next request while this one still counts.
      inFlight--;
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(text);
    });
    const chat = await llmTagger({ adapter: 'openai', baseUrl: counting.url, maxConcurrency: 2, timeoutMs: 10_000 });
    const text = Array.from({ length: 8 }, (_, i) => `Patient ${i + 1} developed acute renal failure after cisplatin.`).join(' ');
    const { sentences, spans } = await tagNote(chat, text);
    assert.equal(sentences.length, 8);
    assert.equal(counting.requests, 8, 'one request per sentence');
    assert.ok(spans.length > 0);
    assert.ok(maxInFlight <= 2, `at most 2 requests in flight (saw ${maxInFlight})`);
    assert.ok(maxInFlight > 1, `requests overlap up to the limit (saw ${maxInFlight})`);
  });

  test('the API key is sent as a bearer token; a 401 is not retried and falls back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bioner-llm-key-'));
    const keyFile = join(dir, 'key');
    await writeFile(keyFile, 'sekret-123\n');
    const guarded = await startLlmServer({ modelDir: LLM_MODEL, port: 0, apiKeyFile: keyFile });
    opened.push(guarded);
    const withKey = await llmTagger({ adapter: 'openai', baseUrl: guarded.url, apiKeyFile: keyFile, retries: 3 });
    const sentence = prepareText('Cisplatin induced acute renal failure.').sentences;
    await withKey.tagSentences(sentence);
    const without = await llmTagger({ adapter: 'openai', baseUrl: guarded.url, retries: 3, retryBackoffMs: 1 });
    const before = guarded.stats.requests;
    await assert.rejects(without.tagSentences(sentence), (e: unknown) => e instanceof TaggerError && e.code === 'LLM_HTTP_ERROR' && !e.retriable);
    assert.equal(guarded.stats.requests - before, 1, 'a 4xx other than 429 is not retried');
  });
});

describe('fallback to the encoder', () => {
  const TEXT = 'The patient developed acute renal failure after cisplatin. She was treated with furosemide for hypertension.';

  async function processWith(llm: LlmTagger | undefined, budgetMs: number | null = null) {
    const processor = new NoteProcessor(createRouter({ policy: 'llm', calibration: null }), llm === undefined ? { encoder } : { encoder, llm });
    const t0 = performance.now();
    const out = await processor.process(
      { noteId: 'n1', text: TEXT, source: null, latencyBudgetMs: budgetMs, patientId: null, metadata: null },
      { topic: 't', partition: 0, offset: '0' },
    );
    return { ...out, ms: performance.now() - t0 };
  }

  async function expectFallback(llm: LlmTagger | undefined, code: string, budgetMs: number | null = null) {
    const out = await processWith(llm, budgetMs);
    const plain = await tagNote(encoder, TEXT);
    assert.deepEqual(out.routing.reasons, ['llm_policy', 'llm_fallback', `llm_fallback:${code}`]);
    assert.equal(out.routing.sentencesLlm, 0);
    assert.equal(out.routing.sentencesEncoder, 2);
    assert.ok(out.spans.length > 0, 'nothing is lost: the encoder tagged the sentences');
    assert.deepEqual(
      out.spans.map((s) => [s.start, s.end, s.label, s.route]),
      plain.spans.map((s) => [s.start, s.end, s.label, 'encoder_fallback']),
    );
    for (const s of out.spans) assert.equal(s.route, 'encoder_fallback');
    return out;
  }

  test('a healthy LLM tags the note itself (route llm, no fallback reason)', async () => {
    const chat = await llmTagger({ adapter: 'openai', baseUrl: server.url });
    const out = await processWith(chat);
    assert.deepEqual(out.routing.reasons, ['llm_policy']);
    assert.equal(out.routing.sentencesLlm, 2);
    // The trained bc5cdr decoder finds the diseases and drugs in TEXT, so the route check below covers real spans.
    assert.ok(out.spans.length > 0, 'the LLM found entities');
    for (const s of out.spans) assert.equal(s.route, 'llm');
  });

  test('timeout: a server slower than llm.timeoutMs, retried, then the encoder', async () => {
    const slow = await testServer(async (req, res, body) => {
      await new Promise((r) => setTimeout(r, 800));
      if (!res.destroyed) await proxy(req, res, body);
    });
    const llm = await llmTagger({ adapter: 'openai', baseUrl: slow.url, timeoutMs: 150, retries: 1, retryBackoffMs: 5, circuit: { failureThreshold: 100 } });
    await expectFallback(llm, 'LLM_TIMEOUT');
    // Each sentence is tried twice; once one has failed for good the note stops waiting and the other's retry may be cancelled.
    assert.ok(slow.requests >= 2 && slow.requests <= 4, `retried (${slow.requests} requests)`);
  });

  test('5xx: retried, then the encoder', async () => {
    const broken = await testServer(fail500);
    const llm = await llmTagger({ adapter: 'vllm-pooling', baseUrl: broken.url, retries: 2, retryBackoffMs: 5, circuit: { failureThreshold: 100 } });
    await expectFallback(llm, 'LLM_HTTP_ERROR');
    // Three attempts per window; the second window's last retries may be cancelled once the first has failed.
    assert.ok(broken.requests >= 3 && broken.requests <= 6, `retried (${broken.requests} requests)`);
  });

  test('connection refused: a closed port, then the encoder', async () => {
    const gone = await testServer(fail500);
    const url = gone.url;
    await gone.close();
    const llm = await llmTagger({ adapter: 'openai', baseUrl: url, retries: 1, retryBackoffMs: 5 });
    await expectFallback(llm, 'LLM_UNAVAILABLE');
  });

  test('a slow LLM past the note budget is abandoned at the budget', async () => {
    const slow = await testServer(async (req, res, body) => {
      await new Promise((r) => setTimeout(r, 2000));
      if (!res.destroyed) await proxy(req, res, body);
    });
    const llm = await llmTagger({ adapter: 'openai', baseUrl: slow.url, timeoutMs: 3000, retries: 0 });
    const out = await expectFallback(llm, 'LLM_BUDGET_EXCEEDED', 300);
    assert.ok(out.ms < 1500, `the note did not wait for the LLM (${out.ms.toFixed(0)} ms)`);
  });

  test('no LLM configured: the encoder, with the reason', async () => {
    await expectFallback(undefined, 'TAGGER_UNAVAILABLE');
  });
});

describe('circuit breaker', () => {
  test('opens after repeated failures, fails fast without requests, half-opens after the reset timeout', async () => {
    const flaky = await testServer(fail500);
    const llm = await llmTagger({ adapter: 'openai', baseUrl: flaky.url, retries: 0, circuit: { failureThreshold: 3, resetTimeoutMs: 400 } });
    const sentence = prepareText('Cisplatin induced acute renal failure.').sentences;
    const code = async (): Promise<string> => {
      try {
        await llm.tagSentences(sentence);
        return 'ok';
      } catch (e) {
        return e instanceof TaggerError ? e.code : 'other';
      }
    };
    for (let i = 0; i < 3; i++) assert.equal(await code(), 'LLM_HTTP_ERROR');
    assert.equal(flaky.requests, 3);
    assert.equal(llm.client?.circuitState, 'open');
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) assert.equal(await code(), 'CIRCUIT_OPEN');
    assert.ok(performance.now() - t0 < 100, 'open-circuit calls fail fast');
    assert.equal(flaky.requests, 3, 'no request while the circuit is open');

    // In a note, an open circuit is a fallback like any other failure.
    const processor = new NoteProcessor(createRouter({ policy: 'llm', calibration: null }), { encoder, llm });
    const out = await processor.process(
      { noteId: 'c1', text: 'Cisplatin induced acute renal failure.', source: null, latencyBudgetMs: null, patientId: null, metadata: null },
      { topic: 't', partition: 0, offset: '1' },
    );
    assert.ok(out.routing.reasons.includes('llm_fallback:CIRCUIT_OPEN'));
    assert.equal(flaky.requests, 3);

    // Half-open: after the reset timeout one trial request goes through; a failure opens the circuit again.
    await new Promise((r) => setTimeout(r, 450));
    assert.equal(await code(), 'LLM_HTTP_ERROR');
    assert.equal(flaky.requests, 4);
    assert.equal(await code(), 'CIRCUIT_OPEN');
    assert.equal(flaky.requests, 4);

    // The server recovers; after the next reset timeout the trial succeeds and closes the circuit.
    flaky.handler = proxy;
    await new Promise((r) => setTimeout(r, 450));
    assert.equal(await code(), 'ok');
    assert.equal(llm.client?.circuitState, 'closed');
    assert.equal(await code(), 'ok');
    assert.equal(flaky.requests, 6);
    assert.equal(llm.client?.stats.rejectedOpen, 7);
  });
});
