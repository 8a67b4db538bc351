import { test } from 'node:test';
import assert from 'node:assert/strict';
import { wordTokens } from '../../src/text/tokens.js';

const texts = (s: string, start?: number, end?: number): string[] => wordTokens(s, start, end).map((t) => s.slice(t.start, t.end));

/** Straightforward reference of the BERT basic rule, one regex test per code point. */
function reference(s: string): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  let i = 0;
  let ws = -1;
  for (const ch of s) {
    const cp = ch.codePointAt(0) as number;
    const asciiPunct = (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
    const cjk = (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0xf900 && cp <= 0xfaff);
    const space = /[\s\p{Cc}]/u.test(ch);
    const alone = asciiPunct || cjk || (!space && /\p{P}/u.test(ch));
    if (space || alone) {
      if (ws >= 0) out.push({ start: ws, end: i });
      ws = -1;
      if (alone) out.push({ start: i, end: i + ch.length });
    } else if (ws < 0) {
      ws = i;
    }
    i += ch.length;
  }
  if (ws >= 0) out.push({ start: ws, end: i });
  return out;
}

test('splits on whitespace and isolates ASCII punctuation', () => {
  assert.deepEqual(texts('BP 124/78, HR 72.'), ['BP', '124', '/', '78', ',', 'HR', '72', '.']);
  assert.deepEqual(texts('$5 +2 a^b `x` ~y|z'), ['$', '5', '+', '2', 'a', '^', 'b', '`', 'x', '`', '~', 'y', '|', 'z']);
});

test('hyphens, apostrophes and decimals are split like BERT', () => {
  assert.deepEqual(texts("COX-2 inhibitor, patient's 2.5 mg"), ['COX', '-', '2', 'inhibitor', ',', 'patient', "'", 's', '2', '.', '5', 'mg']);
  assert.deepEqual(texts('anti--inflammatory'), ['anti', '-', '-', 'inflammatory']);
});

test('Unicode punctuation is split; symbols stay inside words', () => {
  assert.deepEqual(texts('«¿Qué?» 37°C ±2 ™'), ['«', '¿', 'Qué', '?', '»', '37°C', '±2', '™']);
  assert.deepEqual(texts('a…b'), ['a', '…', 'b']);
});

test('non-BMP characters stay whole with exact offsets', () => {
  const s = 'TNF-𝛼 😀ok 🫀';
  const toks = wordTokens(s);
  assert.deepEqual(
    toks.map((t) => s.slice(t.start, t.end)),
    ['TNF', '-', '𝛼', '😀ok', '🫀'],
  );
  assert.deepEqual(toks[2], { start: 4, end: 6 });
  assert.deepEqual(toks[4], { start: s.length - 2, end: s.length });
});

test('combining marks join their word; CJK ideographs are single tokens', () => {
  assert.deepEqual(texts('cafe\u0301 au lait'), ['cafe\u0301', 'au', 'lait']);
  assert.deepEqual(texts('服用阿司匹林 aspirin'), ['服', '用', '阿', '司', '匹', '林', 'aspirin']);
  assert.deepEqual(texts('𠀀x'), ['𠀀', 'x']);
});

test('start/end restrict the range and offsets stay absolute', () => {
  const s = 'Before. Aspirin 81 mg. After.';
  const a = s.indexOf('Aspirin');
  const b = s.indexOf(' After');
  const toks = wordTokens(s, a, b);
  assert.deepEqual(texts(s, a, b), ['Aspirin', '81', 'mg', '.']);
  assert.equal(toks[0].start, a);
  assert.equal(toks[toks.length - 1].end, b);
  assert.deepEqual(wordTokens(s, 3, 3), []);
  assert.deepEqual(wordTokens('   \n\t '), []);
});

test('agrees with a per-code-point regex reference on random strings', () => {
  let seed = 7;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const alphabet = [
    'a',
    'Z',
    '9',
    ' ',
    '\t',
    '\n',
    '.',
    ',',
    '-',
    '(',
    '$',
    '^',
    '_',
    '°',
    '±',
    '«',
    '、',
    '中',
    '𝛼',
    '😀',
    '\u0301',
    '\u00a0',
    '\u2003',
    '\u200b',
    '\u200d',
    '\u0085',
    '\u0007',
    '\u2019',
    '—',
    '€',
  ];
  for (let round = 0; round < 500; round++) {
    let s = '';
    const len = Math.floor(rand() * 40);
    for (let k = 0; k < len; k++) s += alphabet[Math.floor(rand() * alphabet.length)];
    assert.deepEqual(wordTokens(s), reference(s), JSON.stringify(s));
  }
});
