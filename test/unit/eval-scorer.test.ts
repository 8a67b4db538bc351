import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StrictScorer, type EvalSpan, type PRF } from '../../src/eval/scorer.js';

const s = (start: number, end: number, label: string, tokens: number): EvalSpan => ({ start, end, label, words: tokens });
function approx(actual: PRF, expected: Partial<PRF>): void {
  for (const [k, v] of Object.entries(expected)) {
    const got = actual[k as keyof PRF];
    assert.ok(Math.abs(got - v) < 1e-9, `${k}: expected ${v}, got ${got}`);
  }
}

function sample(scorer: StrictScorer): StrictScorer {
  scorer.add(
    [s(0, 5, 'Disease', 1), s(10, 20, 'Disease', 2), s(30, 40, 'Chemical', 3)],
    [
      s(0, 5, 'Disease', 1), // tp
      s(0, 5, 'Disease', 1), // duplicate: counts once
      s(10, 20, 'Chemical', 2), // right span, wrong label: fp Chemical + fn Disease
      s(30, 40, 'Chemical', 3), // tp
      s(50, 60, 'Gene', 1), // Gene never occurs in gold: still a false positive
    ],
  );
  scorer.add([s(0, 3, 'Disease', 1)], [s(0, 4, 'Disease', 1)]); // boundary off by one: fp + fn
  return scorer;
}

test('micro and per-label P/R/F1, hand-computed', () => {
  const r = sample(new StrictScorer()).result();
  // 2 tp of 5 distinct predictions, 4 gold: P 2/5, R 2/4, F1 4/9.
  approx(r, { tp: 2, fp: 3, fn: 2, precision: 0.4, recall: 0.5, f1: 4 / 9 });
  assert.deepEqual(Object.keys(r.by_label), ['Chemical', 'Disease', 'Gene']);
  approx(r.by_label.Gene, { tp: 0, fp: 1, fn: 0, precision: 0, recall: 0, f1: 0 });
  assert.equal(r.by_label.Gene.support, 0);
  approx(r.by_label.Disease, { tp: 1, fp: 1, fn: 2, precision: 0.5, recall: 1 / 3, f1: 0.4 });
  assert.equal(r.by_label.Disease.support, 3);
  approx(r.by_label.Chemical, { tp: 1, fp: 1, fn: 0, precision: 0.5, recall: 1, f1: 2 / 3 });
  assert.equal(r.by_label.Chemical.support, 1);
});

test('length buckets: precision over predicted length, recall over gold length', () => {
  const { by_length } = sample(new StrictScorer()).result();
  // Bucket 1 holds 3 predictions (Disease 0-5, Gene 50-60, Disease 0-4), 1 right; 2 gold, 1 found.
  approx(by_length['1'], { tp: 1, fp: 2, fn: 1, precision: 1 / 3, recall: 0.5, f1: 0.4 });
  assert.equal(by_length['1'].support, 2);
  approx(by_length['2'], { tp: 0, fp: 1, fn: 1, precision: 0, recall: 0, f1: 0 });
  assert.equal(by_length['2'].support, 1);
  approx(by_length['3+'], { tp: 1, fp: 0, fn: 0, precision: 1, recall: 1, f1: 1 });
  assert.equal(by_length['3+'].support, 1);
  const long = new StrictScorer();
  long.add([s(0, 9, 'X', 7)], [s(0, 9, 'X', 7)]);
  assert.equal(long.result().by_length['3+'].tp, 1);
});

test('labels given to the constructor are listed, never a filter', () => {
  const r = sample(new StrictScorer(['Disease', 'Species'])).result();
  // Chemical and Gene are not in the list and are still scored; Species is listed with nothing.
  assert.deepEqual(Object.keys(r.by_label), ['Chemical', 'Disease', 'Gene', 'Species']);
  approx(r.by_label.Species, { tp: 0, fp: 0, fn: 0, precision: 0, recall: 0, f1: 0 });
  assert.equal(r.by_label.Species.support, 0);
  approx(r, { tp: 2, fp: 3, fn: 2 });
});

test('a model label the gold data never uses lowers precision and F1', () => {
  // A Chemical+Disease model on a Disease-only corpus: its Chemical spans are false positives.
  const diseaseOnly = new StrictScorer();
  diseaseOnly.add([s(0, 2, 'Disease', 2), s(4, 5, 'Disease', 1)], [s(0, 2, 'Disease', 2)]);
  const withChemical = new StrictScorer();
  withChemical.add([s(0, 2, 'Disease', 2), s(4, 5, 'Disease', 1)], [s(0, 2, 'Disease', 2), s(6, 7, 'Chemical', 1), s(8, 9, 'Chemical', 1)]);
  const a = diseaseOnly.result();
  const b = withChemical.result();
  approx(a, { tp: 1, fp: 0, fn: 1, precision: 1, recall: 0.5 });
  approx(b, { tp: 1, fp: 2, fn: 1, precision: 1 / 3, recall: 0.5, f1: 0.4 });
  assert.ok(b.f1 < a.f1);
  // Disease's own row is the same either way; the extra label has its own row.
  assert.deepEqual(b.by_label.Disease, a.by_label.Disease);
  approx(b.by_label.Chemical, { tp: 0, fp: 2, fn: 0 });
  assert.equal(b.by_label.Chemical.support, 0);
  approx(b.by_length['1'], { tp: 0, fp: 2, fn: 1 });
});

test('a label first seen in predictions counts from the first document on', () => {
  const sc = new StrictScorer();
  sc.add([], [s(0, 3, 'Chemical', 1)]);
  sc.add([s(5, 8, 'Chemical', 1)], [s(5, 8, 'Chemical', 1)]);
  const r = sc.result();
  approx(r, { tp: 1, fp: 1, fn: 0, precision: 0.5, recall: 1 });
});

test('duplicated gold spans count once; pred-only data has precision 0, no NaN', () => {
  const sc = new StrictScorer();
  sc.add([s(0, 3, 'X', 1), s(0, 3, 'X', 1)], [s(0, 3, 'X', 1)]);
  approx(sc.result(), { tp: 1, fp: 0, fn: 0, f1: 1 });
  const onlyPred = new StrictScorer();
  onlyPred.add([], [s(0, 1, 'X', 1)]);
  const r = onlyPred.result();
  approx(r, { tp: 0, fp: 1, fn: 0, precision: 0, recall: 0, f1: 0 });
  assert.deepEqual(Object.keys(r.by_label), ['X']);
  assert.equal(r.by_label.X.support, 0);
});

test('empty scorer gives zeros, never NaN', () => {
  const r = new StrictScorer().result();
  approx(r, { tp: 0, fp: 0, fn: 0, precision: 0, recall: 0, f1: 0 });
  for (const b of ['1', '2', '3+'] as const) {
    approx(r.by_length[b], { precision: 0, recall: 0, f1: 0 });
    assert.equal(r.by_length[b].support, 0);
  }
  const noPred = new StrictScorer();
  noPred.add([s(0, 1, 'X', 1)], []);
  approx(noPred.result(), { precision: 0, recall: 0, f1: 0, fn: 1 });
});
