/**
 * The scorer against conlleval. `conlleval()` below is a line-by-line port of
 * conlleval.pl's counting loop with the chunk tables of its IOBES extension
 * (the rules seqeval also uses), written out pair by pair as the Perl has
 * them, independent of src/eval/datasets.ts. It reads the text of a
 * `--predictions` file, so the file format is checked along with the counts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatReport, reportJson } from '../../src/cli/eval.js';
import { iobSpans } from '../../src/eval/datasets.js';
import { conllSentence, conllToken, evaluateIob } from '../../src/eval/evaluate.js';
import { mulberry32 } from '../../src/eval/random.js';
import { StrictScorer, type EvalSpan } from '../../src/eval/scorer.js';
import { DataFormatError } from '../../src/errors.js';
import type { Tagger } from '../../src/taggers/types.js';
import type { Sentence, TokenSpan } from '../../src/types.js';

// ---- reference: conlleval.pl -------------------------------------------------

const has = (pairs: string[], prev: string, tag: string): boolean => pairs.includes(`${prev}${tag}`);

// endOfChunk / startOfChunk pairs (previous tag, tag), as listed in the Perl.
const END_PAIRS = ['BB', 'BO', 'BS', 'IB', 'IS', 'IO', 'EE', 'EI', 'EO', 'ES', 'EB', 'SE', 'SI', 'SO', 'SS', 'SB'];
const START_PAIRS = ['BB', 'IB', 'OB', 'SB', 'EB', 'BS', 'IS', 'OS', 'SS', 'ES', 'OI', 'SI', 'EI', 'SE', 'EE', 'OE'];

function endOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  return has(END_PAIRS, prevTag, tag) || (prevTag !== 'O' && prevTag !== '.' && prevType !== type);
}
function startOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  return has(START_PAIRS, prevTag, tag) || (tag !== 'O' && tag !== '.' && prevType !== type);
}

interface ConllCounts {
  correct: number;
  foundCorrect: number;
  foundGuessed: number;
  byType: Map<string, { correct: number; foundCorrect: number; foundGuessed: number }>;
}

function conlleval(text: string): ConllCounts {
  const boundary = '-X-';
  const counts: ConllCounts = { correct: 0, foundCorrect: 0, foundGuessed: 0, byType: new Map() };
  const of = (t: string) => {
    let c = counts.byType.get(t);
    if (c === undefined) {
      c = { correct: 0, foundCorrect: 0, foundGuessed: 0 };
      counts.byType.set(t, c);
    }
    return c;
  };
  const split = (tag: string): [string, string] => {
    const m = /^([^-]*)-(.*)$/.exec(tag);
    return m === null ? [tag, ''] : [m[1], m[2]];
  };
  let nFeatures = -1;
  let inCorrect = false;
  let [lastCorrect, lastCorrectType, lastGuessed, lastGuessedType] = ['O', '', 'O', ''];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  for (const line of lines) {
    // conlleval's default delimiter is one space; Perl's split drops trailing empty fields.
    let features = line.split(' ');
    while (features.length > 0 && features[features.length - 1] === '') features.pop();
    if (nFeatures < 0) nFeatures = features.length;
    else if (features.length !== 0 && features.length !== nFeatures) throw new Error(`conlleval: unexpected number of features in line "${line}"`);
    if (features.length === 0 || features[0] === boundary) features = [boundary, 'O', 'O'];
    if (features.length < 3) throw new Error(`conlleval: unexpected number of features in line "${line}"`);
    let [guessed, guessedType] = split(features[features.length - 1]);
    const [correct, correctType] = split(features[features.length - 2]);
    if (features[0] === boundary) guessed = 'O';
    if (inCorrect) {
      const endC = endOfChunk(lastCorrect, correct, lastCorrectType, correctType);
      const endG = endOfChunk(lastGuessed, guessed, lastGuessedType, guessedType);
      if (endC && endG && lastGuessedType === lastCorrectType) {
        inCorrect = false;
        counts.correct++;
        of(lastCorrectType).correct++;
      } else if (endC !== endG || guessedType !== correctType) {
        inCorrect = false;
      }
    }
    const startC = startOfChunk(lastCorrect, correct, lastCorrectType, correctType);
    const startG = startOfChunk(lastGuessed, guessed, lastGuessedType, guessedType);
    if (startC && startG && guessedType === correctType) inCorrect = true;
    if (startC) {
      counts.foundCorrect++;
      of(correctType).foundCorrect++;
    }
    if (startG) {
      counts.foundGuessed++;
      of(guessedType).foundGuessed++;
    }
    [lastCorrect, lastCorrectType, lastGuessed, lastGuessedType] = [correct, correctType, guessed, guessedType];
  }
  if (inCorrect) {
    counts.correct++;
    of(lastCorrectType).correct++;
  }
  return counts;
}

// ---- helpers -----------------------------------------------------------------

const spansOf = (tags: readonly string[]): EvalSpan[] =>
  iobSpans(tags).map((g) => ({ start: g.first, end: g.last + 1, label: g.label, words: g.last - g.first + 1 }));

function assertSameCounts(r: ReturnType<StrictScorer['result']>, c: ConllCounts): void {
  assert.deepEqual({ tp: r.tp, pred: r.tp + r.fp, gold: r.tp + r.fn }, { tp: c.correct, pred: c.foundGuessed, gold: c.foundCorrect });
  const types = new Set([...Object.keys(r.by_label), ...c.byType.keys()]);
  for (const t of types) {
    const mine = r.by_label[t];
    const ref = c.byType.get(t) ?? { correct: 0, foundCorrect: 0, foundGuessed: 0 };
    assert.ok(mine !== undefined, `label ${t} missing from by_label`);
    assert.deepEqual(
      { tp: mine.tp, pred: mine.tp + mine.fp, gold: mine.tp + mine.fn },
      { tp: ref.correct, pred: ref.foundGuessed, gold: ref.foundCorrect },
      `label ${t}`,
    );
  }
}

/** Answers each sentence, in order, with the next fixed list of spans. */
class FixedTagger implements Tagger {
  readonly route = 'encoder' as const;
  readonly model = { id: 'fixed', version: '0', entityTypes: ['Chemical', 'Disease'] };
  private next = 0;
  constructor(private readonly answers: readonly TokenSpan[][]) {}
  async tagSentences(sentences: readonly Sentence[]): Promise<TokenSpan[][]> {
    return sentences.map(() => this.answers[this.next++] ?? []);
  }
  async close(): Promise<void> {}
}

const span = (first: number, last: number, label: string): TokenSpan => ({ first, last, label, score: 1 });

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bioner-conlleval-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// ---- tests -------------------------------------------------------------------

test('the reference port reads a hand-checked conlleval example', () => {
  // gold: [0-1 X] [3 Y] [4 Y]; guessed: [0-1 X] [3-4 Y]. conlleval: 1 correct, 3 gold, 2 guessed.
  const c = conlleval('a B-X B-X\nb I-X I-X\nc O O\nd B-Y B-Y\ne B-Y I-Y\n\n');
  assert.equal(c.correct, 1);
  assert.equal(c.foundCorrect, 3);
  assert.equal(c.foundGuessed, 2);
  assert.throws(() => conlleval('a b B-X B-X\nc O O\n'), /unexpected number of features/);
});

test('random tag sequences in every scheme: scorer counts equal conlleval counts', () => {
  const rand = mulberry32(17);
  const tags = ['O', 'O', 'O', 'B-X', 'I-X', 'E-X', 'S-X', 'B-Y', 'I-Y', 'E-Y', 'S-Y'];
  const pick = (): string => tags[Math.floor(rand() * tags.length)];
  const scorer = new StrictScorer();
  let text = '';
  for (let k = 0; k < 2000; k++) {
    const n = 1 + Math.floor(rand() * 10);
    const gold = Array.from({ length: n }, pick);
    // Predictions mostly copy gold, so many chunks match and the end/start rules are exercised on both sides.
    const pred = gold.map((g) => (rand() < 0.7 ? g : pick()));
    scorer.add(spansOf(gold), spansOf(pred));
    text += conllSentence(
      gold.map((_, i) => `t${i}`),
      gold,
      pred,
    );
  }
  const r = scorer.result();
  assert.ok(r.tp > 1000 && r.fp > 100 && r.fn > 100, 'the sample has matches and misses');
  assertSameCounts(r, conlleval(text));
});

test('conllToken: whitespace inside a token and the -X- boundary cannot break the format', () => {
  assert.equal(conllToken('10 mg'), '10_mg');
  assert.equal(conllToken('a\u00a0b\tc\u2009d'), 'a_b_c_d');
  assert.equal(conllToken('-X-'), '_-X-');
  assert.equal(conllToken('IL-2'), 'IL-2');
  // L-/U- gold tags are written with conlleval's letters E-/S-; predictions as given.
  assert.equal(conllSentence(['a b', 'c', 'd'], ['U-X', 'B-X', 'L-X'], ['B-X', 'B-X', 'I-X']), 'a_b S-X B-X\nc B-X B-X\nd E-X I-X\n\n');
});

test('eval --predictions: the file is conlleval input and conlleval counts what the scorer counts', async () => {
  const data = join(dir, 'devel.tsv');
  const rows = [
    ['Aspirin\tO', 'induced\tO', 'heart\tB-Disease', 'attack\tI-Disease', '.\tO'],
    ['10 mg\tO', 'of\tO', 'cisplatin\tO', 'caused\tO', 'renal\tB-Disease', 'failure\tI-Disease'],
    ['-X-\tB-Disease', 'syndrome\tI-Disease', 'and\tO', 'colitis\tB-Disease'],
    ['no\tO', 'findings\tO'],
    // IOE1 gold: two chunks, [a b] and [c]; read as IOB (E- as I-) they would be one.
    ['a\tI-Disease', 'b\tE-Disease', 'c\tI-Disease', 'd\tO'],
    // BILOU gold: [e] and [f g].
    ['e\tU-Disease', 'f\tB-Disease', 'g\tL-Disease'],
  ];
  await writeFile(data, rows.map((r) => r.join('\n')).join('\n\n') + '\n');
  const answers = [
    [span(0, 0, 'Chemical'), span(2, 3, 'Disease')], // Chemical is not in the gold data: a false positive
    [span(5, 5, 'Disease')], // wrong boundary: fp + fn
    [span(0, 1, 'Disease'), span(3, 3, 'Disease')],
    [],
    [span(0, 1, 'Disease'), span(2, 2, 'Disease')],
    [span(0, 0, 'Disease'), span(1, 2, 'Disease')],
  ];
  const out = join(dir, 'pred.conll');
  const r = await evaluateIob(new FixedTagger(answers), data, { predictions: out });

  // Hand count: gold 8 Disease; 9 predictions; 7 exact.
  assert.deepEqual({ tp: r.tp, fp: r.fp, fn: r.fn }, { tp: 7, fp: 2, fn: 1 });
  assert.ok(Math.abs(r.precision - 7 / 9) < 1e-12 && Math.abs(r.recall - 7 / 8) < 1e-12);
  assert.deepEqual({ tp: r.by_label.Chemical.tp, fp: r.by_label.Chemical.fp, support: r.by_label.Chemical.support }, { tp: 0, fp: 1, support: 0 });
  assert.equal(r.tokens, 24);

  const text = await readFile(out, 'utf8');
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'the file ends with a newline');
  const tokenLines = lines.filter((l) => l !== '');
  assert.equal(tokenLines.length, r.tokens, 'one line per token');
  assert.equal(lines.length - tokenLines.length, rows.length, 'one blank line after each sentence');
  for (const l of tokenLines) assert.equal(l.split(/\s+/).length, 3, `"${l}" has three fields`);
  assert.deepEqual(lines.slice(0, 6), ['Aspirin O B-Chemical', 'induced O O', 'heart B-Disease B-Disease', 'attack I-Disease I-Disease', '. O O', '']);
  assert.equal(lines[6], '10_mg O O');
  assert.equal(lines[13], '_-X- B-Disease B-Disease');
  assert.deepEqual(lines.slice(-4, -1), ['e S-Disease B-Disease', 'f B-Disease B-Disease', 'g E-Disease I-Disease']);

  assertSameCounts(r, conlleval(text));
});

test('eval --predictions: an unwritable path fails before tagging', async () => {
  const data = join(dir, 'one.tsv');
  await writeFile(data, 'a\tB-X\n');
  let tagged = false;
  const tagger: Tagger = {
    route: 'encoder',
    model: { id: 'x', version: '0', entityTypes: ['X'] },
    tagSentences: async (s) => {
      tagged = true;
      return s.map(() => []);
    },
    close: async () => {},
  };
  await assert.rejects(
    evaluateIob(tagger, data, { predictions: join(dir, 'no-such-dir', 'p.conll') }),
    (e: unknown) => e instanceof DataFormatError && /cannot write predictions/.test(e.message),
  );
  assert.equal(tagged, false);
});

test('reports name the length buckets in tokens', async () => {
  const data = join(dir, 'len.tsv');
  await writeFile(data, 'a\tB-X\nb\tI-X\nc\tI-X\nd\tO\n');
  const r = await evaluateIob(new FixedTagger([[span(0, 2, 'X')]]), data);
  const text = formatReport(r);
  assert.match(text, /^3\+ tokens .* 100\.00\s+1$/m);
  assert.match(text, /^1 token /m);
  assert.doesNotMatch(text, /word/);
  const j = reportJson(r);
  assert.equal(j.tokens, 4);
  assert.deepEqual(Object.keys(j.by_length as object), ['1', '2', '3+']);
  assert.ok(!('words' in j));
});
