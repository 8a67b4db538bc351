import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseCsv } from '../../src/eval/datasets.js';
import { normalize, prepareText, type PreparedText } from '../../src/text/index.js';

// The shared data sits beside the repository (../shared/data), in CI too.
const MTSAMPLES = fileURLToPath(new URL('../../../shared/data/mtsamples/mtsamples.csv', import.meta.url));
const readCsv = (text: string): string[][] => parseCsv(text, 'mtsamples.csv', { acceptTruncatedEnd: true });

/** Minimal RFC 4180 reader: quoted fields, doubled quotes, newlines inside quotes. */

/** Structural invariants every prepared note must satisfy. */
function checkPrepared(p: PreparedText): void {
  p.sentences.forEach((s, k) => {
    assert.equal(s.index, k);
    assert.ok(s.tokens.length > 0);
    assert.equal(s.start, s.tokens[0].start);
    assert.equal(s.end, s.tokens[s.tokens.length - 1].end);
    if (k > 0) assert.ok(s.start >= p.sentences[k - 1].end, 'sentences do not overlap');
    let prev = s.start;
    for (const t of s.tokens) {
      assert.ok(t.start >= prev && t.end > t.start && t.end <= p.original.length, 'tokens ordered, non-empty, in range');
      prev = t.end;
      assert.ok(t.text.length > 0 && !/\s/.test(t.text));
    }
  });
}

const tokensOf = (p: PreparedText): Array<[string, string]> =>
  p.sentences.flatMap((s) => s.tokens.map((t): [string, string] => [t.text, p.original.slice(t.start, t.end)]));

test('token offsets point into the original through normalisation', () => {
  const original =
    'HISTORY OF PRESENT ILLNESS:\r\nPulmonary ﬁbrosis\u00a0and \u201ccough\u201d\u2014worse.\u00ad\r\n\r\nTNF-𝛼 raised 😀; re\u0301sume\u0301 ok.\u0007Done.';
  const p = prepareText(original);
  checkPrepared(p);
  assert.deepEqual(
    p.sentences.map((s) => original.slice(s.start, s.end)),
    ['HISTORY OF PRESENT ILLNESS:', 'Pulmonary ﬁbrosis\u00a0and \u201ccough\u201d\u2014worse.', 'TNF-𝛼 raised 😀; re\u0301sume\u0301 ok.', 'Done.'],
  );
  assert.deepEqual(tokensOf(p), [
    ['HISTORY', 'HISTORY'],
    ['OF', 'OF'],
    ['PRESENT', 'PRESENT'],
    ['ILLNESS', 'ILLNESS'],
    [':', ':'],
    ['Pulmonary', 'Pulmonary'],
    ['fibrosis', 'ﬁbrosis'],
    ['and', 'and'],
    ['"', '\u201c'],
    ['cough', 'cough'],
    ['"', '\u201d'],
    ['-', '\u2014'],
    ['worse', 'worse'],
    ['.', '.'],
    ['TNF', 'TNF'],
    ['-', '-'],
    ['α', '𝛼'],
    ['raised', 'raised'],
    ['😀', '😀'],
    [';', ';'],
    ['re\u0301sume\u0301', 're\u0301sume\u0301'],
    ['ok', 'ok'],
    ['.', '.'],
    ['Done', 'Done'],
    ['.', '.'],
  ]);
});

test('soft hyphen inside a word, zero-width space between words', () => {
  const original = 'anti\u00adcoagulation\u200b therapy';
  const p = prepareText(original);
  assert.deepEqual(tokensOf(p), [
    ['anticoagulation', 'anti\u00adcoagulation'],
    ['therapy', 'therapy'],
  ]);
});

test('empty and whitespace-only notes give no sentences', () => {
  assert.deepEqual(prepareText('').sentences, []);
  assert.deepEqual(prepareText(' \r\n\u00a0\u200b ').sentences, []);
});

test('mtsamples: invariants hold and throughput is reported', { skip: !existsSync(MTSAMPLES) && 'mtsamples.csv not available' }, (t) => {
  const rows = readCsv(readFileSync(MTSAMPLES, 'utf8'));
  const col = rows[0].indexOf('transcription');
  const notes = rows.slice(1).map((r) => r[col]);
  assert.equal(notes.length, 322);
  let chars = 0;
  let sentences = 0;
  let tokens = 0;
  for (const n of notes) {
    const p = prepareText(n);
    checkPrepared(p);
    for (const s of p.sentences) for (const tok of s.tokens) assert.equal(normalize(n.slice(tok.start, tok.end)).text, tok.text);
  }
  // Warm, then time a few passes (printed only: timings vary by machine).
  const passes = 5;
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < passes; k++) {
    for (const n of notes) {
      const p = prepareText(n);
      if (k === 0) {
        chars += n.length;
        sentences += p.sentences.length;
        for (const s of p.sentences) tokens += s.tokens.length;
      }
    }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9 / passes;
  const msg = `prepareText over ${notes.length} mtsamples notes: ${chars} chars, ${sentences} sentences, ${tokens} tokens, ${(secs * 1000).toFixed(1)} ms/pass, ${(chars / secs / 1e6).toFixed(2)} M chars/s`;
  t.diagnostic(msg);
  console.log(msg);
});
