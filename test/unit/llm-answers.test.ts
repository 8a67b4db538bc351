import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { LlmError } from '../../src/errors.js';
import { LlmHttpClient } from '../../src/taggers/llm/http.js';
import { OpenAiChatTagger, readChatCompletion } from '../../src/taggers/llm/openai.js';
import { VllmPoolingBackend } from '../../src/taggers/llm/pooling.js';
import { prepareText } from '../../src/text/index.js';

// The server answers whatever the current test put here.
let answer: unknown = {};
let url = '';
let close: () => Promise<void> = async () => {};
before(async () => {
  const srv = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  close = () =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
});
after(() => close());

const LABELS = ['O', 'B-Chemical', 'I-Chemical'];
const client = (): LlmHttpClient =>
  new LlmHttpClient({
    baseUrl: url,
    timeoutMs: 1000,
    maxConcurrency: 2,
    retries: 0,
    retryBackoffMs: 1,
    circuit: { failureThreshold: 50, resetTimeoutMs: 1000 },
  });
const tagger = (): OpenAiChatTagger =>
  new OpenAiChatTagger(client(), { id: 'test-llm', version: '0', entityTypes: ['Chemical'] }, LABELS, { structuredOutputs: true });
const NOTE = prepareText('Aspirin helps.').sentences;
const chat = (content: unknown): unknown => ({ choices: [{ message: { role: 'assistant', content }, finish_reason: 'stop' }] });

/** LLM_BAD_RESPONSE, not retriable, whose message matches and quotes no note text. */
const badResponse = (pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof LlmError, String(e));
  assert.equal(e.code, 'LLM_BAD_RESPONSE');
  assert.equal(e.retriable, false);
  assert.match(e.message, pattern);
  assert.ok(!e.message.includes('Aspirin'), e.message);
  return true;
};

test('a chat answer with the structured JSON is tagged', async () => {
  answer = chat(
    JSON.stringify({
      lines: [
        { token: 'Aspirin', tag: 'B-Chemical' },
        { token: 'helps', tag: 'O' },
        { token: '.', tag: 'O' },
      ],
    }),
  );
  const [spans] = await tagger().tagSentences(NOTE);
  assert.deepEqual(
    spans.map((s) => [s.first, s.last, s.label]),
    [[0, 0, 'Chemical']],
  );
});

test('a chat completion without choices[0].message.content string is LLM_BAD_RESPONSE naming the field', async () => {
  for (const [body, field] of [
    [{}, /\(choices: /],
    [{ choices: [] }, /\(choices\.0: /],
    [{ choices: [{ text: 'Aspirin' }] }, /\(choices\.0\.message: /],
    [chat(null), /\(choices\.0\.message\.content: .*string/],
  ] as const) {
    answer = body;
    await assert.rejects(tagger().tagSentences(NOTE), badResponse(field), JSON.stringify(body));
    assert.throws(() => readChatCompletion(body), badResponse(field));
  }
});

test('chat JSON content without "lines", or with a non-string token, is LLM_BAD_RESPONSE', async () => {
  answer = chat(JSON.stringify({ tokens: [{ token: 'Aspirin', tag: 'B-Chemical' }] }));
  await assert.rejects(tagger().tagSentences(NOTE), badResponse(/without a "lines" list/));
  answer = chat(JSON.stringify({ lines: 'Aspirin B-Chemical' }));
  await assert.rejects(tagger().tagSentences(NOTE), badResponse(/without a "lines" list/));
  answer = chat(
    JSON.stringify({
      lines: [
        { token: 7, tag: 'B-Chemical' },
        { token: ['Aspirin'], tag: 'O' },
      ],
    }),
  );
  await assert.rejects(tagger().tagSentences(NOTE), badResponse(/entry 0 field "token": .*expected string/));
  // One readable entry is enough: the rest count as malformed, their tokens as dropped.
  const t = tagger();
  answer = chat(
    JSON.stringify({
      lines: [
        { token: 'Aspirin', tag: 'B-Chemical' },
        { token: 7, tag: 'O' },
      ],
    }),
  );
  const [spans] = await t.tagSentences(NOTE);
  assert.equal(spans.length, 1);
  assert.equal(t.stats.malformed, 1);
  assert.equal(t.stats.dropped, 2);
});

test('/pooling answers: counts and types are checked, the rows come back in index order', async () => {
  const backend = new VllmPoolingBackend(client(), 3, undefined);
  answer = {
    data: [
      { index: 1, data: [[0, 1, 2]] },
      {
        index: 0,
        data: [
          [3, 4, 5],
          [6, 7, 8],
        ],
      },
    ],
  };
  const out = await backend.run([[101, 7], [101]]);
  assert.deepEqual(
    out.map((r) => Array.from(r)),
    [
      [3, 4, 5, 6, 7, 8],
      [0, 1, 2],
    ],
  );
  for (const [body, message] of [
    [{}, /\(data: /],
    [{ data: [{ index: 0, data: [[0, 'x', 2]] }] }, /\(data\.0\.data\.0: must be a list of numbers\)/],
    [
      {
        data: [
          { index: 0, data: [[0, 1, 2]] },
          { index: 1, data: [[0, 1, 2]] },
        ],
      },
      /2 data entries for 1 input/,
    ],
    [{ data: [{ index: 0, data: [[0, 1, 2]] }] }, /1 rows for 2 tokens/],
    [
      {
        data: [
          {
            index: 0,
            data: [
              [0, 1],
              [0, 1],
            ],
          },
        ],
      },
      /row 0 has 2 values; the local model has 3 labels/,
    ],
  ] as const) {
    answer = body;
    await assert.rejects(backend.run([[101, 102]]), badResponse(message), JSON.stringify(body));
  }
});
