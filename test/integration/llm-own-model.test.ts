/**
 * Bringing your own model, over real HTTP against serve-llm (the reference
 * decoders in vLLM's shapes) through a recording proxy that keeps every
 * request and answer: the prompt file, the completions endpoint, regex
 * structured outputs, the whitespace word split, span scores from the tag
 * tokens' logprobs, several models behind one server picked per input topic,
 * and the LLM cap under notes arriving faster than it allows.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createProcessor, llmCapFor, loadRouter, loadTopicRoutes } from '../../src/pipeline/compose.js';
import { EncoderTagger } from '../../src/taggers/encoder.js';
import { createLlmTagger, type OpenAiChatTagger, type LlmTagger } from '../../src/taggers/llm/index.js';
import { answerRegex } from '../../src/taggers/llm/prompt.js';
import { buildMessages, tokensFromMessages, tokensFromText, type ChatMessage } from '../../src/taggers/llm/realign.js';
import { startLlmServer, type LlmServer } from '../../src/taggers/llm/reference-server.js';
import { createRouterMetrics, METRIC_SERIES } from '../../src/telemetry/metrics.js';
import { prepareText } from '../../src/text/index.js';
import { toEntitySpans } from '../../src/taggers/types.js';
import type { EntitySpan, Sentence } from '../../src/types.js';
import { fixtureNotes } from '../helpers/pipeline.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LLM_MODEL = join(ROOT, 'models/bc5cdr-decoder-classifier');
const LORA_MODEL = join(ROOT, 'models/ncbi-disease-decoder-classifier');

interface Exchange {
  path: string;
  body: Record<string, unknown>;
  answer: Record<string, unknown>;
}

let server: LlmServer;
let proxy: { url: string; exchanges: Exchange[]; close(): Promise<void> };
let encoder: EncoderTagger;
let onnx: LlmTagger;
let dir = '';
const opened: Array<{ close(): Promise<void> }> = [];

/** Forwards to serve-llm and keeps each request body and answer. */
async function recordingProxy(target: string): Promise<typeof proxy> {
  const exchanges: Exchange[] = [];
  const srv: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      void (async () => {
        const upstream = await fetch(target + (req.url ?? '/'), {
          method: req.method,
          headers: { 'content-type': 'application/json' },
          body: req.method === 'GET' ? undefined : text,
        });
        const answerText = await upstream.text();
        if (req.method === 'POST')
          exchanges.push({
            path: req.url ?? '/',
            body: JSON.parse(text) as Record<string, unknown>,
            answer: JSON.parse(answerText) as Record<string, unknown>,
          });
        res.writeHead(upstream.status, { 'content-type': 'application/json' });
        res.end(answerText);
      })().catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    exchanges,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

async function tagger(llm: Record<string, unknown>): Promise<LlmTagger> {
  const config = validateConfig({ llm: { modelDir: LLM_MODEL, adapter: 'openai', baseUrl: proxy.url, ...llm } });
  const t = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder });
  opened.push(t);
  return t;
}

before(async () => {
  server = await startLlmServer({ modelDir: LLM_MODEL, port: 0, loraModules: { 'ncbi-lora': LORA_MODEL } });
  proxy = await recordingProxy(server.url);
  encoder = await EncoderTagger.load(join(ROOT, 'models/bc5cdr-encoder'));
  const config = validateConfig({ llm: { modelDir: LLM_MODEL } });
  onnx = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder });
  dir = await mkdtemp(join(tmpdir(), 'bioner-own-model-'));
});

after(async () => {
  for (const o of opened.reverse()) await o.close().catch(() => undefined);
  await onnx?.close();
  await encoder?.close();
  await proxy?.close();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

// A few sentences of a committed mtsamples note, and one with words the whitespace split joins.
const NOTE = fixtureNotes()[0]
  .text.split(/(?<=\.)\s+/)
  .slice(0, 8)
  .join(' ');
const PUNCTUATED = 'Serum (IL-2) rose after 5-fluorouracil, and cisplatin-induced nephrotoxicity followed.';
const shape = (spans: EntitySpan[]) => spans.map((s) => [s.start, s.end, s.label]);

async function tagText(t: LlmTagger, text: string): Promise<{ sentences: Sentence[]; spans: EntitySpan[] }> {
  const { sentences } = prepareText(text);
  return { sentences, spans: toEntitySpans(sentences, await t.tagSentences(sentences), 'llm') };
}

/** Exchanges recorded while `fn` ran. */
async function recorded<T>(fn: () => Promise<T>): Promise<{ value: T; exchanges: Exchange[] }> {
  const from = proxy.exchanges.length;
  const value = await fn();
  return { value, exchanges: proxy.exchanges.slice(from) };
}

/** The words an exchange asked about: its `<tokens>` block (chat or completions). */
function wordsOf(e: Exchange): string[] | undefined {
  if (Array.isArray(e.body.messages)) return tokensFromMessages(e.body.messages as ChatMessage[]);
  return typeof e.body.prompt === 'string' ? tokensFromText(e.body.prompt) : undefined;
}

describe("the model's own prompt and format", () => {
  test("the default prompt is today's prompt; a prompt file changes what is sent", async () => {
    const plain = await tagger({});
    const { exchanges } = await recorded(() => tagText(plain, NOTE));
    const labels = (plain as OpenAiChatTagger).labels;
    assert.ok(exchanges.length >= 5);
    for (const e of exchanges) {
      assert.equal(e.path, '/v1/chat/completions');
      const words = wordsOf(e) ?? [];
      assert.deepEqual(e.body.messages, buildMessages(words, labels), 'byte for byte the built-in prompt');
    }
    const file = join(dir, 'prompt.yaml');
    await writeFile(
      file,
      [
        'system: "You tag {{labels}} in clinical text, one line per word."',
        'user: |-',
        '  Sentence: {{text}}',
        '  Words ({{count}}):',
        '  <tokens>',
        '  {{tokens}}',
        '  </tokens>',
        'completion: "### Task\\n{{user}}\\n### Tags\\n"',
        '',
      ].join('\n'),
    );
    const custom = await tagger({ promptFile: file });
    const withFile = await recorded(() => tagText(custom, NOTE));
    for (const e of withFile.exchanges) {
      const [system, user] = e.body.messages as ChatMessage[];
      assert.equal(system.content, `You tag ${labels.join(', ')} in clinical text, one line per word.`);
      const words = wordsOf(e) ?? [];
      assert.equal(user.content, `Sentence: ${words.join(' ')}\nWords (${words.length}):\n<tokens>\n${words.join('\n')}\n</tokens>`);
    }
    assert.deepEqual(shape(withFile.value.spans), shape((await tagText(onnx, NOTE)).spans), 'the server still tags the same words');
    const completions = await tagger({ promptFile: file, endpoint: 'completions' });
    const viaCompletions = await recorded(() => tagText(completions, NOTE));
    for (const e of viaCompletions.exchanges) {
      assert.equal(e.path, '/v1/completions');
      const words = wordsOf(e) ?? [];
      assert.equal(e.body.prompt, `### Task\nSentence: ${words.join(' ')}\nWords (${words.length}):\n<tokens>\n${words.join('\n')}\n</tokens>\n### Tags\n`);
      assert.equal(e.body.messages, undefined);
      assert.equal(e.body.logprobs, 1);
    }
  });

  for (const endpoint of ['chat', 'completions'] as const) {
    for (const structuredOutputs of ['regex', 'json', 'none'] as const) {
      test(`${endpoint} with structured outputs ${structuredOutputs}: the answer is parsed and realigned onto the pipeline's offsets`, async () => {
        const t = await tagger({ endpoint, structuredOutputs });
        const { value, exchanges } = await recorded(() => tagText(t, NOTE));
        const local = await tagText(onnx, NOTE);
        assert.ok(local.spans.length > 0, 'the reference decoder finds entities in the note');
        assert.deepEqual(shape(value.spans), shape(local.spans));
        const labels = (t as OpenAiChatTagger).labels;
        for (const e of exchanges) {
          assert.equal(e.path, endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions');
          const words = wordsOf(e) ?? [];
          const so = e.body.structured_outputs as Record<string, unknown> | undefined;
          const choice = (e.answer.choices as Array<{ message?: { content: string }; text?: string }>)[0];
          const content = endpoint === 'chat' ? choice.message?.content : choice.text;
          if (structuredOutputs === 'regex') {
            assert.deepEqual(Object.keys(so ?? {}), ['regex']);
            assert.equal(so?.regex, answerRegex(words, labels));
            assert.match(content ?? '', new RegExp(`^(?:${String(so?.regex)})$`), 'the answer is held to the pattern');
          } else if (structuredOutputs === 'json') assert.deepEqual(Object.keys(so ?? {}), ['json']);
          else assert.equal(so, undefined);
        }
        const stats = (t as OpenAiChatTagger).stats;
        assert.equal(stats.changed + stats.dropped + stats.invalidTags + stats.malformed, 0);
        assert.equal(
          stats.matched,
          value.sentences.reduce((n, s) => n + s.tokens.length, 0),
        );
      });
    }
  }

  test('regex mode needs no <tokens> block: the pattern itself pins the words', async () => {
    const file = join(dir, 'bare.yaml');
    await writeFile(file, 'system: ""\nuser: "Tag: {{text}}"\n');
    const t = await tagger({ promptFile: file, structuredOutputs: 'regex' });
    const { value, exchanges } = await recorded(() => tagText(t, NOTE));
    for (const e of exchanges) assert.equal(wordsOf(e), undefined, 'no <tokens> block was sent');
    assert.deepEqual(shape(value.spans), shape((await tagText(onnx, NOTE)).spans));
  });

  test('wordSplit whitespace: whole words go to the model, tags come back on the pipeline tokens, offsets exact', async () => {
    const t = await tagger({ wordSplit: 'whitespace', structuredOutputs: 'regex' });
    const { value, exchanges } = await recorded(() => tagText(t, PUNCTUATED));
    assert.deepEqual(wordsOf(exchanges[0]), ['Serum', '(IL-2)', 'rose', 'after', '5-fluorouracil,', 'and', 'cisplatin-induced', 'nephrotoxicity', 'followed.']);
    const starts = new Set(value.sentences.flatMap((s) => s.tokens.map((tok) => tok.start)));
    const ends = new Set(value.sentences.flatMap((s) => s.tokens.map((tok) => tok.end)));
    for (const s of value.spans) {
      assert.ok(starts.has(s.start) && ends.has(s.end), 'spans on token boundaries');
      assert.ok(!/^\p{P}|\p{P}$/u.test(PUNCTUATED.slice(s.start, s.end)), `no edge punctuation in "${PUNCTUATED.slice(s.start, s.end)}"`);
    }
    assert.ok(value.spans.length > 0, `entities found in: ${PUNCTUATED}`);
    // Where no two tokens touch, the whitespace words are the pipeline tokens: the same spans as the pipeline split.
    const spaced = NOTE.replace(/(\p{P})/gu, ' $1 ');
    assert.ok(prepareText(spaced).sentences.every((s) => s.tokens.every((tok, i) => i === 0 || s.tokens[i - 1].end < tok.start)));
    const local = await tagText(onnx, spaced);
    assert.ok(local.spans.length > 0);
    assert.deepEqual(shape((await tagText(t, spaced)).spans), shape(local.spans));
  });
});

describe('span scores from the model', () => {
  /** Per sentence (keyed by its words): each answered tag's probability, read from the answer's logprobs by hand. */
  function reportedTagProbabilities(exchanges: Exchange[], labels: readonly string[]): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const e of exchanges) {
      const choice = (e.answer.choices as Array<{ logprobs: unknown }>)[0];
      let pieces: Array<{ token: string; logprob: number }>;
      if (e.path === '/v1/chat/completions') pieces = (choice.logprobs as { content: Array<{ token: string; logprob: number }> }).content;
      else {
        const lp = choice.logprobs as { tokens: string[]; token_logprobs: number[] };
        pieces = lp.tokens.map((token, i) => ({ token, logprob: lp.token_logprobs[i] }));
      }
      // serve-llm answers each tag as one token right after a TAB (lines) or after `"tag":"` (JSON).
      const probs = pieces
        .filter((p, i) => labels.includes(p.token) && i > 0 && (pieces[i - 1].token === '\t' || pieces[i - 1].token.endsWith('"tag":"')))
        .map((p) => Math.exp(p.logprob));
      out.set((wordsOf(e) ?? []).join('\n'), probs);
    }
    return out;
  }

  for (const [endpoint, structuredOutputs] of [
    ['chat', 'json'],
    ['completions', 'none'],
  ] as const) {
    test(`${endpoint}: a span scores the mean probability of its words' tag tokens, as the server reported them`, async () => {
      const t = await tagger({ endpoint, structuredOutputs });
      const { sentences } = prepareText(NOTE);
      const { value: perSentence, exchanges } = await recorded(() => t.tagSentences(sentences));
      const reported = reportedTagProbabilities(exchanges, (t as OpenAiChatTagger).labels);
      let spans = 0;
      const scores: number[] = [];
      sentences.forEach((s, i) => {
        const probs = reported.get(s.tokens.map((tok) => tok.text).join('\n'));
        assert.ok(probs !== undefined && probs.length === s.tokens.length, 'one reported tag probability per word');
        for (const span of perSentence[i]) {
          const expected = probs.slice(span.first, span.last + 1).reduce((a, b) => a + b, 0) / (span.last - span.first + 1);
          assert.ok(Math.abs(span.score - expected) < 1e-12, `${span.score} vs ${expected}`);
          scores.push(span.score);
          spans++;
        }
      });
      assert.ok(spans > 0);
      assert.ok(
        scores.some((x) => x < 1),
        'not all 1.0',
      );
      assert.ok(scores.every((x) => x > 0 && x <= 1));
      assert.deepEqual((t as OpenAiChatTagger).scoreStats, { spans, fromLogprobs: spans, answersWithoutLogprobs: 0 });
    });
  }

  test('1.0 only when the server returns no logprobs', async () => {
    const t = await tagger({ logprobs: false });
    const { value, exchanges } = await recorded(() => tagText(t, NOTE));
    for (const e of exchanges) assert.equal(e.body.logprobs, undefined);
    assert.ok(value.spans.length > 0 && value.spans.every((s) => s.score === 1));
  });
});

describe('several models behind one server, picked per input topic', () => {
  /** A calibration file with three domains: two where the LLM pays (each its own latency line), one where it loses. */
  async function calibrationFile(): Promise<string> {
    const route = (f1: number, latency: { overhead_ms: number; ms_per_token: number }) => ({
      f1: { '1': f1, '2': f1, '3+': f1, all: f1 },
      ms_per_token: latency.ms_per_token,
      latency,
    });
    const entry = (encoderF1: number, llmF1: number, llmLatency: { overhead_ms: number; ms_per_token: number }) => ({
      support_by_length: { '1': 10, '2': 5, '3+': 5 },
      routes: { encoder: route(encoderF1, { overhead_ms: 0, ms_per_token: 0.01 }), llm: route(llmF1, llmLatency) },
    });
    const file = join(dir, 'domains.json');
    await writeFile(
      file,
      JSON.stringify({
        datasets: {
          gain: entry(0.7, 0.8, { overhead_ms: 3, ms_per_token: 0.1 }),
          'gain-lora': entry(0.6, 0.8, { overhead_ms: 7, ms_per_token: 0.2 }),
          loss: entry(0.8, 0.7, { overhead_ms: 3, ms_per_token: 0.1 }),
        },
      }),
    );
    return file;
  }

  test('routing.domains picks the calibration entry and the model name each request carries', async () => {
    const config = validateConfig({
      llm: { adapter: 'openai', baseUrl: proxy.url, modelDir: LLM_MODEL, model: server.model, timeoutMs: 10_000 },
      routing: {
        policy: 'length-aware',
        calibrationFile: await calibrationFile(),
        domain: 'loss',
        defaultBudgetMs: 15_000,
        domains: { 'notes-general': { domain: 'gain' }, 'notes-disease': { domain: 'gain-lora', llmModel: 'ncbi-lora' } },
      },
      logging: { level: 'silent' },
    });
    const llm = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder });
    opened.push(llm);
    const cap = llmCapFor(config);
    const processor = createProcessor(config, encoder, {}, llm, await loadRouter(config, undefined, cap), await loadTopicRoutes(config, cap));
    const note = { noteId: 'n', text: NOTE, source: null, metadata: {}, latencyBudgetMs: null } as unknown as Parameters<typeof processor.process>[0];
    const tokens = prepareText(NOTE).sentences.reduce((n, s) => n + s.tokens.length, 0);
    const byModelBefore = { ...server.stats.byModel };
    const results: Record<string, { llmSentences: number; models: Set<unknown>; predictedLlmMs: number; reasons: string[]; labels: Set<string> }> = {};
    for (const topic of ['notes-general', 'notes-disease', 'notes-other']) {
      const { value: out, exchanges } = await recorded(() => processor.process(note, { topic, partition: 0, offset: '0' }));
      results[topic] = {
        llmSentences: out.routing.sentencesLlm,
        models: new Set(exchanges.map((e) => e.body.model)),
        predictedLlmMs: out.routing.predictedLlmMs,
        reasons: out.routing.reasons,
        labels: new Set(out.spans.filter((s) => s.route === 'llm').map((s) => s.label)),
      };
    }
    const general = results['notes-general'];
    const disease = results['notes-disease'];
    const other = results['notes-other'];
    assert.ok(general.llmSentences > 0 && disease.llmSentences > 0, 'both paying domains send their sentences to the LLM');
    assert.deepEqual([...general.models], [server.model], 'llm.model by default');
    assert.deepEqual([...disease.models], ['ncbi-lora'], "the topic's adapter name in every request");
    assert.equal(other.llmSentences, 0);
    assert.ok(other.reasons.includes('llm_gain_not_positive'), `other topics use routing.domain: ${other.reasons.join()}`);
    assert.equal((server.stats.byModel['ncbi-lora'] ?? 0) - (byModelBefore['ncbi-lora'] ?? 0), disease.llmSentences, 'the adapter served those requests');
    assert.deepEqual([...disease.labels], ['Disease'], 'tagged by the NCBI-disease model (it has no Chemical label)');
    // Each topic planned with its own entry's LLM line (all sentences went to the LLM, so the call is the whole note).
    assert.ok(Math.abs(general.predictedLlmMs - (3 + 0.1 * tokens)) < 1e-6, String(general.predictedLlmMs));
    assert.ok(Math.abs(disease.predictedLlmMs - (7 + 0.2 * tokens)) < 1e-6, String(disease.predictedLlmMs));

    // vllm-pooling passes the topic's model too.
    const pooling = await createLlmTagger({ ...config.llm, adapter: 'vllm-pooling' }, { modelDir: LORA_MODEL, encoder: config.encoder });
    opened.push(pooling);
    const { exchanges } = await recorded(() => pooling.tagSentences(prepareText('Acute renal failure.').sentences, { model: 'ncbi-lora' }));
    assert.deepEqual(
      exchanges.map((e) => [e.path, e.body.model]),
      [['/pooling', 'ncbi-lora']],
    );

    const wrong = validateConfig({ routing: { calibrationFile: await calibrationFile(), domain: 'loss', domains: { 'notes-x': { domain: 'nowhere' } } } });
    await assert.rejects(
      loadTopicRoutes(wrong, null),
      (e: unknown) => e instanceof ConfigError && e.field === 'routing.domains.notes-x.domain' && /nowhere/.test(e.message),
    );
  });
});

describe('the LLM cap', () => {
  test('holds under notes arriving faster than it allows, shows in the reasons and the metrics', async () => {
    const windowMs = 2000;
    const maxTokensPerMinute = 1800; // 60 tokens per 2 s window
    const config = validateConfig({
      llm: { adapter: 'openai', baseUrl: proxy.url, modelDir: LLM_MODEL, timeoutMs: 10_000, structuredOutputs: 'regex' },
      routing: { policy: 'llm', defaultBudgetMs: 15_000, llmCap: { maxTokensPerMinute, maxSentenceShare: 0.5, windowMs } },
      logging: { level: 'silent' },
    });
    const llm = await createLlmTagger(config.llm, { modelDir: LLM_MODEL, encoder: config.encoder });
    opened.push(llm);
    const cap = llmCapFor(config);
    assert.ok(cap !== null);
    const metrics = createRouterMetrics({ serviceName: 'cap-test' });
    const planned = new Map<string, number>();
    const hooks = {
      ...metrics.hooks,
      routeDecided: (e: { noteId: string }) => {
        // Called right after the plan, in the same tick: the plan's time.
        planned.set(e.noteId, performance.now());
      },
    };
    const processor = createProcessor(config, encoder, hooks, llm, await loadRouter(config, undefined, cap));
    metrics.observe({ llmCap: () => cap.snapshot() });
    const texts = fixtureNotes().map((n) =>
      n.text
        .split(/(?<=\.)\s+/)
        .slice(0, 3)
        .join(' '),
    );
    // 60 notes, one every 15 ms (about 0.9 s), each wanting all of its sentences on the LLM: far more than 60 tokens per 2 s.
    const demand: number[] = [];
    const runs: Array<Promise<{ id: string; llmTokens: number; sentences: number; llmSentences: number; reasons: string[] }>> = [];
    for (let i = 0; i < 60; i++) {
      const text = texts[i % texts.length];
      const sentences = prepareText(text).sentences;
      demand.push(sentences.reduce((n, s) => n + s.tokens.length, 0));
      const note = { noteId: `cap-${i}`, text, source: null, metadata: {}, latencyBudgetMs: null } as unknown as Parameters<typeof processor.process>[0];
      runs.push(
        processor.process(note, { topic: 'in', partition: 0, offset: String(i) }).then((out) => {
          metrics.hooks.notePublished?.({
            noteId: out.noteId,
            topic: 'out',
            spans: out.spans.length,
            totalMs: out.timings.totalMs,
            routes: { encoder: out.routing.sentencesEncoder, llm: out.routing.sentencesLlm, encoder_fallback: 0 },
            routing: out.routing,
          });
          const llmTokens = out.routing.llmSentences.reduce((n, k) => n + sentences[k].tokens.length, 0);
          return { id: out.noteId, llmTokens, sentences: out.routing.sentences, llmSentences: out.routing.sentencesLlm, reasons: out.routing.reasons };
        }),
      );
      await new Promise((r) => setTimeout(r, 15));
    }
    const outcomes = await Promise.all(runs);
    const budget = (maxTokensPerMinute * windowMs) / 60_000;
    assert.ok(demand.reduce((a, b) => a + b, 0) > 5 * budget, 'the notes ask for several times what the cap allows');
    // Every window of windowMs (ending at a plan) holds at most the cap's tokens; 5 ms less covers the hook's offset from the plan.
    const timed = outcomes.map((o) => ({ ...o, at: planned.get(o.id) as number })).sort((a, b) => a.at - b.at);
    for (const o of timed) {
      const inWindow = timed.filter((p) => p.at > o.at - (windowMs - 5) && p.at <= o.at).reduce((n, p) => n + p.llmTokens, 0);
      assert.ok(inWindow <= budget, `window ending at note ${o.id}: ${inWindow} tokens > ${budget}`);
    }
    const sentences = outcomes.reduce((n, o) => n + o.sentences, 0);
    const llmSentences = outcomes.reduce((n, o) => n + o.llmSentences, 0);
    assert.ok(llmSentences > 0, 'the cap still lets LLM work through');
    assert.ok(llmSentences / sentences <= 0.5, 'and the share cap holds');
    const capped = outcomes.filter((o) => o.reasons.includes('llm_cap'));
    assert.ok(capped.length > 30, `most notes were capped (${capped.length})`);
    assert.ok(capped.every((o) => o.reasons.some((r) => r === 'llm_cap:tokens_per_minute' || r === 'llm_cap:sentence_share')));
    assert.ok(
      outcomes.every((o) => !o.reasons.includes('budget_exhausted')),
      'the budget was not the limit',
    );
    const text = await metrics.collectPrometheus();
    await metrics.shutdown();
    const count = [...text.matchAll(new RegExp(`^${METRIC_SERIES.llmCapped}\\{[^}]*limit="tokens_per_minute"[^}]*\\} (\\d+)$`, 'gm'))].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
    assert.ok(count > 0, 'capped notes counted in the metrics');
    const usage = /^bioner_llm_cap_usage\{limit="tokens_per_minute"[^}]*\} ([\d.e-]+)$/m.exec(text);
    assert.ok(usage !== null && Number(usage[1]) <= 1 + 1e-9, `cap usage reported (${usage?.[1]})`);
  });
});
