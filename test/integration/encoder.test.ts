import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EncoderTagger } from '../../src/taggers/encoder.js';
import { toEntitySpans } from '../../src/taggers/types.js';
import { prepareText } from '../../src/text/index.js';
import { ModelLoadError, NoteTimeoutError } from '../../src/errors.js';
import { NoteProcessor } from '../../src/pipeline/processor.js';
import { createRouter } from '../../src/route/index.js';
import { fixtureNotes, waitFor } from '../helpers/pipeline.js';

const MODEL = new URL('../../models/bc5cdr-encoder', import.meta.url).pathname;
let tagger: EncoderTagger;

before(async () => {
  tagger = await EncoderTagger.load(MODEL, { batchSize: 16 });
});
after(async () => {
  await tagger?.close();
});

async function tag(t: EncoderTagger, text: string) {
  const prepared = prepareText(text);
  return toEntitySpans(prepared.sentences, await t.tagSentences(prepared.sentences), t.route);
}

test('the committed model loads from its HF-layout directory', () => {
  assert.deepEqual([...tagger.model.entityTypes].sort(), ['Chemical', 'Disease']);
  assert.equal(tagger.model.id, 'bc5cdr-encoder');
  assert.ok(tagger.maxSequenceLength >= 128);
});

test('spans on a clinical sentence point at the right text', async () => {
  const text =
    'HISTORY OF PRESENT ILLNESS: The patient developed acute renal failure after cisplatin and was treated with furosemide.\nShe also has hypertension and diabetes mellitus.';
  const spans = await tag(tagger, text);
  const found = spans.map((s) => `${s.label}:${text.slice(s.start, s.end)}`);
  for (const expected of ['Chemical:cisplatin', 'Chemical:furosemide', 'Disease:hypertension']) {
    assert.ok(found.includes(expected), `expected ${expected} among ${JSON.stringify(found)}`);
  }
  for (const s of spans) {
    assert.ok(s.score > 0 && s.score <= 1);
    const piece = text.slice(s.start, s.end);
    assert.equal(piece, piece.trim());
  }
});

test('offsets stay right through normalisation and non-BMP characters', async () => {
  // NBSP, a ligature and emoji shift UTF-16 positions; spans must still cover the original characters.
  const text = '🧪🧪 Patient on\u00a0cisplatin reports ﬁbrosis? No: hypertension\u00a0and diabetes.';
  const spans = await tag(tagger, text);
  const pieces = spans.map((s) => text.slice(s.start, s.end));
  assert.ok(pieces.includes('cisplatin'), JSON.stringify(pieces));
  assert.ok(pieces.includes('hypertension'), JSON.stringify(pieces));
});

test('a note longer than the model window is tagged across the whole note', async () => {
  const small = await EncoderTagger.load(MODEL, { maxSequenceLength: 24, windowOverlapWords: 4 });
  try {
    // One long "sentence" (no full stops) far beyond 22 pieces, with entities at the start, middle and end.
    const filler = 'the patient was seen in clinic and reported feeling well with no new complaints today';
    const text = `cisplatin was given , ${filler} , ${filler} , hypertension was noted , ${filler} , ${filler} , finally furosemide was started`;
    const prepared = prepareText(text);
    assert.equal(prepared.sentences.length, 1);
    const windowed = toEntitySpans(prepared.sentences, await small.tagSentences(prepared.sentences), 'encoder');
    const full = toEntitySpans(prepared.sentences, await tagger.tagSentences(prepared.sentences), 'encoder');
    const pieces = windowed.map((s) => text.slice(s.start, s.end));
    const fullPieces = full.map((s) => text.slice(s.start, s.end));
    // Whatever full-context tagging finds among the planted entities, windowed tagging finds too, end of the note included.
    const planted = ['cisplatin', 'hypertension', 'furosemide'].filter((e) => fullPieces.includes(e));
    assert.ok(planted.length >= 2, `the model finds planted entities: ${JSON.stringify(fullPieces)}`);
    for (const e of planted) assert.ok(pieces.includes(e), `windowed tagging found ${e}: ${JSON.stringify(pieces)}`);
    const lastWindowStart = prepared.sentences[0].tokens[Math.max(0, prepared.sentences[0].tokens.length - 20)].start;
    assert.ok(
      windowed.some((s) => s.start >= lastWindowStart) === full.some((s) => s.start >= lastWindowStart),
      'the tail of the note is tagged as with full context',
    );
    // No duplicated or overlapping spans from window overlaps.
    const sorted = [...windowed].sort((a, b) => a.start - b.start);
    for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i].start >= sorted[i - 1].end, 'spans do not overlap');
    assert.ok(windowed.length >= 2 && full.length >= 2);
  } finally {
    await small.close();
  }
});

test('sentences from concurrent notes are batched and each gets its own spans', async () => {
  const notes = fixtureNotes().slice(0, 6);
  const one = await Promise.all(notes.map((n) => tag(tagger, n.text)));
  const again = [];
  for (const n of notes) again.push(await tag(tagger, n.text));
  assert.deepEqual(
    one.map((s) => s.map((x) => [x.start, x.end, x.label])),
    again.map((s) => s.map((x) => [x.start, x.end, x.label])),
  );
});

test('a directory that is not a token-classification export fails with a clear error', async () => {
  await assert.rejects(
    EncoderTagger.load('/nonexistent-model'),
    (e: unknown) => e instanceof ModelLoadError && /config\.json/.test(e.message) && e.code === 'MODEL_LOAD_FAILED',
  );
});

test('a note whose caller gives up (process() signal aborted) releases the encoder: its queued windows are dropped, never run', async () => {
  const small = await EncoderTagger.load(MODEL, { batchSize: 2, batchWaitMs: 0 });
  try {
    const processor = new NoteProcessor(createRouter({ policy: 'encoder', calibration: null }), { encoder: small });
    const text = fixtureNotes()
      .slice(0, 4)
      .map((n) => n.text)
      .join('\n');
    const windows = prepareText(text).sentences.filter((s) => s.tokens.length > 0).length;
    assert.ok(windows > 10, `the note has many windows (${windows})`);
    const controller = new AbortController();
    const note = { noteId: 'cancelled', text, source: null, latencyBudgetMs: null, patientId: null, metadata: null };
    const work = processor.process(note, { topic: 't', partition: 0, offset: '0' }, { signal: controller.signal });
    controller.abort(new NoteTimeoutError('test: the note timed out'));
    await assert.rejects(work, (err: unknown) => err instanceof NoteTimeoutError && err.code === 'NOTE_TIMEOUT');
    await waitFor(() => small.stats.windowsRun + small.stats.windowsDropped >= windows, 10_000, 'every window run or dropped');
    assert.ok(small.stats.windowsDropped > 0, `queued windows were dropped (${JSON.stringify(small.stats)} of ${windows})`);
    assert.ok(small.stats.windowsRun < windows, 'not all windows ran');
    // The encoder is free again: the next note is tagged in full.
    const before = small.stats.windowsRun;
    const next = await processor.process({ ...note, noteId: 'next', text: fixtureNotes()[0].text }, { topic: 't', partition: 0, offset: '1' });
    assert.ok(next.spans.length > 0);
    assert.ok(small.stats.windowsRun > before);
  } finally {
    await small.close();
  }
});

test('batches are cut by length around the oldest window: short and long rows queued together do not share a batch', async () => {
  const t = await EncoderTagger.load(MODEL, { batchSize: 8, batchWaitMs: 0 });
  try {
    // A spy on the real onnxruntime backend: the shapes it is asked to run.
    const backend = (t as unknown as { backend: { run: (rows: readonly number[][]) => Promise<Float32Array[]> } }).backend;
    const run = backend.run.bind(backend);
    const shapes: Array<{ rows: number; lengths: number[] }> = [];
    backend.run = (rows) => {
      shapes.push({ rows: rows.length, lengths: rows.map((r) => r.length) });
      return run(rows);
    };
    const row = (n: number): number[] => [2, ...Array.from({ length: n - 2 }, (_, i) => 1000 + i), 3];
    // Interleaved in arrival order: 16 rows of 6 pieces and 16 of 120.
    const rows = Array.from({ length: 32 }, (_, i) => row(i % 2 === 0 ? 6 : 120));
    const out = await t.logits(rows);
    assert.equal(out.length, 32);
    for (const [i, r] of rows.entries()) assert.equal(out[i].length, r.length * t.labels.length, `row ${i} has its own logits`);
    for (const s of shapes) {
      assert.ok(s.rows <= 8, `at most batchSize rows (${s.rows})`);
      assert.ok(Math.max(...s.lengths) - Math.min(...s.lengths) === 0, `one length per batch: ${JSON.stringify(s.lengths)}`);
    }
    // Each row's logits are the ones it gets alone (a batch pads, never mixes rows).
    const alone = await t.logits([rows[1]]);
    assert.deepEqual(
      Array.from(out[1]).map((v) => v.toFixed(4)),
      Array.from(alone[0]).map((v) => v.toFixed(4)),
    );
  } finally {
    await t.close();
  }
});

test('a note of thousands of sentences is queued in slices and tagged as sentence by sentence; two taggers share one inference thread', async () => {
  const text = fixtureNotes()
    .map((n) => n.text)
    .join('\n\n')
    .repeat(3);
  const sentences = prepareText(text).sentences;
  assert.ok(sentences.length > 600, `more sentences than one slice of 256 (${sentences.length})`);
  const second = await EncoderTagger.load(MODEL, { batchSize: 32 });
  try {
    const [whole, bySentence] = await Promise.all([
      second.tagSentences(sentences),
      (async () => {
        const out = [];
        for (const s of sentences.slice(0, 300)) out.push(...(await tagger.tagSentences([s])));
        return out;
      })(),
    ]);
    assert.equal(whole.length, sentences.length);
    const key = (spans: (typeof whole)[number]): string[] => spans.map((s) => `${s.first}-${s.last}-${s.label}`);
    assert.deepEqual(whole.slice(0, 300).map(key), bySentence.map(key));
  } finally {
    await second.close();
  }
  // Closing one tagger leaves the other's session on the shared thread working.
  assert.ok((await tag(tagger, fixtureNotes()[0].text)).length > 0);
});

test('process.exit() while a batch runs on the inference thread exits with its code (onnxruntime-node would abort the process)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-exit-'));
  try {
    const script = join(dir, 'exit-mid-run.mts');
    const src = (p: string): string => JSON.stringify(new URL(`../../src/${p}`, import.meta.url).pathname);
    await writeFile(
      script,
      [
        `import { EncoderTagger } from ${src('taggers/encoder.ts')};`,
        `import { prepareText } from ${src('text/index.ts')};`,
        `const t = await EncoderTagger.load(${JSON.stringify(MODEL)}, { intraOpThreads: 2 });`,
        `void t.tagSentences(prepareText('Aspirin causes nausea in a patient with diabetes. '.repeat(2000)).sentences);`,
        'await new Promise((r) => setTimeout(r, 50));',
        'process.exit(7);',
      ].join('\n'),
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.once('exit', (c, s) => r([c, s])));
    assert.equal(signal, null, `no crash (${stderr.trim().slice(-300)})`);
    assert.equal(code, 7);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
