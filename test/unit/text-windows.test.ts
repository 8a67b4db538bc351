import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planWindows, type TextWindow } from '../../src/text/windows.js';
import { InternalError } from '../../src/errors.js';

function checkPlan(counts: number[], maxPieces: number, overlap: number, ws: TextWindow[]): void {
  const n = counts.length;
  const ctx = `counts=${JSON.stringify(counts)} max=${maxPieces} overlap=${overlap} windows=${JSON.stringify(ws)}`;
  if (n === 0) {
    assert.deepEqual(ws, [], ctx);
    return;
  }
  assert.ok(ws.length >= 1, ctx);
  assert.equal(ws[0].start, 0, ctx);
  assert.equal(ws[0].ownStart, 0, ctx);
  assert.equal(ws[ws.length - 1].end, n, ctx);
  assert.equal(ws[ws.length - 1].ownEnd, n, ctx);
  for (let k = 0; k < ws.length; k++) {
    const w = ws[k];
    assert.ok(w.start < w.end, ctx);
    // own ranges: non-empty, inside the window, contiguous (together: a partition of [0, n)).
    assert.ok(w.start <= w.ownStart && w.ownStart < w.ownEnd && w.ownEnd <= w.end, ctx);
    if (k > 0) assert.equal(w.ownStart, ws[k - 1].ownEnd, ctx);
    let sum = 0;
    for (let j = w.start; j < w.end; j++) sum += counts[j];
    // Fits, unless it is a single word that is too long on its own.
    assert.ok(sum <= maxPieces || (w.end - w.start === 1 && counts[w.start] > maxPieces), ctx);
    if (k > 0) {
      const prev = ws[k - 1];
      assert.ok(w.start > prev.start && w.end > prev.end, ctx);
      assert.ok(w.start <= prev.end, `gap between windows: ${ctx}`);
      assert.ok(prev.end - w.start <= overlap, `overlap too large: ${ctx}`);
    }
  }
}

test('empty input gives no windows', () => {
  assert.deepEqual(planWindows([], 10, 2), []);
});

test('one window when everything fits', () => {
  assert.deepEqual(planWindows([1, 2, 3], 6, 4), [{ start: 0, end: 3, ownStart: 0, ownEnd: 3 }]);
});

test('overlapping windows split ownership at the middle of the overlap', () => {
  // 10 words of 1 piece, 6 per window, overlap 2.
  const ws = planWindows(Array(10).fill(1), 6, 2);
  assert.deepEqual(ws, [
    { start: 0, end: 6, ownStart: 0, ownEnd: 5 },
    { start: 4, end: 10, ownStart: 5, ownEnd: 10 },
  ]);
});

test('a word longer than maxPieces gets a window of its own', () => {
  const ws = planWindows([2, 2, 50, 2, 2], 6, 3);
  checkPlan([2, 2, 50, 2, 2], 6, 3, ws);
  assert.ok(ws.some((w) => w.start === 2 && w.end === 3 && w.ownStart === 2 && w.ownEnd === 3));
});

test('zero overlap gives adjacent windows', () => {
  const ws = planWindows([3, 3, 3, 3], 6, 0);
  assert.deepEqual(ws, [
    { start: 0, end: 2, ownStart: 0, ownEnd: 2 },
    { start: 2, end: 4, ownStart: 2, ownEnd: 4 },
  ]);
});

test('invalid arguments throw', () => {
  assert.throws(() => planWindows([1], 0, 1), InternalError);
  assert.throws(() => planWindows([1], 5, -1), InternalError);
  assert.throws(() => planWindows([1, -2], 5, 1), InternalError);
});

test('random piece counts (seeded): partition, fit, bounded overlap', () => {
  let seed = 2024;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  for (let round = 0; round < 2000; round++) {
    const n = Math.floor(rand() * 120);
    const maxPieces = 1 + Math.floor(rand() * 40);
    const overlap = Math.floor(rand() * 12);
    const counts: number[] = [];
    for (let k = 0; k < n; k++) {
      const r = rand();
      counts.push(r < 0.03 ? maxPieces + 1 + Math.floor(rand() * 5) : r < 0.08 ? 0 : 1 + Math.floor(rand() * 5));
    }
    const ws = planWindows(counts, maxPieces, overlap);
    checkPlan(counts, maxPieces, overlap, ws);
    const total = counts.reduce((a, b) => a + b, 0);
    if (total <= maxPieces && n > 0) assert.equal(ws.length, 1);
  }
});
