import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { applyEnvironment, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { placeChatLogprobs, placeCompletionLogprobs, rangeProbability } from '../../src/taggers/llm/logprobs.js';
import {
  answerRegex,
  DEFAULT_PROMPT,
  escapeRegex,
  loadPromptTemplates,
  parseAnswerRegex,
  renderChat,
  renderCompletion,
  wordGroups,
} from '../../src/taggers/llm/prompt.js';
import { buildMessages, formatAnswer, parseAnswer, realign, spansFromTags, spreadWordTags } from '../../src/taggers/llm/realign.js';
import { prepareText } from '../../src/text/index.js';

const LABELS = ['O', 'B-Chemical', 'I-Chemical', 'B-Disease', 'I-Disease'];

test('the default templates render exactly the prompt the adapter always sent', () => {
  for (const tokens of [['Cisplatin', 'induced', 'acute', 'renal', 'failure'], ['a'], ['{{labels}}', '{{count}}', '<', 'tokens', '>'], ['x', '$&', '$1']]) {
    assert.deepEqual(renderChat(DEFAULT_PROMPT, tokens, LABELS), buildMessages(tokens, LABELS), tokens.join(' '));
  }
  const completion = renderCompletion(DEFAULT_PROMPT, ['Cisplatin', 'induced'], LABELS);
  const [system, user] = buildMessages(['Cisplatin', 'induced'], LABELS);
  assert.equal(completion, `${system.content}\n\n${user.content}\n\nAnswer:\n`);
});

test('the built-in prompt written out as a file in docs/use-your-own-vllm.md loads as exactly the built-in prompt', async () => {
  const doc = await readFile(new URL('../../docs/use-your-own-vllm.md', import.meta.url), 'utf8');
  const block = /The built-in prompt, as a file, is exactly:\n\n```yaml\n([\s\S]*?)```/.exec(doc);
  assert.ok(block !== null, 'the doc shows the built-in prompt as a YAML file');
  const dir = await mkdtemp(join(tmpdir(), 'bioner-prompt-doc-'));
  await writeFile(join(dir, 'prompt.yaml'), block[1]);
  assert.deepEqual(await loadPromptTemplates(join(dir, 'prompt.yaml')), DEFAULT_PROMPT);
});

test('a prompt file replaces the templates it names; unknown placeholders and keys are refused at start-up', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-prompt-'));
  const file = join(dir, 'prompt.yaml');
  await writeFile(file, 'system: "Label each word: {{labels}}"\nuser: |-\n  Words ({{count}}): {{text}}\n  <tokens>\n  {{tokens}}\n  </tokens>\n');
  const t = await loadPromptTemplates(file);
  assert.equal(t.completion, DEFAULT_PROMPT.completion);
  assert.deepEqual(renderChat(t, ['IL-2', 'levels'], ['O', 'B-protein']), [
    { role: 'system', content: 'Label each word: O, B-protein' },
    { role: 'user', content: 'Words (2): IL-2 levels\n<tokens>\nIL-2\nlevels\n</tokens>' },
  ]);
  await writeFile(file, 'system: ""\nuser: "{{tokens}}"\n');
  assert.deepEqual(
    renderChat(await loadPromptTemplates(file), ['a'], LABELS),
    [{ role: 'user', content: 'a' }],
    'an empty system template sends no system message',
  );
  await writeFile(file, 'user: "{{token}}"\n');
  await assert.rejects(loadPromptTemplates(file), (e: unknown) => e instanceof ConfigError && e.field === 'llm.promptFile' && /\{\{token\}\}/.test(e.message));
  await writeFile(file, 'user: "{{system}}"\n');
  await assert.rejects(loadPromptTemplates(file), /unknown placeholder \{\{system\}\}/, '{{system}} only inside the completion template');
  await writeFile(file, 'sytem: "x"\n');
  await assert.rejects(loadPromptTemplates(file), /unknown key\(s\) sytem/);
  await assert.rejects(loadPromptTemplates(join(dir, 'missing.yaml')), /cannot read/);
});

test('the regex pins one word<TAB>TAG line per word; odd words are escaped and read back', () => {
  const words = ['IL-2', '(', 'a|b', 'x*', '\\t', 'c:\\n', '[1]', '$', 'end.'];
  const pattern = answerRegex(words, LABELS);
  const re = new RegExp(`^(?:${pattern})$`);
  const answer = formatAnswer(
    words.map((w, i) => ({ token: w, tag: i === 0 ? 'B-Chemical' : 'O' })),
    false,
  );
  assert.ok(re.test(answer), 'the answer the adapter expects matches');
  assert.ok(!re.test(answer.replace('B-Chemical', 'B-Gene')), 'a tag outside the label set does not');
  assert.ok(!re.test(answer.replace('IL-2', 'IL2')), 'a changed word does not');
  assert.ok(!re.test(`${answer}\nextra\tO`), 'an extra line does not');
  assert.deepEqual(parseAnswerRegex(pattern), { words, labels: LABELS });
  assert.equal(parseAnswerRegex('.*'), undefined);
  assert.equal(escapeRegex('a.b(c)'), 'a\\.b\\(c\\)');
});

test('whitespace words join the pipeline tokens nothing separates; their tags spread back without edge punctuation', () => {
  const [sentence] = prepareText('Serum (IL-2) rose, 5-fluorouracil.').sentences;
  assert.deepEqual(
    sentence.tokens.map((t) => t.text),
    ['Serum', '(', 'IL', '-', '2', ')', 'rose', ',', '5', '-', 'fluorouracil', '.'],
  );
  const g = wordGroups(sentence, 'whitespace');
  assert.deepEqual(g.words, ['Serum', '(IL-2)', 'rose,', '5-fluorouracil.']);
  assert.deepEqual(
    wordGroups(sentence, 'pipeline').words,
    sentence.tokens.map((t) => t.text),
  );
  const tag = (l: string): number => LABELS.indexOf(l);
  const spread = spreadWordTags(
    [tag('O'), tag('B-Chemical'), tag('O'), tag('B-Chemical')],
    g.first,
    g.last,
    sentence.tokens.map((t) => t.text),
    LABELS,
    [0.9, 0.8, 0.7, 0.6],
  );
  const spans = spansFromTags(spread.tags, LABELS, spread.probabilities);
  assert.deepEqual(
    spans.map((s) => [s.first, s.last, s.label]),
    [
      [2, 4, 'Chemical'],
      [8, 10, 'Chemical'],
    ],
  );
  assert.deepEqual(
    spans.map((s) => Number(s.score.toFixed(12))),
    [0.8, 0.6],
    "a word's probability scores its tokens",
  );
  assert.equal(spread.tags[1], tag('O'), '( stays outside');
});

test('answer lines know where their tag is, through fences, padding, JSON and cut-off JSON', () => {
  const cases = [
    'Cisplatin\tB-Chemical\ninduced\tO\r\nfailure  \t B-Disease',
    '```\nCisplatin B-Chemical\ninduced O\n```',
    '  {"lines": [{"token": "Cisplatin", "tag": "B-Chemical"}, {"token":"induced","tag":"O"}]}',
    '{"lines":[{"token":"Cisplatin","tag":"B-Chemical"},{"token":"induced","tag":"O"},{"token":"fail',
  ];
  for (const content of cases) {
    const parsed = parseAnswer(content);
    assert.ok(parsed.lines.length >= 2);
    assert.equal(parsed.tagRanges.length, parsed.lines.length);
    for (const [k, l] of parsed.lines.entries()) {
      const r = parsed.tagRanges[k];
      assert.ok(r !== undefined, JSON.stringify(content));
      assert.equal(content.slice(r.start, r.end), l.tag, JSON.stringify(content));
    }
  }
  // Another key order: the lines are read but not placed (so not scored).
  const other = parseAnswer('{"lines":[{"tag":"O","token":"a"}]}');
  assert.equal(other.lines.length, 1);
  assert.equal(other.tagRanges[0], undefined);
});

test("logprobs: tokens placed on the answer text, a tag's probability is the product over the tokens covering it", () => {
  const content = 'Cisplatin\tB-Chemical\ninduced\tO';
  const items = [
    { token: 'Cis', logprob: 0 },
    { token: 'platin', logprob: 0 },
    { token: '\tB', logprob: Math.log(0.9) },
    { token: '-Chem', logprob: Math.log(0.8) },
    { token: 'ical', logprob: 0 },
    { token: '\n', logprob: 0 },
    { token: 'induced', logprob: 0 },
    { token: '\t', logprob: 0 },
    { token: 'O', logprob: Math.log(0.6) },
  ];
  const placed = placeChatLogprobs(content, { content: items });
  assert.ok(placed !== undefined);
  const { lines, tagRanges } = parseAnswer(content);
  const [r0, r1] = tagRanges as Array<{ start: number; end: number }>;
  const p0 = rangeProbability(placed, r0.start, r0.end);
  assert.ok(p0 !== undefined && Math.abs(p0 - 0.72) < 1e-12, String(p0));
  assert.ok(Math.abs((rangeProbability(placed, r1.start, r1.end) ?? 0) - 0.6) < 1e-12);
  assert.equal(placeChatLogprobs(content, { content: [{ token: 'x', logprob: 0 }] }), undefined, 'tokens that do not spell the answer give no scores');
  assert.equal(placeChatLogprobs(content, null), undefined);
  // Completions: by text, else by text_offset (vLLM's offsets start at 0).
  const tokens = items.map((i) => i.token);
  const byText = placeCompletionLogprobs(content, { tokens, token_logprobs: items.map((i) => i.logprob) });
  assert.deepEqual(byText, placed);
  const offsets = tokens.map((_, i) => tokens.slice(0, i).join('').length);
  const withBytes = placeCompletionLogprobs(content, {
    tokens: tokens.map((t, i) => (i === 0 ? 'Cis' : t)),
    token_logprobs: items.map((i) => i.logprob),
    text_offset: offsets,
  });
  assert.deepEqual(withBytes, placed);
  // Realigned onto the input and scored: the mean over a span's words.
  const { tags, answerIndex } = realign(['Cisplatin', 'induced'], lines, LABELS);
  assert.deepEqual(answerIndex, [0, 1]);
  const spans = spansFromTags(
    tags,
    LABELS,
    answerIndex.map((j) => rangeProbability(placed, (tagRanges[j] as { start: number }).start, (tagRanges[j] as { end: number }).end)),
  );
  assert.equal(spans.length, 1);
  assert.ok(Math.abs(spans[0].score - 0.72) < 1e-12);
});

test('llm.structuredOutputs: json | regex | none, the old booleans and their environment spellings still work', () => {
  assert.equal(validateConfig({}).llm.structuredOutputs, 'json');
  assert.equal(validateConfig({ llm: { structuredOutputs: true } }).llm.structuredOutputs, 'json');
  assert.equal(validateConfig({ llm: { structuredOutputs: false } }).llm.structuredOutputs, 'none');
  assert.equal(validateConfig({ llm: { structuredOutputs: 'regex' } }).llm.structuredOutputs, 'regex');
  assert.equal(validateConfig(applyEnvironment({}, { BIONER_LLM_STRUCTURED_OUTPUTS: 'false' })).llm.structuredOutputs, 'none');
  assert.equal(validateConfig(applyEnvironment({}, { BIONER_LLM_STRUCTURED_OUTPUTS: 'regex' })).llm.structuredOutputs, 'regex');
  assert.throws(
    () => validateConfig({ llm: { structuredOutputs: 'grammar' } }),
    (e: unknown) => e instanceof ConfigError && e.field === 'llm.structuredOutputs' && /json, regex or none/.test(e.message),
  );
  const c = validateConfig(
    applyEnvironment(
      {},
      { BIONER_LLM_ENDPOINT: 'completions', BIONER_LLM_WORD_SPLIT: 'whitespace', BIONER_LLM_PROMPT_FILE: '/p.yaml', BIONER_LLM_LOGPROBS: 'false' },
    ),
  );
  assert.deepEqual([c.llm.endpoint, c.llm.wordSplit, c.llm.promptFile, c.llm.logprobs], ['completions', 'whitespace', '/p.yaml', false]);
  const r = validateConfig(
    applyEnvironment(
      { routing: { domains: { 'notes-cardio': { domain: 'ncbi-disease', llmModel: 'ncbi-lora' } } } },
      { BIONER_ROUTING_LLM_CAP_MAX_SENTENCE_SHARE: '0.2', BIONER_ROUTING_LLM_CAP_MAX_TOKENS_PER_MINUTE: '5000' },
    ),
  );
  assert.deepEqual(r.routing.llmCap, { maxSentenceShare: 0.2, maxTokensPerMinute: 5000, windowMs: 60000 });
  assert.deepEqual(r.routing.domains['notes-cardio'], { domain: 'ncbi-disease', llmModel: 'ncbi-lora' });
  assert.throws(
    () => validateConfig({ routing: { llmCap: { maxSentenceShare: 1.5 } } }),
    (e: unknown) => e instanceof ConfigError && e.field === 'routing.llmCap.maxSentenceShare',
  );
  assert.throws(
    () => validateConfig({ routing: { domains: { t: { domian: 'x' } } } }),
    (e: unknown) => e instanceof ConfigError && /routing\.domains\.t/.test(e.message),
  );
});
