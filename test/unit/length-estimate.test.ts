import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelLoadError } from '../../src/errors.js';
import {
  FEATURE_TEMPLATES,
  FEATURE_VERSION,
  LogisticLengthEstimator,
  fnv1a,
  loadLengthEstimator,
  sentenceFeatures,
  type LengthEstimatorFile,
} from '../../src/route/length-estimate.js';
import { prepareText } from '../../src/text/index.js';
import type { Sentence } from '../../src/types.js';
import { auc, loadSplit, trainFtrl, score, type DatasetId } from '../../scripts/train-length-estimator.js';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const MODELS = join(ROOT, 'models/length-estimator');
const DATA = resolve(ROOT, '../shared/data');

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bioner-length-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BITS = 12;
const bucketOf = (feature: string): string => String(fnv1a(feature) & ((1 << BITS) - 1));

/** A tiny hand-made model: "syndrome" and a long noun run push towards long, "the" slightly away. */
function toyFile(): LengthEstimatorFile {
  const weights: Record<string, number> = {};
  weights[bucketOf('w:syndrome')] = 3;
  weights[bucketOf('n:run:>6')] = 1.5;
  weights[bucketOf('w:the')] = -0.5;
  const m = { sentences: 1, positives_share: 0.5, precision: 0.5, recall: 0.5, f1: 0.5, auc: 0.5, flagged_share: 0.5 };
  return {
    format: 'bioner-length-estimator',
    version: 1,
    id: 'toy',
    dataset: 'toy',
    target: { minWords: 3 },
    features: { version: FEATURE_VERSION, hash: 'fnv1a32', bits: BITS, templates: [...FEATURE_TEMPLATES] },
    bias: -2,
    weights,
    threshold: 0.5,
    threshold_rule: 'test',
    training: {
      sentences: 1,
      positives_share: 0.5,
      algorithm: 'none',
      hyperparameters: {},
      seed: 1,
      folds: 1,
      oof: m,
      f2_threshold: 0.3,
      nonzero_weights: 3,
      pruned_weights: 0,
      seconds: 0,
    },
    devel: {
      ...m,
      data: 'toy',
      threshold: 0.5,
      ms_per_sentence: 0,
      mean_words: 1,
      at_f2_threshold: { threshold: 0.3, precision: 0, recall: 0, f1: 0, flagged_share: 0 },
    },
  };
}

const sentence = (text: string): Sentence => prepareText(text).sentences[0];

test('sentenceFeatures: lowercased words, bigrams, affixes, shapes and bucketed counts, no duplicates', () => {
  const f = sentenceFeatures(sentence('Severe IL-2 deficiency (rare) and the deficiency.'));
  for (const want of [
    'w:severe',
    'w:il',
    'b:<s>|severe',
    'b:.|</s>',
    's3:ere',
    's4:vere',
    'p3:sev',
    'sh:Xx',
    'sh:X',
    'sh:d',
    'shb:X|-',
    'n:len:<=15',
    'n:hy:<=1',
    'n:par:<=1',
    'n:dig:<=1',
    'n:cap:<=1',
  ]) {
    assert.ok(f.includes(want), `missing ${want}`);
  }
  assert.equal(new Set(f).size, f.length);
});

test('probLong: in [0,1], deterministic, learned cue and bias act as weighted', () => {
  const est = new LogisticLengthEstimator(toyFile());
  const plain = sentence('The patient was seen today.');
  const cue = sentence('The patient was seen today with a syndrome.');
  const p1 = est.probLong(plain);
  const p2 = est.probLong(cue);
  for (const p of [p1, p2]) assert.ok(p >= 0 && p <= 1);
  assert.equal(est.probLong(plain), p1);
  assert.ok(p2 > p1 + 0.3, `cue word should raise the probability (${p1} -> ${p2})`);
  // Only "the" fires among the weighted features: sigmoid(-2 - 0.5).
  assert.ok(Math.abs(p1 - 1 / (1 + Math.exp(2.5))) < 1e-6);
  assert.equal(est.probLong({ index: 0, start: 0, end: 0, tokens: [] }), 1 / (1 + Math.exp(2)));
});

test('probLong: the same words at other offsets (or sentence index) score the same', () => {
  const est = new LogisticLengthEstimator(toyFile());
  const a = sentence('Severe combined immunodeficiency syndrome was found.');
  const shifted = prepareText('Nothing here.   \n\n  Severe combined immunodeficiency syndrome was found.').sentences[1];
  assert.notEqual(shifted.start, a.start);
  assert.deepEqual(
    shifted.tokens.map((t) => t.text),
    a.tokens.map((t) => t.text),
  );
  assert.equal(est.probLong(shifted), est.probLong(a));
  assert.equal(est.probLong({ ...a, index: 7 }), est.probLong(a));
});

test('loadLengthEstimator: rejects malformed files with a message naming the field', async () => {
  const cases: Array<[string, (f: Record<string, unknown>) => void, RegExp]> = [
    ['no-threshold', (f) => delete f.threshold, /field "threshold"/],
    ['threshold-1', (f) => (f.threshold = 1), /field "threshold"/],
    ['old-features', (f) => ((f.features as Record<string, unknown>).version = 0), /field "features\.version"/],
    ['templates', (f) => ((f.features as Record<string, unknown>).templates = ['w']), /field "features\.templates"/],
    ['bits', (f) => ((f.features as Record<string, unknown>).bits = 40), /field "features\.bits"/],
    ['weight-key', (f) => ((f.weights as Record<string, unknown>)['99999'] = 1), /field "weights\.99999"/],
    ['weight-value', (f) => ((f.weights as Record<string, unknown>)['1'] = 'x'), /field "weights\.1"/],
    ['bias', (f) => (f.bias = null), /field "bias"/],
    ['format', (f) => (f.format = 'other'), /field "format"/],
    ['devel', (f) => delete (f.devel as Record<string, unknown>).recall, /field "devel\.recall"/],
    ['version', (f) => (f.version = '1'), /field "version" must be 1/],
    ['min-words', (f) => ((f.target as Record<string, unknown>).minWords = 0), /field "target\.minWords" must be a positive integer/],
    ['training', (f) => delete ((f.training as Record<string, unknown>).oof as Record<string, unknown>).auc, /field "training\.oof\.auc" is missing/],
    [
      'devel-f2',
      (f) => (((f.devel as Record<string, unknown>).at_f2_threshold as Record<string, unknown>).recall = 'high'),
      /field "devel\.at_f2_threshold\.recall" must be a finite number/,
    ],
  ];
  for (const [name, mutate, message] of cases) {
    const f = JSON.parse(JSON.stringify(toyFile())) as Record<string, unknown>;
    mutate(f);
    const p = join(dir, `${name}.json`);
    await writeFile(p, JSON.stringify(f));
    // One error, one line, naming the file and the field.
    await assert.rejects(
      loadLengthEstimator(p),
      (e: unknown) => e instanceof ModelLoadError && message.test(e.message) && e.message.includes(p) && !e.message.includes('\n'),
      name,
    );
  }
  const notJson = join(dir, 'bad.json');
  await writeFile(notJson, '{"format":');
  await assert.rejects(loadLengthEstimator(notJson), (e: unknown) => e instanceof ModelLoadError && /not valid JSON/.test(e.message));
  await assert.rejects(loadLengthEstimator(join(dir, 'missing.json')), (e: unknown) => e instanceof ModelLoadError && /ENOENT/.test(e.message));
  const good = join(dir, 'good.json');
  await writeFile(good, JSON.stringify(toyFile()));
  assert.equal((await loadLengthEstimator(good)).id, 'toy');
});

test('trainFtrl: learns a cue word from a toy corpus', () => {
  const texts = ['a long entity syndrome here', 'nothing to see', 'another syndrome case', 'plain words only', 'syndrome again', 'no cue at all'];
  const y = Uint8Array.from(texts, (t) => (t.includes('syndrome') ? 1 : 0));
  const X = texts.map((t) => Uint32Array.from(sentenceFeatures(sentence(t)), (f) => fnv1a(f) & 0xffff));
  const model = trainFtrl(X, y, [...X.keys()], { alpha: 0.5, beta: 1, l1: 0, l2: 0.1, epochs: 20 }, 2 ** 16, 1);
  const p = X.map((x) => score(model, x));
  assert.equal(
    auc(
      p,
      Array.from(y, (v) => v === 1),
    ),
    1,
  );
});

test('committed models: all three load; ids and thresholds match their files', async () => {
  for (const id of ['bc5cdr', 'ncbi-disease', 'jnlpba']) {
    const path = join(MODELS, `${id}.json`);
    const est = await loadLengthEstimator(path);
    const raw = JSON.parse(await readFile(path, 'utf8')) as LengthEstimatorFile;
    assert.equal(est.id, id);
    assert.equal(est.threshold, raw.threshold);
    assert.ok(raw.devel.auc > 0.75, `${id} devel AUC ${raw.devel.auc}`);
  }
});

// All three datasets, full devel sets: loading and scoring JNLPBA's 400 standoff documents takes about 1 s, the IOB sets less.
for (const id of ['bc5cdr', 'ncbi-disease', 'jnlpba'] as DatasetId[]) {
  test(`committed ${id} model on devel: long sentences score higher, stored precision and recall reproduce`, {
    skip: !existsSync(DATA) && 'no ../shared/data',
  }, async () => {
    const est = await loadLengthEstimator(join(MODELS, `${id}.json`));
    // loadSplit is how scripts/train-length-estimator.ts labelled devel (standoff for JNLPBA), so the figures are comparable.
    const devel = await loadSplit(DATA, id, 'devel', est.model.target.minWords);
    const probs = devel.map((l) => est.probLong(l.sentence));
    const mean = (want: boolean): number => {
      const xs = probs.filter((_, i) => devel[i].long === want);
      return xs.reduce((a, b) => a + b, 0) / xs.length;
    };
    assert.ok(mean(true) > mean(false) + 0.1, `mean prob long ${mean(true)} vs not ${mean(false)}`);
    const pos = devel.filter((l) => l.long).length;
    const flagged = probs.filter((p) => p >= est.threshold).length;
    const tp = devel.filter((l, i) => l.long && probs[i] >= est.threshold).length;
    const stored = (JSON.parse(await readFile(join(MODELS, `${id}.json`), 'utf8')) as LengthEstimatorFile).devel;
    assert.equal(devel.length, stored.sentences, 'the same devel sentences as when the figures were stored');
    // Stored figures are rounded to 4 digits; 0.01 leaves room for that and for float summation order, not for a changed model or labelling.
    assert.ok(Math.abs(tp / pos - stored.recall) <= 0.01, `recall ${tp / pos} vs stored ${stored.recall}`);
    assert.ok(Math.abs(tp / flagged - stored.precision) <= 0.01, `precision ${tp / flagged} vs stored ${stored.precision}`);
    assert.ok(Math.abs(flagged / devel.length - stored.flagged_share) <= 0.01, `flagged share ${flagged / devel.length} vs stored ${stored.flagged_share}`);
    assert.ok(Math.abs(pos / devel.length - stored.positives_share) <= 0.001);
  });
}
