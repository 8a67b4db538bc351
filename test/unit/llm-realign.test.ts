import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TaggerError } from '../../src/errors.js';
import {
  answerSchema,
  buildMessages,
  formatAnswer,
  lcsPairs,
  mismatches,
  parseAnswer,
  realign,
  spansFromTags,
  tagsFromSpans,
  tokensFromMessages,
  type AnswerLine,
} from '../../src/taggers/llm/realign.js';

const LABELS = ['O', 'B-Chemical', 'I-Chemical', 'B-Disease', 'I-Disease'];
const TOKENS = ['Cisplatin', 'induced', 'acute', 'renal', 'failure', '.'];
const GOLD = ['B-Chemical', 'O', 'B-Disease', 'I-Disease', 'I-Disease', 'O'];

const lines = (tokens: string[], tags: string[]): AnswerLine[] => tokens.map((token, i) => ({ token, tag: tags[i] }));
const named = (tags: number[]): string[] => tags.map((k) => LABELS[k]);

test('a faithful answer realigns one to one with no mismatches', () => {
  const r = realign(TOKENS, lines(TOKENS, GOLD), LABELS);
  assert.deepEqual(named(r.tags), GOLD);
  assert.deepEqual(r.stats, { tokens: 6, matched: 6, changed: 0, dropped: 0, extra: 0, invalidTags: 0, malformed: 0 });
  assert.deepEqual(
    spansFromTags(r.tags, LABELS).map((s) => [s.first, s.last, s.label, s.score]),
    [
      [0, 0, 'Chemical', 1],
      [2, 4, 'Disease', 1],
    ],
  );
});

test('a dropped token becomes O and counts as a mismatch', () => {
  const answer = lines(TOKENS, GOLD).filter((_, i) => i !== 3); // "renal" dropped
  const r = realign(TOKENS, answer, LABELS);
  assert.deepEqual(named(r.tags), ['B-Chemical', 'O', 'B-Disease', 'O', 'I-Disease', 'O']);
  assert.equal(r.stats.dropped, 1);
  assert.equal(r.stats.matched, 5);
  assert.equal(mismatches(r.stats), 1);
  // The orphan I-Disease after O is repaired by the conlleval rule into an entity of its own.
  assert.deepEqual(
    spansFromTags(r.tags, LABELS).map((s) => [s.first, s.last, s.label]),
    [
      [0, 0, 'Chemical'],
      [2, 2, 'Disease'],
      [4, 4, 'Disease'],
    ],
  );
});

test('added tokens are ignored and counted', () => {
  const answer = [
    { token: 'Here', tag: 'O' },
    ...lines(TOKENS.slice(0, 3), GOLD.slice(0, 3)),
    { token: 'kidney', tag: 'I-Disease' },
    ...lines(TOKENS.slice(3), GOLD.slice(3)),
  ];
  const r = realign(TOKENS, answer, LABELS);
  assert.deepEqual(named(r.tags), GOLD);
  assert.equal(r.stats.extra, 2);
  assert.equal(mismatches(r.stats), 0);
});

test('a changed token is O and counted as changed, not as dropped plus extra', () => {
  const answer = lines(['Cisplatin', 'induced', 'acute', 'renal', 'failures', '.'], GOLD);
  const r = realign(TOKENS, answer, LABELS);
  assert.deepEqual(named(r.tags), ['B-Chemical', 'O', 'B-Disease', 'I-Disease', 'O', 'O']);
  assert.equal(r.stats.changed, 1);
  assert.equal(r.stats.dropped, 0);
  assert.equal(r.stats.extra, 0);
  assert.equal(mismatches(r.stats), 1);
});

test('reordered tokens: the longest common subsequence keeps most, the moved token is unmatched', () => {
  // "acute" moved to the end: the rest stays aligned.
  const order = [0, 1, 3, 4, 5, 2];
  const answer = order.map((i) => ({ token: TOKENS[i], tag: GOLD[i] }));
  const r = realign(TOKENS, answer, LABELS);
  assert.equal(r.stats.matched, 5);
  assert.equal(mismatches(r.stats), 1);
  assert.equal(r.stats.extra, 1);
  assert.equal(named(r.tags)[2], 'O', 'the moved token is not tagged from a wrong place');
  assert.deepEqual(named(r.tags), ['B-Chemical', 'O', 'O', 'I-Disease', 'I-Disease', 'O']);
});

test('repeated tokens align in order', () => {
  const tokens = ['a', 'b', 'a', 'b'];
  assert.deepEqual(lcsPairs(tokens, ['a', 'b', 'a', 'b']), [
    [0, 0],
    [1, 1],
    [2, 2],
    [3, 3],
  ]);
  assert.deepEqual(lcsPairs(tokens, ['b', 'a', 'b']), [
    [1, 0],
    [2, 1],
    [3, 2],
  ]);
  assert.deepEqual(lcsPairs([], ['x']), []);
});

test('tags outside the label set are O and counted; case differences are forgiven', () => {
  const r = realign(
    ['aspirin', 'overdose'],
    [
      { token: 'aspirin', tag: 'b-chemical' },
      { token: 'overdose', tag: 'B-Drug' },
    ],
    LABELS,
  );
  assert.deepEqual(named(r.tags), ['B-Chemical', 'O']);
  assert.equal(r.stats.invalidTags, 1);
});

test('plain token<TAB>TAG lines, with blank lines, CRLF, fences and space-separated lines', () => {
  const p = parseAnswer('```\nCisplatin\tB-Chemical\r\n\ninduced\tO\nacute B-Disease\n```');
  assert.equal(p.format, 'lines');
  assert.deepEqual(p.lines, [
    { token: 'Cisplatin', tag: 'B-Chemical' },
    { token: 'induced', tag: 'O' },
    { token: 'acute', tag: 'B-Disease' },
  ]);
  assert.equal(p.malformed, 0);
});

test('structured JSON answers, as vLLM structured outputs return them, and a bare array', () => {
  const content = formatAnswer(lines(TOKENS, GOLD), true);
  const p = parseAnswer(content);
  assert.equal(p.format, 'json');
  assert.deepEqual(p.lines, lines(TOKENS, GOLD));
  const bare = parseAnswer(JSON.stringify([{ token: 'a', tag: 'O' }, ['b', 'B-Chemical'], { token: 1 }]));
  assert.deepEqual(bare.lines, [
    { token: 'a', tag: 'O' },
    { token: 'b', tag: 'B-Chemical' },
  ]);
  assert.equal(bare.malformed, 1);
  // The plain form round-trips too.
  assert.deepEqual(parseAnswer(formatAnswer(lines(TOKENS, GOLD), false)).lines, lines(TOKENS, GOLD));
});

test('malformed answers fail with LLM_BAD_RESPONSE; partly malformed ones count their bad lines', () => {
  for (const bad of [
    '',
    '   \n ',
    'justoneword',
    '{"answer": "Cisplatin B-Chemical"}',
    '[1, 2, 3]',
    '{"lines": [{"token": 1, "tag": "O"}]}',
    '{"lines": {"token": "a", "tag": "O"}}',
  ]) {
    assert.throws(
      () => parseAnswer(bad),
      (e: unknown) => e instanceof TaggerError && e.code === 'LLM_BAD_RESPONSE' && !e.retriable,
      JSON.stringify(bad),
    );
  }
  const p = parseAnswer('Cisplatin\tB-Chemical\n???\ninduced\t\nacute\tB-Disease');
  assert.equal(p.lines.length, 2);
  assert.equal(p.malformed, 2);
  const r = realign(['Cisplatin', 'induced', 'acute'], p.lines, LABELS, p.malformed);
  assert.deepEqual(named(r.tags), ['B-Chemical', 'O', 'B-Disease']);
  assert.equal(r.stats.dropped, 1);
  assert.equal(r.stats.malformed, 2);
  // Structured JSON cut short (max_tokens): the complete entries are kept, the rest is dropped.
  const cut = parseAnswer('{"lines": [{"token": "Cisplatin", "tag": "B-Chemical"}, {"token": "in\\"duced", "tag": "O"}, {"token": "acu');
  assert.deepEqual(cut.lines, [
    { token: 'Cisplatin', tag: 'B-Chemical' },
    { token: 'in"duced', tag: 'O' },
  ]);
  assert.equal(cut.malformed, 1);
  assert.throws(
    () => parseAnswer('{"lines": [{"tok'),
    (e: unknown) => e instanceof TaggerError && e.code === 'LLM_BAD_RESPONSE',
  );
});

test('the prompt lists tokens one per line and the server side reads them back', () => {
  const tokens = ['<', 'tokens', '>', 'IL-2', '"', '\u00b5g'];
  const messages = buildMessages(tokens, LABELS);
  assert.equal(messages.length, 2);
  assert.ok(messages[0].content.includes('B-Chemical'));
  assert.deepEqual(tokensFromMessages(messages), tokens);
  assert.equal(tokensFromMessages([{ role: 'user', content: 'no block' }]), undefined);
  const schema = answerSchema(LABELS) as { properties: { lines: { items: { properties: { tag: { enum: string[] } } } } } };
  assert.deepEqual(schema.properties.lines.items.properties.tag.enum, LABELS);
});

test('tags from spans use the model labels', () => {
  assert.deepEqual(
    tagsFromSpans(
      [
        { first: 0, last: 0, label: 'Chemical', score: 1 },
        { first: 2, last: 4, label: 'Disease', score: 1 },
      ],
      6,
      LABELS,
    ),
    GOLD,
  );
  assert.deepEqual(tagsFromSpans([{ first: 0, last: 1, label: 'Gene', score: 1 }], 2, ['O', 'Gene']), ['Gene', 'Gene']);
});
