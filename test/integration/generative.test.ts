import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError, ErrorCodes, LlmError } from '../../src/errors.js';
import { EncoderTagger } from '../../src/taggers/encoder.js';
import { GenerativeLlmTagger, createLlmTagger, type GenerationRow, type LlmTagger } from '../../src/taggers/llm/index.js';
import { startLlmServer, type LlmServer } from '../../src/taggers/llm/reference-server.js';
import { toEntitySpans } from '../../src/taggers/types.js';
import { prepareText } from '../../src/text/index.js';
import type { EntitySpan } from '../../src/types.js';
import { fixtureNotes } from '../helpers/pipeline.js';

const MODEL = new URL('../../models/bc5cdr-generative', import.meta.url).pathname;
/** Torch's tags for these words, written by the export of the committed bundle (training/train_generative.py). */
const TORCH = JSON.parse(readFileSync(new URL('../fixtures/generative/bc5cdr-torch-tags.json', import.meta.url), 'utf8')) as {
  words: string[][];
  tags: string[][];
};
const NOTE = fixtureNotes()[0].text;
const shape = (spans: EntitySpan[]) => spans.map((s) => [s.start, s.end, s.label]);

let tagger: GenerativeLlmTagger;
let server: LlmServer;
const opened: Array<{ close(): Promise<void> }> = [];

async function llmTagger(llm: Record<string, unknown>): Promise<LlmTagger> {
  const config = validateConfig({ llm: { modelDir: MODEL, ...llm } });
  const t = await createLlmTagger(config.llm, { modelDir: MODEL, encoder: config.encoder });
  opened.push(t);
  return t;
}

before(async () => {
  const t = await llmTagger({ adapter: 'onnx' });
  assert.ok(t instanceof GenerativeLlmTagger, 'the onnx adapter runs a generative bundle with the generative tagger');
  tagger = t;
  server = await startLlmServer({ modelDir: MODEL, port: 0 });
  opened.push(server);
});

after(async () => {
  for (const o of opened.reverse()) await o.close();
});

const tagNames = (t: { tags: Int32Array }): string[] => Array.from(t.tags, (k) => tagger.labels[k]);
/** A batch long enough to take a second or so: the fixture's sentences, `n` rows, 31 steps. */
const longBatch = (n: number): GenerationRow[] =>
  Array.from({ length: n }, (_, i) => ({ pieces: TORCH.words[i % TORCH.words.length].map((w) => tagger.decoder.piecesOf(w)) }));
const STEPS = Math.max(...TORCH.words.map((w) => w.length));

describe('generative decoder, in-process', () => {
  test('generates the tags torch generates, batched and one sentence at a time, one forward step per tag', async () => {
    const before = { ...tagger.decoder.stats };
    const batched = await tagger.tagWords(TORCH.words);
    const stats = tagger.decoder.stats;
    assert.deepEqual(batched.map(tagNames), TORCH.tags);
    assert.equal(stats.batches - before.batches, 1, 'the ten sentences share one generation');
    assert.equal(stats.steps - before.steps, Math.max(...TORCH.words.map((w) => w.length)), 'one KV-cache step per generated tag');
    assert.ok(
      TORCH.tags.some((t) => t.some((x) => x !== 'O')),
      'the fixture has entities',
    );
    for (const [i, words] of TORCH.words.entries()) {
      const [alone] = await tagger.tagWords([words]);
      assert.deepEqual(tagNames(alone), TORCH.tags[i], `sentence ${i} alone`);
      for (let w = 0; w < words.length; w++) {
        const row = alone.probs.subarray(w * tagger.labels.length, (w + 1) * tagger.labels.length);
        assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'a distribution over the label tokens per word');
      }
    }
  });

  test('sentences of concurrent notes are generated together', async () => {
    const sentences = prepareText(NOTE).sentences.slice(0, 10);
    const alone = await tagger.tagSentences(sentences);
    const before = tagger.decoder.stats.batches;
    const [a, b, c] = await Promise.all([tagger.tagSentences(sentences), tagger.tagSentences(sentences), tagger.tagSentences(sentences)]);
    const batches = tagger.decoder.stats.batches - before;
    assert.equal(batches, 1, `${batches} generations for ${3 * sentences.length} sentences`);
    // The same spans whatever the batch; scores to float32 noise (padding changes the summation order).
    const spanShape = (x: typeof alone) => x.map((spans) => spans.map((s) => [s.first, s.last, s.label]));
    for (const x of [a, b, c]) {
      assert.deepEqual(spanShape(x), spanShape(alone));
      for (const [i, spans] of x.entries()) {
        for (const [j, s] of spans.entries()) assert.ok(Math.abs(s.score - alone[i][j].score) < 1e-4);
      }
    }
  });

  test('a long sentence is generated in overlapping windows; every word gets one tag and spans stay inside it', async () => {
    const long = Array.from({ length: 12 }, () => TORCH.words[5]).flat();
    const windowed = new GenerativeLlmTagger(tagger.decoder, { maxWindowPieces: 40, windowOverlapWords: 4 });
    const before = tagger.decoder.stats.rows;
    const [out] = await windowed.tagWords([long]);
    assert.ok(tagger.decoder.stats.rows - before > 5, 'several windows');
    assert.equal(out.tags.length, long.length);
    for (const s of out.spans) assert.ok(s.first >= 0 && s.last < long.length && s.first <= s.last);
    assert.ok(out.spans.length >= 12, 'the repeated entities are found in every window');
  });

  test('tags are chosen among the allowed labels only', async () => {
    const words = TORCH.words[5];
    const [none] = await tagger.tagWords([words], undefined, ['O']);
    assert.deepEqual(new Set(tagNames(none)), new Set(['O']));
    assert.equal(none.spans.length, 0);
    const [chem] = await tagger.tagWords([words], undefined, ['O', 'B-Chemical', 'I-Chemical']);
    assert.ok(tagNames(chem).every((t) => !t.endsWith('Disease')));
    assert.ok(chem.spans.some((s) => s.label === 'Chemical'));
  });

  test('a cancelled call rejects with its reason, and its queued rows are dropped unrun', async () => {
    const slow = new GenerativeLlmTagger(tagger.decoder, { batchSize: 1, batchWaitMs: 0 });
    const ac = new AbortController();
    const reason = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'budget spent');
    const blocker = slow.tagWords([TORCH.words[5]]);
    const cancelled = slow.tagWords(TORCH.words, ac.signal);
    ac.abort(reason);
    await assert.rejects(cancelled, (err: unknown) => err === reason);
    await blocker;
    assert.ok(slow.stats.rowsDropped >= TORCH.words.length - 1, `${slow.stats.rowsDropped} rows dropped`);
  });

  test('generation runs off the main thread: a timer keeps firing on time during a long generate', async () => {
    const decoder = tagger.decoder;
    const before = { ...decoder.stats };
    const gaps: number[] = [];
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      gaps.push(now - last);
      last = now;
    }, 2);
    try {
      await decoder.generate(longBatch(16));
    } finally {
      clearInterval(timer);
    }
    const steps = decoder.stats.steps - before.steps;
    const stepMs = (decoder.stats.runMs - before.runMs) / steps;
    gaps.sort((a, b) => a - b);
    const p90 = gaps[Math.floor(gaps.length * 0.9)];
    // On the main thread every step blocked the loop: about one tick per step, each late by a whole step.
    assert.equal(steps, STEPS);
    assert.ok(gaps.length >= 3 * steps, `${gaps.length} ticks of a 2 ms timer during ${steps} steps of ${stepMs.toFixed(1)} ms`);
    assert.ok(p90 < stepMs / 2, `90th percentile gap between ticks ${p90.toFixed(1)} ms, a step takes ${stepMs.toFixed(1)} ms`);
  });

  test('the encoder runs between the steps of a long generation, on the same inference thread', async () => {
    const encoder = await EncoderTagger.load(new URL('../../models/bc5cdr-encoder', import.meta.url).pathname);
    try {
      const sentences = prepareText(NOTE).sentences.slice(0, 8);
      await encoder.tagSentences(sentences);
      let generated = false;
      const generation = tagger.decoder.generate(longBatch(16)).then(() => {
        generated = true;
      });
      await new Promise((r) => setTimeout(r, 20));
      await encoder.tagSentences(sentences);
      assert.equal(generated, false, 'the encoder batch did not wait for the whole generation');
      await generation;
    } finally {
      await encoder.close();
    }
  });

  test('an aborted signal ends a generation between steps; the steps run keep their tags', async () => {
    const decoder = tagger.decoder;
    const rows = longBatch(8);
    const full = await decoder.generate(rows);
    const L = tagger.labels.length;
    const before = decoder.stats.steps;
    const part = await decoder.generate(rows, AbortSignal.timeout(100));
    const steps = decoder.stats.steps - before;
    assert.ok(steps >= 1 && steps < STEPS, `${steps} of ${STEPS} steps run`);
    for (const [b, r] of part.entries()) {
      for (let w = 0; w < r.tags.length; w++) {
        const probs = r.probs.subarray(w * L, (w + 1) * L);
        if (w >= steps) {
          assert.ok(
            probs.every((x) => x === 0),
            `row ${b} word ${w} not reached`,
          );
          continue;
        }
        assert.equal(r.tags[w], full[b].tags[w], `row ${b} word ${w}`);
        assert.ok(Math.abs(probs[r.tags[w]] - full[b].probs[w * L + full[b].tags[w]]) < 1e-5);
      }
    }
  });

  test('a running batch whose every caller left stops between steps', async () => {
    const ac = new AbortController();
    const reason = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'budget spent');
    const before = tagger.decoder.stats.steps;
    const words = Array.from({ length: 16 }, (_, i) => TORCH.words[i % TORCH.words.length]);
    const call = tagger.tagWords(words, ac.signal);
    setTimeout(() => ac.abort(reason), 100);
    await assert.rejects(call, (err: unknown) => err === reason);
    // Wait for the batch itself to end (the call rejects as soon as the signal aborts, or when the batch ends).
    await tagger.tagWords([TORCH.words[4]]);
    const steps = tagger.decoder.stats.steps - before - 1;
    assert.ok(steps >= 1 && steps < STEPS, `${steps} of ${STEPS} steps run`);
  });

  test('the vllm-pooling adapter refuses a generative bundle with a message naming the field', async () => {
    await assert.rejects(
      llmTagger({ adapter: 'vllm-pooling', baseUrl: 'http://127.0.0.1:9' }),
      (err: unknown) => err instanceof ConfigError && /llm\.modelDir/.test(err.message),
    );
  });
});

describe('serve-llm over the generative decoder', () => {
  for (const [structuredOutputs, logprobs] of [
    ['regex', true],
    ['json', false],
    ['none', true],
  ] as const) {
    test(`openai adapter (${structuredOutputs}, ${logprobs ? 'logprobs' : 'no logprobs'}): the spans the in-process generation finds`, async () => {
      const chat = await llmTagger({ adapter: 'openai', baseUrl: server.url, model: server.model, structuredOutputs, logprobs });
      const sentences = prepareText(NOTE).sentences.slice(0, 12);
      const remote = toEntitySpans(sentences, await chat.tagSentences(sentences), 'llm');
      const local = toEntitySpans(sentences, await tagger.tagSentences(sentences), 'llm');
      assert.ok(local.length > 0, 'the note has entities');
      assert.deepEqual(shape(remote), shape(local));
      for (const [i, s] of remote.entries()) {
        if (logprobs) assert.ok(Math.abs(s.score - local[i].score) < 1e-4, `span ${i}: ${s.score} vs ${local[i].score}`);
        else assert.equal(s.score, 1);
      }
    });
  }

  test('/pooling is refused for a generative model; /v1/models lists it', async () => {
    const res = await fetch(`${server.url}/pooling`, {
      method: 'POST',
      body: JSON.stringify({ input: 'aspirin' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /generative decoder/);
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: Array<{ id: string; max_model_len: number }> };
    assert.equal(models.data[0].id, 'bc5cdr-generative');
    assert.ok(models.data[0].max_model_len >= 1024);
  });
});
