import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BatchQueue, type BatchQueueOptions } from '../../src/taggers/batch-queue.js';
import { ErrorCodes, LlmError, RouterError, TaggerError } from '../../src/errors.js';

/** A backend that answers each row's length back and records what each call got; `hold` keeps calls open until released. */
function recorder(options: { hold?: boolean } = {}) {
  const calls: Array<{ items: number[]; model: string | undefined; stop: AbortSignal }> = [];
  const waiting: Array<() => void> = [];
  let running = 0;
  let mostAtOnce = 0;
  const run = async (items: number[], stop: AbortSignal, model: string | undefined): Promise<string[]> => {
    calls.push({ items: [...items], model, stop });
    running++;
    mostAtOnce = Math.max(mostAtOnce, running);
    if (options.hold === true) await new Promise<void>((r) => waiting.push(r));
    else await new Promise((r) => setImmediate(r));
    running--;
    return items.map((n) => `row ${n}`);
  };
  const releaseAll = async (): Promise<void> => {
    while (waiting.length > 0) waiting.shift()?.();
    await new Promise((r) => setImmediate(r));
  };
  return { calls, run, releaseAll, mostAtOnce: () => mostAtOnce };
}

const base: BatchQueueOptions = { kind: 'test', batchSize: 4, batchWaitMs: 0, maxConcurrentBatches: 1 };
const until = async (cond: () => boolean): Promise<void> => {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(cond(), 'condition reached');
};

describe('BatchQueue', () => {
  test('rows of many callers share batches of at most batchSize; with the backend idle a partial batch waits for more rows', async () => {
    const rec = recorder({ hold: true });
    const q = new BatchQueue<number, string>({ ...base, batchWaitMs: 60_000 }, rec.run);
    const first = [1, 2].map((n) => q.enqueue(n, n, undefined));
    await new Promise((r) => setImmediate(r));
    assert.equal(rec.calls.length, 0, 'two rows wait for more');
    // Two more fill the batch: it leaves at once, long before the wait is over.
    const more = [3, 4, 5, 6].map((n) => q.enqueue(n, n, undefined));
    await until(() => rec.calls.length === 1);
    // A batch that ends takes the queue at once, full or not: the backend would idle otherwise.
    await rec.releaseAll();
    await until(() => rec.calls.length === 2);
    await rec.releaseAll();
    assert.deepEqual(await Promise.all([...first, ...more]), ['row 1', 'row 2', 'row 3', 'row 4', 'row 5', 'row 6']);
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [
        [1, 2, 3, 4],
        [5, 6],
      ],
    );
    assert.equal(q.stats.run, 6);
  });

  test('a partial batch leaves when batchWaitMs is over', async () => {
    const rec = recorder();
    const q = new BatchQueue<number, string>({ ...base, batchWaitMs: 5 }, rec.run);
    assert.equal(await q.enqueue(1, 1, undefined), 'row 1');
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [[1]],
    );
  });

  test('without a cost, the shortest queued rows go first', async () => {
    const rec = recorder({ hold: true });
    const q = new BatchQueue<number, string>({ ...base, batchSize: 2 }, rec.run);
    const all = [9, 7, 1, 8, 2].map((n) => q.enqueue(n, n, undefined));
    await until(() => rec.calls.length === 1);
    await rec.releaseAll();
    await until(() => rec.calls.length === 2);
    await rec.releaseAll();
    await until(() => rec.calls.length === 3);
    await rec.releaseAll();
    await Promise.all(all);
    // The first row runs alone (nothing else was queued yet); then the rest by length.
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [[9], [1, 2], [7, 8]],
    );
  });

  test('with a cost, each batch holds the oldest row and rows of one length stay together', async () => {
    const rec = recorder({ hold: true });
    const q = new BatchQueue<number, string>({ ...base, batchSize: 4, batchCost: { stepRows: 1, callCells: 0 } }, rec.run);
    const lengths = [3, 50, 3, 50, 50, 3, 3, 3];
    const all = lengths.map((n) => q.enqueue(n, n, undefined));
    for (let k = 1; k <= 3; k++) {
      await until(() => rec.calls.length === k);
      await rec.releaseAll();
    }
    await Promise.all(all);
    // The first row goes alone; then the oldest left is a 50, whose batch is the other 50s, never padded with 3s; then the 3s.
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [[3], [50, 50, 50], [3, 3, 3, 3]],
    );
  });

  for (const cost of [undefined, { stepRows: 1, callCells: 0 }]) {
    test(`rows for different served models never share a batch (${cost === undefined ? 'no cost' : 'cut by cost'})`, async () => {
      const rec = recorder({ hold: true });
      const q = new BatchQueue<number, string>({ ...base, batchSize: 8, batchCost: cost }, rec.run);
      const blocker = q.enqueue(0, 1, undefined, 'a');
      await until(() => rec.calls.length === 1);
      const rest = [1, 2, 3, 4].map((n) => q.enqueue(n, 1, undefined, n % 2 === 0 ? 'a' : 'b'));
      for (let k = 2; k <= 3; k++) {
        await rec.releaseAll();
        await until(() => rec.calls.length === k);
      }
      await rec.releaseAll();
      await Promise.all([blocker, ...rest]);
      assert.deepEqual(
        rec.calls.map((c) => [c.model, c.items]),
        [
          ['a', [0]],
          ['b', [1, 3]],
          ['a', [2, 4]],
        ],
      );
    });
  }

  test('a queued row whose caller left is dropped unrun and rejects with its reason', async () => {
    const rec = recorder({ hold: true });
    const q = new BatchQueue<number, string>({ ...base, batchSize: 1 }, rec.run);
    const first = q.enqueue(1, 1, undefined);
    await until(() => rec.calls.length === 1);
    const ac = new AbortController();
    const reason = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'budget spent');
    const left = q.enqueue(2, 1, ac.signal);
    const stays = q.enqueue(3, 1, undefined);
    ac.abort(reason);
    const leftRejects = assert.rejects(left, (err: unknown) => err === reason);
    await rec.releaseAll();
    await leftRejects;
    await until(() => rec.calls.length === 2);
    await rec.releaseAll();
    assert.equal(await first, 'row 1');
    assert.equal(await stays, 'row 3');
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [[1], [3]],
    );
    assert.deepEqual(q.stats, { run: 2, dropped: 1 });
  });

  test('a running batch is stopped once every caller left, and not while one still waits', async () => {
    const rec = recorder({ hold: true });
    const q = new BatchQueue<number, string>({ ...base, batchSize: 2, batchWaitMs: 5 }, rec.run);
    const a = new AbortController();
    const b = new AbortController();
    const ra = q.enqueue(1, 1, a.signal);
    const rb = q.enqueue(2, 1, b.signal);
    const raRejects = assert.rejects(ra, (err: unknown) => err instanceof RouterError && err.message === 'a left');
    await until(() => rec.calls.length === 1);
    const { stop } = rec.calls[0];
    a.abort(new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'a left'));
    assert.equal(stop.aborted, false, 'one caller still waits');
    const reasonB = new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'b left');
    b.abort(reasonB);
    assert.equal(stop.aborted, true, 'every caller left');
    const rbRejects = assert.rejects(rb, (err: unknown) => err === reasonB);
    await rec.releaseAll();
    await raRejects;
    await rbRejects;

    // One caller leaves, the other stays: the batch runs to the end and the one who stayed gets its answer.
    const c = new AbortController();
    const rc = q.enqueue(3, 1, c.signal);
    const rd = q.enqueue(4, 1, undefined);
    await until(() => rec.calls.length === 2);
    c.abort(new LlmError(ErrorCodes.LLM_BUDGET_EXCEEDED, 'c left'));
    assert.equal(rec.calls[1].stop.aborted, false);
    await rec.releaseAll();
    assert.equal(await rd, 'row 4');
    assert.equal(await rc, 'row 3');
  });

  test('a failing backend rejects every row of its batch with a typed error; later batches still run', async () => {
    let fail = true;
    const q = new BatchQueue<number, string>({ ...base, batchSize: 2, batchWaitMs: 5 }, async (items) => {
      if (fail) {
        fail = false;
        throw new Error('device lost');
      }
      return items.map(String);
    });
    const failed = [q.enqueue(1, 1, undefined), q.enqueue(2, 1, undefined)];
    await Promise.all(
      failed.map((f) =>
        assert.rejects(
          f,
          (err: unknown) =>
            err instanceof TaggerError && err.code === ErrorCodes.INFERENCE_FAILED && /test failed on a batch of 2 rows: device lost/.test(err.message),
        ),
      ),
    );
    assert.equal(await q.enqueue(3, 1, undefined), '3');
  });

  test('a backend answering the wrong number of rows is an inference failure', async () => {
    const q = new BatchQueue<number, string>(base, async () => ['only one', 'too many']);
    await assert.rejects(
      q.enqueue(1, 1, undefined),
      (err: unknown) => err instanceof TaggerError && err.code === ErrorCodes.INFERENCE_FAILED && /answered 2 rows for 1/.test(err.message),
    );
  });

  test('queuesAhead sends further full batches while one runs, but never a partial one', async () => {
    const rec = recorder({ hold: true });
    // No wait for partial batches: whatever waits here waits for room, not for a timer.
    const q = new BatchQueue<number, string>({ ...base, batchSize: 2, batchWaitMs: 0, queuesAhead: 1 }, rec.run);
    const rows = [1, 2, 3, 4, 5].map((n) => q.enqueue(n, 1, undefined));
    await until(() => rec.calls.length === 2);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      rec.calls.map((c) => c.items),
      [[1], [2, 3]],
      'the first row went alone to an idle backend; the next full batch went ahead, the fifth row (a partial batch) waits',
    );
    assert.equal(rec.mostAtOnce(), 2);
    await rec.releaseAll();
    await until(() => rec.calls.length === 3);
    await rec.releaseAll();
    assert.deepEqual(await Promise.all(rows), ['row 1', 'row 2', 'row 3', 'row 4', 'row 5']);
  });

  test('close waits for queued rows, then refuses new ones', async () => {
    const rec = recorder();
    const q = new BatchQueue<number, string>({ ...base, batchWaitMs: 50 }, rec.run);
    const pending = q.enqueue(1, 1, undefined);
    await q.close();
    assert.equal(await pending, 'row 1');
    await assert.rejects(q.enqueue(2, 1, undefined), (err: unknown) => err instanceof TaggerError && err.code === ErrorCodes.TAGGER_UNAVAILABLE);
  });
});
