import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeOffsetConverter } from '../../src/text/codepoints.js';
import { InternalError } from '../../src/errors.js';

test('identity when there are no surrogate pairs', () => {
  const s = 'Aspirin 81 mg, café ±2';
  const c = makeOffsetConverter(s);
  for (let i = 0; i <= s.length; i++) {
    assert.equal(c.toCodePoint(i), i);
    assert.equal(c.toUtf16(i), i);
  }
});

test('emoji and 𝛼 round-trip and agree with Array.from counts', () => {
  const s = '😀 TNF-𝛼 raised 🫀🫁 x𝛼𝛽y end';
  const c = makeOffsetConverter(s);
  const cps = Array.from(s);
  let u = 0;
  for (let k = 0; k <= cps.length; k++) {
    assert.equal(c.toUtf16(k), u, `code point ${k}`);
    assert.equal(c.toCodePoint(u), k, `utf16 ${u}`);
    assert.equal(Array.from(s.slice(0, u)).length, k);
    if (k < cps.length) u += cps[k].length;
  }
  assert.equal(c.toCodePoint(s.length), cps.length);
  // A span converted out and back lands on the same UTF-16 offsets.
  const start = s.indexOf('𝛼');
  const end = start + 2;
  assert.equal(c.toUtf16(c.toCodePoint(start)), start);
  assert.equal(c.toUtf16(c.toCodePoint(end)), end);
  assert.equal(cps.slice(c.toCodePoint(start), c.toCodePoint(end)).join(''), '𝛼');
});

test('an offset inside a surrogate pair maps to that code point', () => {
  const s = 'a😀b';
  const c = makeOffsetConverter(s);
  assert.equal(c.toCodePoint(1), 1);
  assert.equal(c.toCodePoint(2), 1);
  assert.equal(c.toCodePoint(3), 2);
});

test('lone surrogates count as one code point each, like Array.from', () => {
  const s = 'a\ud800b\udc00😀';
  const c = makeOffsetConverter(s);
  assert.equal(c.toCodePoint(s.length), Array.from(s).length);
  assert.equal(c.toUtf16(Array.from(s).length), s.length);
  assert.equal(c.toUtf16(4), 4);
});

test('out-of-range and non-integer offsets throw', () => {
  const c = makeOffsetConverter('a😀');
  assert.throws(() => c.toCodePoint(-1), InternalError);
  assert.throws(() => c.toCodePoint(4), InternalError);
  assert.throws(() => c.toUtf16(3), InternalError);
  assert.throws(() => c.toUtf16(0.5), InternalError);
  const plain = makeOffsetConverter('abc');
  assert.throws(() => plain.toUtf16(4), InternalError);
});

test('random strings: matches a linear reference', () => {
  let seed = 99;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const alphabet = ['a', ' ', 'é', '😀', '𝛼', '\ud800', '\udc00', '中'];
  for (let round = 0; round < 300; round++) {
    let s = '';
    const len = Math.floor(rand() * 25);
    for (let k = 0; k < len; k++) s += alphabet[Math.floor(rand() * alphabet.length)];
    const c = makeOffsetConverter(s);
    const cps = Array.from(s);
    const starts: number[] = [];
    let u = 0;
    for (const ch of cps) {
      starts.push(u);
      u += ch.length;
    }
    starts.push(u);
    for (let k = 0; k < starts.length; k++) {
      assert.equal(c.toUtf16(k), starts[k]);
      assert.equal(c.toCodePoint(starts[k]), k);
    }
  }
});
