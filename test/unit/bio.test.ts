import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBio, decodeBioTags, entityTypes, parseLabels, softmaxInto, splitTag } from '../../src/taggers/bio.js';
import { wordProbabilities } from '../../src/taggers/token-classifier.js';
import { ModelLoadError, TaggerError } from '../../src/errors.js';
import { mulberry32 } from '../../src/eval/random.js';

const P = (rows: number[][]): Float32Array => Float32Array.from(rows.flat());
const BIO = ['O', 'B-X', 'I-X'] as const;
const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-6;

test('parseLabels maps contiguous ids and names a bad id', () => {
  assert.deepEqual(parseLabels({ '2': 'I-X', '0': 'O', '1': 'B-X' }), ['O', 'B-X', 'I-X']);
  assert.throws(
    () => parseLabels({ '0': 'O', '2': 'B-X' }),
    (e: unknown) => e instanceof ModelLoadError && /"2"/.test(e.message),
  );
  assert.throws(() => parseLabels({ '0': 'O', '01': 'B-X' }), /"01"/);
  assert.throws(() => parseLabels({ '0': 'O', x: 'B-X' }), /"x"/);
  assert.throws(() => parseLabels({}), ModelLoadError);
  assert.throws(() => parseLabels({ '0': 'B-' }), ModelLoadError);
});

test('entityTypes lists types once, in order, without O', () => {
  assert.deepEqual(entityTypes(['O', 'B-Chemical', 'B-Disease', 'I-Chemical', 'I-Disease']), ['Chemical', 'Disease']);
  assert.deepEqual(entityTypes(['O', 'Chemical', 'S-Gene', 'E-Gene']), ['Chemical', 'Gene']);
});

test('splitTag folds BIOES and IO labels', () => {
  assert.deepEqual(splitTag('S-X'), { prefix: 'B', type: 'X' });
  assert.deepEqual(splitTag('E-X'), { prefix: 'I', type: 'X' });
  assert.deepEqual(splitTag('Disease'), { prefix: 'I', type: 'Disease' });
  assert.deepEqual(splitTag('O'), { prefix: 'O', type: '' });
});

test('viterbi picks the constrained optimum where argmax would need repair', () => {
  // argmax: O I-X -> repaired to a one-word entity at 1; best valid sequence: B-X I-X (0.35*0.8 = 0.28).
  const probs = P([
    [0.45, 0.35, 0.2],
    [0.1, 0.1, 0.8],
  ]);
  assert.deepEqual(decodeBio(probs, 2, BIO, 'argmax'), [{ first: 1, last: 1, label: 'X', score: probs[5] }]);
  const v = decodeBio(probs, 2, BIO);
  assert.equal(v.length, 1);
  assert.deepEqual([v[0].first, v[0].last, v[0].label], [0, 1, 'X']);
  assert.ok(close(v[0].score, (0.35 + 0.8) / 2));
});

test('viterbi prefers O O over an entity that can only start with I-X', () => {
  // Argmax is I-X I-X; valid options: O O = .12 beats B-X I-X = .06.
  const probs = P([
    [0.4, 0.1, 0.5],
    [0.3, 0.1, 0.6],
  ]);
  assert.deepEqual(decodeBioTags(probs, 2, BIO), [0, 0]);
  assert.deepEqual(decodeBio(probs, 2, BIO), []);
  assert.deepEqual(
    decodeBio(probs, 2, BIO, 'argmax').map((s) => [s.first, s.last]),
    [[0, 1]],
  );
});

const TWO = ['O', 'B-A', 'I-A', 'B-B', 'I-B'];
function valid(tags: number[], labels: readonly string[]): boolean {
  for (let t = 0; t < tags.length; t++) {
    const cur = splitTag(labels[tags[t]]);
    if (cur.prefix !== 'I') continue;
    if (t === 0) return false;
    const prev = splitTag(labels[tags[t - 1]]);
    if (prev.prefix === 'O' || prev.type !== cur.type) return false;
  }
  return true;
}
function logScore(probs: Float32Array, tags: number[], L: number): number {
  return tags.reduce((s, k, t) => s + Math.log(probs[t * L + k]), 0);
}

test('viterbi never emits an invalid sequence and matches brute force', () => {
  const rnd = mulberry32(42);
  const L = TWO.length;
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rnd() * 5);
    // Sharpened random distributions so argmax is often invalid.
    const rows = Array.from({ length: n }, () => {
      const r = Array.from({ length: L }, () => rnd() ** 3 + 1e-4);
      const s = r.reduce((a, b) => a + b, 0);
      return r.map((x) => x / s);
    });
    const probs = P(rows);
    const tags = decodeBioTags(probs, n, TWO);
    assert.ok(valid(tags, TWO), `invalid sequence ${tags.join(',')}`);
    let best = -Infinity;
    const seq = new Array<number>(n).fill(0);
    for (let code = 0; code < L ** n; code++) {
      for (let t = 0, c = code; t < n; t++, c = Math.floor(c / L)) seq[t] = c % L;
      if (valid(seq, TWO)) best = Math.max(best, logScore(probs, seq, L));
    }
    assert.ok(Math.abs(logScore(probs, tags, L) - best) < 1e-9, `trial ${trial}: not the constrained optimum`);
  }
});

test('argmax repair: conlleval rule', () => {
  const L = ['O', 'B-X', 'I-X', 'B-Y', 'I-Y'];
  const oneHot = (ks: number[]): Float32Array => P(ks.map((k) => L.map((_, j) => (j === k ? 0.9 : 0.025))));
  const spans = (ks: number[]): [number, number, string][] => decodeBio(oneHot(ks), ks.length, L, 'argmax').map((s) => [s.first, s.last, s.label]);
  // O I-X: I-X after O starts a new entity.
  assert.deepEqual(spans([0, 2]), [[1, 1, 'X']]);
  // B-X I-Y: I-Y after another type starts a new Y entity.
  assert.deepEqual(spans([1, 4]), [
    [0, 0, 'X'],
    [1, 1, 'Y'],
  ]);
  // I-X I-X at sentence start: one entity.
  assert.deepEqual(spans([2, 2]), [[0, 1, 'X']]);
  // B-X B-X: B always starts a new entity.
  assert.deepEqual(spans([1, 1]), [
    [0, 0, 'X'],
    [1, 1, 'X'],
  ]);
  // B-X I-X O I-X
  assert.deepEqual(spans([1, 2, 0, 2]), [
    [0, 1, 'X'],
    [3, 3, 'X'],
  ]);
});

test('IO labels (no B-) may open entities in both modes', () => {
  const IO = ['O', 'Chemical', 'Disease'];
  const probs = P([
    [0.1, 0.8, 0.1],
    [0.1, 0.7, 0.2],
    [0.8, 0.1, 0.1],
    [0.1, 0.1, 0.8],
  ]);
  for (const mode of ['viterbi', 'argmax'] as const) {
    const got = decodeBio(probs, 4, IO, mode);
    assert.deepEqual(
      got.map((s) => [s.first, s.last, s.label]),
      [
        [0, 1, 'Chemical'],
        [3, 3, 'Disease'],
      ],
      mode,
    );
    assert.ok(close(got[0].score, 0.75));
    assert.ok(close(got[1].score, 0.8));
  }
});

test('BIOES labels: S- starts an entity, E- continues it', () => {
  const L = ['O', 'B-X', 'I-X', 'E-X', 'S-X'];
  const oneHot = (ks: number[]): Float32Array => P(ks.map((k) => L.map((_, j) => (j === k ? 0.9 : 0.025))));
  const got = decodeBio(oneHot([4, 4, 1, 2, 3, 0]), 6, L).map((s) => [s.first, s.last]);
  assert.deepEqual(got, [
    [0, 0],
    [1, 1],
    [2, 4],
  ]);
});

test('scores are the mean probability of the chosen tags', () => {
  const probs = P([
    [0.2, 0.7, 0.1],
    [0.2, 0.2, 0.6],
    [0.1, 0.4, 0.5],
  ]);
  const [s] = decodeBio(probs, 3, BIO);
  assert.deepEqual([s.first, s.last], [0, 2]);
  assert.ok(close(s.score, (0.7 + 0.6 + 0.5) / 3));
});

test('edge cases: empty sentence, long sentence after short, short probs', () => {
  assert.deepEqual(decodeBio(new Float32Array(0), 0, BIO), []);
  const n = 2000;
  const rows = Array.from({ length: n }, (_, t) => (t % 4 === 1 ? [0.1, 0.8, 0.1] : t % 4 === 2 ? [0.1, 0.1, 0.8] : [0.8, 0.1, 0.1]));
  const spans = decodeBio(P(rows), n, BIO);
  assert.equal(spans.length, n / 4);
  assert.deepEqual([spans[0].first, spans[0].last], [1, 2]);
  // Extra trailing values (a padded batch row) are ignored.
  assert.equal(decodeBio(P([...rows.slice(0, 4), [1, 0, 0]]), 4, BIO).length, 1);
  assert.throws(() => decodeBio(new Float32Array(5), 2, BIO), TaggerError);
  // Zero probabilities do not break viterbi (log floor).
  assert.deepEqual(
    decodeBioTags(
      P([
        [0, 0, 1],
        [0, 0, 1],
      ]),
      2,
      BIO,
    ),
    [1, 2],
  );
});

test('softmaxInto is stable and normalised', () => {
  const logits = Float32Array.from([1000, 1001, 999, 0, 0, 0, -Infinity, -Infinity, -Infinity]);
  const out = new Float32Array(9);
  for (let r = 0; r < 3; r++) softmaxInto(logits, r * 3, 3, out, r * 3);
  for (let r = 0; r < 3; r++) assert.ok(close(out[r * 3] + out[r * 3 + 1] + out[r * 3 + 2], 1));
  assert.ok(out[1] > out[0] && out[0] > out[2]);
  assert.ok(close(out[4], 1 / 3));
  assert.ok(close(out[7], 1 / 3), 'a fully masked row is uniform, not NaN');
  assert.ok(Array.from(out).every(Number.isFinite));
  // Offsets on both sides: the second row of logits lands in the first row of out.
  const moved = new Float32Array(3);
  softmaxInto(Float32Array.from([9, 9, 9, 0, Math.log(3), 0]), 3, 3, moved, 0);
  assert.ok(close(moved[1], 0.6) && close(moved[0], 0.2));
});

test('wordProbabilities (what the token classifier runs) softmaxes logits and passes probability rows through', () => {
  const out = new Float32Array(3);
  wordProbabilities(Float32Array.from([0, 0, Math.log(2), 0]), 1, 3, out, 0, false);
  assert.ok(close(out[1], 0.5) && close(out[0], 0.25) && close(out[2], 0.25));
  // A row already in [0, 1] summing to 1 is used as is when the backend may answer probabilities...
  const probs = Float32Array.from([0.2, 0.7, 0.1]);
  wordProbabilities(probs, 0, 3, out, 0, true);
  assert.deepEqual(Array.from(out), Array.from(probs));
  // ...and softmaxed like any logits when it may not.
  wordProbabilities(probs, 0, 3, out, 0, false);
  assert.ok(close(out[0] + out[1] + out[2], 1) && out[1] < 0.7);
  // Logits that merely look like probabilities in part are softmaxed.
  wordProbabilities(Float32Array.from([1000, 1001, 999]), 0, 3, out, 0, true);
  assert.ok(out[1] > out[0] && out[0] > out[2] && Array.from(out).every(Number.isFinite));
});
