import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StrictScorer, type EvalSpan, type PRF } from '../../src/eval/scorer.js';

const s = (start: number, end: number, label: string, words: number): EvalSpan => ({ start, end, label, words });
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
      s(50, 60, 'Gene', 1), // Gene never occurs in gold: ignored
    ],
  );
  scorer.add([s(0, 3, 'Disease', 1)], [s(0, 4, 'Disease', 1)]); // boundary off by one: fp + fn
  return scorer;
}

test('micro and per-label P/R/F1, hand-computed', () => {
  const r = sample(new StrictScorer()).result();
  approx(r, { tp: 2, fp: 2, fn: 2, precision: 0.5, recall: 0.5, f1: 0.5 });
  assert.deepEqual(Object.keys(r.by_label), ['Chemical', 'Disease']);
  approx(r.by_label.Disease, { tp: 1, fp: 1, fn: 2, precision: 0.5, recall: 1 / 3, f1: 0.4 });
  assert.equal(r.by_label.Disease.support, 3);
  approx(r.by_label.Chemical, { tp: 1, fp: 1, fn: 0, precision: 0.5, recall: 1, f1: 2 / 3 });
  assert.equal(r.by_label.Chemical.support, 1);
});

test('length buckets: precision over predicted length, recall over gold length', () => {
  const { by_length } = sample(new StrictScorer()).result();
  // Gene (length 1) is filtered out, so bucket 1 has 2 predictions, not 3.
  approx(by_length['1'], { tp: 1, fp: 1, fn: 1, precision: 0.5, recall: 0.5, f1: 0.5 });
  assert.equal(by_length['1'].support, 2);
  approx(by_length['2'], { tp: 0, fp: 1, fn: 1, precision: 0, recall: 0, f1: 0 });
  assert.equal(by_length['2'].support, 1);
  approx(by_length['3+'], { tp: 1, fp: 0, fn: 0, precision: 1, recall: 1, f1: 1 });
  assert.equal(by_length['3+'].support, 1);
  const long = new StrictScorer();
  long.add([s(0, 9, 'X', 7)], [s(0, 9, 'X', 7)]);
  assert.equal(long.result().by_length['3+'].tp, 1);
});

test('explicit gold labels fix the scored set', () => {
  const r = sample(new StrictScorer(['Disease', 'Gene'])).result();
  assert.deepEqual(Object.keys(r.by_label), ['Disease', 'Gene']);
  approx(r.by_label.Gene, { tp: 0, fp: 1, fn: 0, precision: 0, recall: 0, f1: 0 });
  assert.equal(r.by_label.Gene.support, 0);
  approx(r, { tp: 1, fp: 2, fn: 2, precision: 1 / 3, recall: 1 / 3 });
});

test('a label first seen in predictions is scored once it appears in later gold', () => {
  const sc = new StrictScorer();
  sc.add([], [s(0, 3, 'Chemical', 1)]);
  sc.add([s(5, 8, 'Chemical', 1)], [s(5, 8, 'Chemical', 1)]);
  const r = sc.result();
  approx(r, { tp: 1, fp: 1, fn: 0, precision: 0.5, recall: 1 });
});

test('duplicated gold spans count once; pred-only data scores zero without NaN', () => {
  const sc = new StrictScorer();
  sc.add([s(0, 3, 'X', 1), s(0, 3, 'X', 1)], [s(0, 3, 'X', 1)]);
  approx(sc.result(), { tp: 1, fp: 0, fn: 0, f1: 1 });
  const onlyPred = new StrictScorer();
  onlyPred.add([], [s(0, 1, 'X', 1)]);
  const r = onlyPred.result();
  approx(r, { tp: 0, fp: 0, fn: 0, precision: 0, recall: 0, f1: 0 });
  assert.deepEqual(r.by_label, {});
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
