import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseCsv } from '../../src/eval/datasets.js';
import { splitSentences } from '../../src/text/sentences.js';

// The shared data sits beside the repository (../shared/data), in CI too.
const MTSAMPLES = fileURLToPath(new URL('../../../shared/data/mtsamples/mtsamples.csv', import.meta.url));
const readCsv = (text: string): string[][] => parseCsv(text, 'mtsamples.csv', { acceptTruncatedEnd: true });

const sents = (s: string): string[] => splitSentences(s).map((x) => s.slice(x.start, x.end));

/** Minimal RFC 4180 reader: quoted fields, doubled quotes, newlines inside quotes. */

function transcriptions(): string[] {
  const rows = readCsv(readFileSync(MTSAMPLES, 'utf8'));
  const col = rows[0].indexOf('transcription');
  return rows.slice(1).map((r) => r[col]);
}

test('section headers are their own sentences', () => {
  const s = 'HISTORY OF PRESENT ILLNESS: The patient is a 45-year-old man. He has chest pain.\nMEDICATIONS: Aspirin 81 mg daily.';
  assert.deepEqual(sents(s), [
    'HISTORY OF PRESENT ILLNESS:',
    'The patient is a 45-year-old man.',
    'He has chest pain.',
    'MEDICATIONS:',
    'Aspirin 81 mg daily.',
  ]);
});

test('mtsamples comma artefact after headers and sentence ends', () => {
  const s =
    'SUBJECTIVE:,  This 23-year-old white female presents with allergies.,MEDICATIONS: , Her only medication is Allegra.,ALLERGIES: , None.,PLAN:,1.  She will try Zyrtec.,2.  Samples given.';
  assert.deepEqual(sents(s), [
    'SUBJECTIVE:',
    'This 23-year-old white female presents with allergies.',
    'MEDICATIONS:',
    'Her only medication is Allegra.',
    'ALLERGIES:',
    'None.',
    'PLAN:',
    '1.  She will try Zyrtec.',
    '2.  Samples given.',
  ]);
  // Header, then a comma and more text with no sentence end in between.
  assert.deepEqual(sents('ANESTHESIA: , General,COMPLICATIONS: , None.'), ['ANESTHESIA:', 'General', 'COMPLICATIONS:', 'None.']);
  assert.deepEqual(sents('Dear Dr. XYZ: ,XXXX was seen today.'), ['Dear Dr. XYZ:', 'XXXX was seen today.']);
});

test('newline-separated numbered and bulleted lists', () => {
  const s = 'Medications:\n1. Aspirin 81 mg daily\n2) Lisinopril 10 mg daily\n- Metformin 500 mg b.i.d.\n* Atorvastatin 40 mg\n• Insulin glargine';
  assert.deepEqual(sents(s), [
    'Medications:',
    '1. Aspirin 81 mg daily',
    '2) Lisinopril 10 mg daily',
    '- Metformin 500 mg b.i.d.',
    '* Atorvastatin 40 mg',
    '• Insulin glargine',
  ]);
});

test('inline numbered lists split before the number', () => {
  assert.deepEqual(sents('Plan: 1. Aspirin 81 mg daily. 2. Lisinopril 10 mg daily. 3. Follow up.'), [
    'Plan:',
    '1. Aspirin 81 mg daily.',
    '2. Lisinopril 10 mg daily.',
    '3. Follow up.',
  ]);
  assert.deepEqual(sents('1. Aspirin 81 mg daily 2. Lisinopril 10 mg daily'), ['1. Aspirin 81 mg daily', '2. Lisinopril 10 mg daily']);
});

test('blank lines are boundaries; single newlines inside prose are soft wraps', () => {
  assert.deepEqual(sents('Assessment stable\n\nPlan continue'), ['Assessment stable', 'Plan continue']);
  assert.deepEqual(sents('The patient was seen\nin clinic today.'), ['The patient was seen\nin clinic today.']);
  assert.deepEqual(sents('Lungs: clear\nHeart: regular rate'), ['Lungs: clear', 'Heart: regular rate']);
});

test('no split after titles, Latin abbreviations, decimals, times', () => {
  assert.deepEqual(sents('Seen by Dr. Smith and Mrs. Jones at St. Mary. She is stable.'), ['Seen by Dr. Smith and Mrs. Jones at St. Mary.', 'She is stable.']);
  assert.deepEqual(sents('Use NSAIDs, e.g. Ibuprofen, i.e. Advil, vs. Tylenol. Done.'), ['Use NSAIDs, e.g. Ibuprofen, i.e. Advil, vs. Tylenol.', 'Done.']);
  assert.deepEqual(sents('Give 2.5 mg of drug in 0.9% saline at 10:30. Recheck at 12.'), ['Give 2.5 mg of drug in 0.9% saline at 10:30.', 'Recheck at 12.']);
  assert.deepEqual(sents('As shown by Smith et al. The results were clear.'), ['As shown by Smith et al. The results were clear.']);
  assert.deepEqual(sents('Seen with J. Smith today.'), ['Seen with J. Smith today.']);
  assert.deepEqual(sents('See Fig. 2 and No. 5 for details.'), ['See Fig. 2 and No. 5 for details.']);
});

test('units and dosing abbreviations end sentences unless the dose continues', () => {
  assert.deepEqual(sents('Lasix 40 mg. She tolerated it.'), ['Lasix 40 mg.', 'She tolerated it.']);
  assert.deepEqual(sents('Lasix 40 mg. PO daily.'), ['Lasix 40 mg. PO daily.']);
  assert.deepEqual(sents('Tylenol 650 mg p.o. q.4h. p.r.n. pain.  Return in 2 weeks.'), ['Tylenol 650 mg p.o. q.4h. p.r.n. pain.', 'Return in 2 weeks.']);
  assert.deepEqual(sents('Mass of 4.0 cm.  The margins were clear.'), ['Mass of 4.0 cm.', 'The margins were clear.']);
  assert.deepEqual(sents('Followed by Dr. X.  He is stable.'), ['Followed by Dr. X.', 'He is stable.']);
});

test('! ? quotes and brackets', () => {
  assert.deepEqual(sents('Is he febrile? No! "Never," he said. (See labs.) Done.'), ['Is he febrile?', 'No!', '"Never," he said.', '(See labs.)', 'Done.']);
  assert.deepEqual(sents('He said "stop." Then left.'), ['He said "stop."', 'Then left.']);
});

test('title-case label lines, inline bullets, numbered headers, thousands separators', () => {
  assert.deepEqual(sents('History of Present Illness:\nThe patient is well.'), ['History of Present Illness:', 'The patient is well.']);
  assert.deepEqual(sents('Meds • Aspirin • Lisinopril'), ['Meds', '• Aspirin', '• Lisinopril']);
  assert.deepEqual(sents('PROCEDURES:,1.  RIGHT ARTERIAL LINE:  ,The arm was prepped.'), ['PROCEDURES:', '1.  RIGHT ARTERIAL LINE:', 'The arm was prepped.']);
  assert.deepEqual(sents('2-D M-MODE: , Normal.'), ['2-D M-MODE:', 'Normal.']);
  assert.deepEqual(sents('Platelets 250,000.  Coags normal.'), ['Platelets 250,000.', 'Coags normal.']);
  assert.deepEqual(sents('WBC 12.5, Hgb 10.2.'), ['WBC 12.5, Hgb 10.2.']);
});

test('bounds are trimmed and empty sentences dropped', () => {
  assert.deepEqual(splitSentences(''), []);
  assert.deepEqual(splitSentences('  \n\n , \t'), []);
  const s = '  First one.   Second one.  ';
  assert.deepEqual(sents(s), ['First one.', 'Second one.']);
});

test('real mtsamples transcriptions: sensible properties', { skip: !existsSync(MTSAMPLES) && 'mtsamples.csv not available' }, () => {
  const notes = transcriptions();
  assert.equal(notes.length, 322);
  let sentences = 0;
  for (const note of notes) {
    const spans = splitSentences(note);
    let prevEnd = 0;
    for (const sp of spans) {
      sentences++;
      const x = note.slice(sp.start, sp.end);
      assert.ok(sp.start >= prevEnd && sp.end > sp.start, 'ordered, non-overlapping, non-empty');
      prevEnd = sp.end;
      assert.equal(x, x.trim());
      // Never starts mid-word.
      if (sp.start > 0) assert.ok(!/[\p{L}\p{N}]/u.test(note[sp.start - 1]) || !/[\p{L}\p{N}]/u.test(note[sp.start]), `mid-word start: ${x.slice(0, 40)}`);
      // Never ends right after a title.
      assert.ok(!/\b(Dr|Mr|Mrs|Ms|St)\.$/.test(x), `split after title: ${x.slice(-40)}`);
      assert.ok(!x.startsWith(','), 'artefact comma trimmed');
      // The ".,HEADER:" artefact is always split.
      assert.ok(!/[.]\s*,[A-Z][A-Z ]{2,}:/.test(x), `missed artefact header: ${x.slice(0, 80)}`);
    }
  }
  assert.ok(sentences > 10000, `only ${sentences} sentences`);
  // Spot checks on three notes.
  const first = sents(notes[0]);
  assert.equal(first[0], 'SUBJECTIVE:');
  assert.ok(first.includes('Her only medication currently is Ortho Tri-Cyclen and the Allegra.'));
  assert.ok(first.includes('2.  Samples of Nasonex two sprays in each nostril given for three weeks.'));
  const withDr = notes.find((n) => n.includes('Dr. X.  He'));
  if (withDr !== undefined) assert.ok(sents(withDr).some((x) => x.startsWith('He ')));
  const op = sents(notes.find((n) => n.includes('(4.0 cm in diameter)')) ?? '');
  assert.ok(op.includes('Cystoscopy, transurethral resection of medium bladder tumor (4.0 cm in diameter), and direct bladder biopsy.'));
});
