import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chunkTag, iob2Tags, iobSpans, parseCsv, readIob, readMtsamplesCsv, readNotesFile, readStandoffDir, type IobSpan } from '../../src/eval/datasets.js';
import { DataFormatError } from '../../src/errors.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bioner-datasets-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const isDataError = (line: RegExp) => (e: unknown) => e instanceof DataFormatError && line.test(e.message);

test('readIob: sentences, \\r and trailing spaces, with and without a final blank line', async () => {
  const body = 'Aspirin\tB-Chemical\r\ninduced\tO  \r\nheart\tB-Disease\r\nattack\tI-Disease\r\n\r\n\r\nNo\tO\r\n';
  const expected = [
    { tokens: ['Aspirin', 'induced', 'heart', 'attack'], tags: ['B-Chemical', 'O', 'B-Disease', 'I-Disease'] },
    { tokens: ['No'], tags: ['O'] },
  ];
  await writeFile(join(dir, 'a.tsv'), body + '\r\n');
  await writeFile(join(dir, 'b.tsv'), body.replace(/\r\n$/, ''));
  assert.deepEqual(await readIob(join(dir, 'a.tsv')), expected);
  assert.deepEqual(await readIob(join(dir, 'b.tsv')), expected);
});

test('readIob: a malformed line names file and line number', async () => {
  const p = join(dir, 'bad.tsv');
  await writeFile(p, 'a\tO\nb\tO\n\nc d O\n');
  await assert.rejects(readIob(p), isDataError(/bad\.tsv:4:/));
  await writeFile(p, 'a\tO\nb\tX-Foo\n');
  await assert.rejects(readIob(p), isDataError(/bad\.tsv:2:/));
  await assert.rejects(readIob(join(dir, 'missing.tsv')), DataFormatError);
});

test('iobSpans: conlleval convention', () => {
  assert.deepEqual(iobSpans(['B-X', 'I-X', 'O', 'I-X', 'I-Y', 'B-Y', 'B-Y', 'I-Y']), [
    { first: 0, last: 1, label: 'X' },
    { first: 3, last: 3, label: 'X' },
    { first: 4, last: 4, label: 'Y' },
    { first: 5, last: 5, label: 'Y' },
    { first: 6, last: 7, label: 'Y' },
  ]);
  assert.deepEqual(iobSpans([]), []);
});

/** Spans as `first-last:label` strings, for compact expectations. */
const chunks = (tags: string[]): string[] => iobSpans(tags).map((sp) => `${sp.first}-${sp.last}:${sp.label}`);

test('chunkTag: reads E-/L- as end and S-/U- as single, types may hold hyphens', () => {
  assert.deepEqual(chunkTag('O'), { prefix: 'O', type: '' });
  assert.deepEqual(chunkTag('B-X'), { prefix: 'B', type: 'X' });
  assert.deepEqual(chunkTag('E-X'), { prefix: 'E', type: 'X' });
  assert.deepEqual(chunkTag('L-X'), { prefix: 'E', type: 'X' });
  assert.deepEqual(chunkTag('S-X'), { prefix: 'S', type: 'X' });
  assert.deepEqual(chunkTag('U-X'), { prefix: 'S', type: 'X' });
  assert.deepEqual(chunkTag('I-Gene-or-protein'), { prefix: 'I', type: 'Gene-or-protein' });
  assert.deepEqual(chunkTag('Disease'), { prefix: 'I', type: 'Disease' });
});

test('iobSpans: I-X after O, at sentence start or after another type starts a chunk', () => {
  assert.deepEqual(chunks(['I-X', 'I-X', 'O', 'I-X']), ['0-1:X', '3-3:X']);
  assert.deepEqual(chunks(['B-Y', 'I-X', 'I-X', 'I-Y']), ['0-0:Y', '1-2:X', '3-3:Y']);
  assert.deepEqual(chunks(['B-X', 'B-X', 'I-X', 'O', 'O', 'I-X']), ['0-0:X', '1-2:X', '5-5:X']);
});

test('iobSpans: IOB1 (B- only between two chunks of one type)', () => {
  assert.deepEqual(chunks(['I-X', 'I-X', 'B-X', 'I-X', 'O', 'I-Y', 'B-Y']), ['0-1:X', '2-3:X', '5-5:Y', '6-6:Y']);
});

test('iobSpans: IOE1 and IOE2 (a chunk ends at E-)', () => {
  // IOE1: E- only where the next token starts another chunk of the same type.
  assert.deepEqual(chunks(['I-X', 'I-X', 'E-X', 'I-X', 'O', 'I-X', 'I-Y']), ['0-2:X', '3-3:X', '5-5:X', '6-6:Y']);
  // IOE2: every chunk ends with E-; a lone E- is a one-token chunk.
  assert.deepEqual(chunks(['E-X', 'I-X', 'E-X', 'O', 'I-Y', 'E-Y', 'E-Y']), ['0-0:X', '1-2:X', '4-5:Y', '6-6:Y']);
  // Folding E- into I- (as bio.ts does for model labels) would merge these into one chunk.
  assert.deepEqual(chunks(['E-X', 'E-X', 'E-X']), ['0-0:X', '1-1:X', '2-2:X']);
});

test('iobSpans: IOBES and BILOU (S-/U- one token, E-/L- end)', () => {
  assert.deepEqual(chunks(['S-X', 'B-X', 'E-X', 'S-X', 'S-X', 'B-Y', 'I-Y', 'E-Y', 'O', 'S-Y']), ['0-0:X', '1-2:X', '3-3:X', '4-4:X', '5-7:Y', '9-9:Y']);
  assert.deepEqual(chunks(['U-X', 'B-X', 'L-X', 'U-X', 'B-Y', 'I-Y', 'L-Y', 'I-Y']), ['0-0:X', '1-2:X', '3-3:X', '4-6:Y', '7-7:Y']);
  // B- right after E-, and an I- after S-, start chunks; B-X I-X with no E- still ends at the sentence end.
  assert.deepEqual(chunks(['B-X', 'E-X', 'B-X', 'I-X']), ['0-1:X', '2-3:X']);
  assert.deepEqual(chunks(['S-X', 'I-X', 'E-X']), ['0-0:X', '1-2:X']);
  // B-X followed by E-Y: the type changes, so two chunks.
  assert.deepEqual(chunks(['B-X', 'E-Y']), ['0-0:X', '1-1:Y']);
});

test('readIob accepts IOBES and BILOU tag files', async () => {
  const p = join(dir, 'iobes.tsv');
  await writeFile(p, 'a\tS-X\nb\tB-Y\nc\tE-Y\n\nd\tU-X\ne\tL-X\n');
  const data = await readIob(p);
  assert.deepEqual(
    data.map((d) => d.tags),
    [
      ['S-X', 'B-Y', 'E-Y'],
      ['U-X', 'L-X'],
    ],
  );
  assert.deepEqual(chunks(data[0].tags), ['0-0:X', '1-2:Y']);
  assert.deepEqual(chunks(data[1].tags), ['0-0:X', '1-1:X']);
});

test('iob2Tags: spans back to IOB2, which iobSpans reads back unchanged', () => {
  const spans: IobSpan[] = [
    { first: 3, last: 3, label: 'Y' },
    { first: 0, last: 1, label: 'X' },
    { first: 2, last: 2, label: 'X' },
  ];
  const tags = iob2Tags(5, spans);
  assert.deepEqual(tags, ['B-X', 'I-X', 'B-X', 'B-Y', 'O']);
  assert.deepEqual(iobSpans(tags), [spans[1], spans[2], spans[0]]);
  assert.deepEqual(iob2Tags(2, []), ['O', 'O']);
});

test('readStandoffDir: code-point offsets, discontinuous spans, mismatches, sorted ids', async () => {
  const sd = join(dir, 'standoff');
  await mkdir(sd);
  // U+1D518 is one code point but two UTF-16 units: every brat offset after it is one less than the JS offset.
  const text = '\u{1D518} aspirin, then heart X attack.\n';
  assert.equal(text.slice(3, 10), 'aspirin');
  await writeFile(join(sd, 'b.txt'), text);
  await writeFile(
    join(sd, 'b.ann'),
    [
      'T1\tChemical 2 9\taspirin',
      'T2\tDisease 16 21;24 30\theart attack',
      '#1\tAnnotatorNotes T1\tnote',
      'R1\tRel Arg1:T1 Arg2:T2',
      'T3\tChemical 2 9\tAspirin',
      '',
    ].join('\r\n'),
  );
  await writeFile(join(sd, 'a.txt'), 'Nothing here.');
  await writeFile(join(sd, 'a.ann'), '');
  const docs = await readStandoffDir(sd);
  assert.deepEqual(
    docs.map((d) => d.id),
    ['a', 'b'],
  );
  assert.deepEqual(docs[0], { id: 'a', text: 'Nothing here.', spans: [], mismatches: 0 });
  const b = docs[1];
  assert.equal(b.text, text);
  assert.deepEqual(b.spans, [
    { start: 3, end: 10, label: 'Chemical' },
    { start: 3, end: 10, label: 'Chemical' },
    { start: 17, end: 31, label: 'Disease' },
  ]);
  assert.equal(text.slice(17, 31), 'heart X attack');
  // T3's text field ("Aspirin") differs from the text: counted, not thrown.
  assert.equal(b.mismatches, 1);
});

test('readStandoffDir: unpaired files and bad T lines are errors', async () => {
  const sd = join(dir, 'standoff-bad');
  await mkdir(sd);
  await writeFile(join(sd, 'x.txt'), 'short');
  await writeFile(join(sd, 'x.ann'), 'T1\tA 0 2\tsh\nT2\tA 3 99\tzz\n');
  await assert.rejects(readStandoffDir(sd), isDataError(/x\.ann:2:/));
  await writeFile(join(sd, 'x.ann'), 'T1\tA 0-2\tsh\n');
  await assert.rejects(readStandoffDir(sd), isDataError(/x\.ann:1:/));
  await writeFile(join(sd, 'x.ann'), '');
  await writeFile(join(sd, 'y.txt'), 'lonely');
  await assert.rejects(readStandoffDir(sd), isDataError(/y\.txt has no \.ann/));
});

test('CSV: quotes, "" escapes, newlines inside quotes, CRLF, empty transcriptions skipped', async () => {
  const p = join(dir, 'notes.csv');
  await writeFile(
    p,
    '\uFEFF,description,transcription,keywords\r\n' +
      '0,plain,"SUBJECTIVE:,  She said ""no"".\r\nPLAN: rest.",a\r\n' +
      '1,empty,"  ",b\r\n' +
      '2,unquoted,Simple note,c\r\n' +
      '3,last,"x",\r\n',
  );
  assert.deepEqual(await readMtsamplesCsv(p), ['SUBJECTIVE:,  She said "no".\r\nPLAN: rest.', 'Simple note', 'x']);
  assert.deepEqual(await readNotesFile(p), [{ text: 'SUBJECTIVE:,  She said "no".\r\nPLAN: rest.' }, { text: 'Simple note' }, { text: 'x' }]);
  assert.deepEqual(parseCsv('a,b\n1,\n\n"q"",",2'), [
    ['a', 'b'],
    ['1', ''],
    ['q",', '2'],
  ]);
  assert.deepEqual(parseCsv('a,'), [['a', '']]);
  assert.throws(() => parseCsv('a\n"open\n', 'f.csv'), isDataError(/f\.csv:2: unterminated/));
  assert.throws(() => parseCsv('"a"b\n', 'f.csv'), isDataError(/f\.csv:1:/));
  assert.deepEqual(parseCsv('a,b\n1,"cut', 'f.csv', { acceptTruncatedEnd: true }), [
    ['a', 'b'],
    ['1', 'cut'],
  ]);
  // A file cut inside the last quoted field keeps the partial record (missing fields empty).
  await writeFile(p, 'id,transcription,keywords\n1,"whole",k\n2,"cut off mid-no');
  assert.deepEqual(await readMtsamplesCsv(p), ['whole', 'cut off mid-no']);
  await writeFile(p, 'id,text\n1,x\n');
  await assert.rejects(readMtsamplesCsv(p), isDataError(/no "transcription" column/));
  await writeFile(p, 'id,transcription\n1,x,extra\n');
  await assert.rejects(readNotesFile(p), isDataError(/record 1 has 3 fields/));
  await writeFile(p, 'id,transcription\nn1,hello\n');
  assert.deepEqual(await readNotesFile(p), [{ id: 'n1', text: 'hello' }]);
});

test('readNotesFile: JSONL with optional ids; bad lines name the line', async () => {
  const p = join(dir, 'notes.jsonl');
  await writeFile(p, '{"id":"a","text":"one"}\n\n{"text":"two"}\r\n{"id":7,"text":""}\n');
  assert.deepEqual(await readNotesFile(p), [{ id: 'a', text: 'one' }, { text: 'two' }, { id: '7', text: '' }]);
  await writeFile(p, '{"text":"one"}\n{"text": 3}\n');
  await assert.rejects(readNotesFile(p), isDataError(/notes\.jsonl:2:/));
  await writeFile(p, '{"text":"one"}\n{not json\n');
  await assert.rejects(readNotesFile(p), isDataError(/notes\.jsonl:2: invalid JSON/));
  await assert.rejects(readNotesFile(join(dir, 'notes.txt')), isDataError(/unsupported/));
});

const DATA = resolve(dirname(fileURLToPath(import.meta.url)), '../../../shared/data');

test('smoke: real corpora (skipped without ../shared/data)', { skip: !existsSync(DATA) && 'no ../shared/data' }, async (t) => {
  for (const name of ['BC5CDR-IOB', 'NCBI-disease-IOB']) {
    const file = join(DATA, name, 'devel.tsv');
    if (!existsSync(file)) continue;
    const sentences = await readIob(file);
    let entities = 0;
    let long = 0;
    let bTags = 0;
    for (const s of sentences) {
      for (const sp of iobSpans(s.tags)) {
        entities++;
        if (sp.last - sp.first >= 2) long++;
      }
      bTags += s.tags.filter((x) => x.startsWith('B-')).length;
    }
    assert.ok(sentences.length > 0 && entities > 0);
    // Gold files are well formed: every entity opens with a B- tag.
    assert.equal(entities, bTags);
    t.diagnostic(`${name} devel: ${sentences.length} sentences, ${entities} entities, ${((100 * long) / entities).toFixed(1)}% 3+ words`);
  }
  const jnlpba = join(DATA, 'JNLPBA-standoff', 'devel');
  if (existsSync(jnlpba)) {
    const docs = await readStandoffDir(jnlpba);
    assert.equal(docs.length, 200);
    const mismatches = docs.reduce((a, d) => a + d.mismatches, 0);
    assert.equal(mismatches, 0);
    const entities = docs.reduce((a, d) => a + d.spans.length, 0);
    assert.ok(entities > 0);
    t.diagnostic(`JNLPBA devel: ${docs.length} docs, ${entities} entities, ${mismatches} mismatches`);
  }
});
