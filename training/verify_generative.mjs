// Verify a generative decoder bundle (training/train_generative.py --stage export)
// from Node, against the fixture the export wrote (Python pieces, tags and
// torch logits):
//   1. tokenizer.json loads in @huggingface/tokenizers; per-word encoding
//      (no specials) gives the Python pieces; whole-text encoding with specials
//      gives [BOS] pieces [SEP]; the [TAG:x], [TAB], [NL] ids match config.json;
//   2. model.onnx has the HF / Optimum input and output names;
//   3. prefill (past_len 0, empty past tensors) on a right-padded batch: the
//      logits at each row's last real position match torch within 1e-4;
//   4. constrained greedy decoding with the KV cache, batched (right-padded
//      chunks, pads stay in the cache as holes masked by attention_mask),
//      reproduces the Python tags, and the tag logits of every step match
//      torch within 1e-4;
//   5. the same decoding one sentence at a time with ONE-TOKEN steps
//      (every forced token fed alone) gives the same tags.
// Usage (repo root):
//   node training/verify_generative.mjs /tmp/bioner-gen/bc5cdr-generative /tmp/bioner-gen/bc5cdr-generative-fixture.json
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import ort from 'onnxruntime-node';

const [dir, fixturePath] = process.argv.slice(2);
if (!dir || !fixturePath) {
  console.error('usage: node training/verify_generative.mjs <bundle-dir> <fixture.json>');
  process.exit(2);
}
const TOL = 1e-4;
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const fx = JSON.parse(fs.readFileSync(fixturePath, 'utf8'));
const config = read('config.json');
const tok = new Tokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
let failures = 0;
const fail = (...msg) => {
  failures++;
  console.log('FAIL', ...msg);
};
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// 1. tokenizer
const { bos_token_id: BOS, sep_token_id: SEP, tab_token_id: TAB, newline_token_id: NL } = config;
let tokOk = 0;
fx.words.forEach((words, i) => {
  const per = words.map((w) => tok.encode(w, { add_special_tokens: false }).ids.map(Number));
  const whole = tok.encode(words.join(' '), { add_special_tokens: true }).ids.map(Number);
  const want = [BOS, ...fx.pieces[i].flat(), SEP];
  const perOk = per.every((p, k) => eq(p, fx.pieces[i][k]));
  if (perOk && eq(whole, want)) tokOk++;
  else fail('tokenizer', JSON.stringify(words.join(' ')), { python: fx.pieces[i], per, whole });
});
console.log(`tokenizer: ${tokOk}/${fx.words.length} sentences identical (per word and whole text)`);
for (const [tag, id] of Object.entries(config.tag_tokens)) {
  if (tok.token_to_id(config.tag_token_strings[tag]) !== id) fail('tag token id', tag, id);
}
for (const [name, id] of [['[TAB]', TAB], ['[NL]', NL], ['[BOS]', BOS], ['[SEP]', SEP], ['[EOS]', config.eos_token_id]]) {
  if (tok.token_to_id(name) !== id) fail('special token id', name, id);
}
if (!eq(fx.label_token_ids, config.label_token_ids)) fail('label_token_ids differ from config.json');

// 2. graph interface
const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
const L = config.n_layer;
const H = config.n_head;
const HD = config.head_dim;
const V = config.vocab_size;
const wantIn = ['input_ids', 'attention_mask', 'position_ids'];
const wantOut = ['logits'];
for (let i = 0; i < L; i++) {
  wantIn.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
  wantOut.push(`present.${i}.key`, `present.${i}.value`);
}
if (!eq([...session.inputNames], wantIn)) fail('input names', session.inputNames);
if (!eq([...session.outputNames], wantOut)) fail('output names', session.outputNames);
console.log(`graph: ${session.inputNames.length} inputs, ${session.outputNames.length} outputs (${L} layers, ${H} heads x ${HD})`);

const i64 = (rows, T) => {
  const a = new BigInt64Array(rows.length * T);
  rows.forEach((r, b) => r.forEach((x, t) => { a[b * T + t] = BigInt(x); }));
  return new ort.Tensor('int64', a, [rows.length, T]);
};
const emptyPast = (B) => {
  const p = {};
  for (let i = 0; i < L; i++) {
    p[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), [B, H, 0, HD]);
    p[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), [B, H, 0, HD]);
  }
  return p;
};
// one forward: chunks[b] = ids to feed (may be empty), nReal[b] = real tokens
// already in the cache, masks[b] = the row's attention mask so far (mutated).
async function step(chunks, nReal, masks, past) {
  const B = chunks.length;
  const T = Math.max(...chunks.map((c) => c.length));
  const ids = chunks.map((c) => [...c, ...Array(T - c.length).fill(0)]);
  const pos = chunks.map((c, b) => Array.from({ length: T }, (_, t) => (t < c.length ? nReal[b] + t : 0)));
  chunks.forEach((c, b) => masks[b].push(...Array.from({ length: T }, (_, t) => (t < c.length ? 1 : 0))));
  const S = masks[0].length;
  const out = await session.run({
    input_ids: i64(ids, T),
    attention_mask: i64(masks, S),
    position_ids: i64(pos, T),
    ...past,
  });
  const next = {};
  for (let i = 0; i < L; i++) {
    next[`past_key_values.${i}.key`] = out[`present.${i}.key`];
    next[`past_key_values.${i}.value`] = out[`present.${i}.value`];
    if (out[`present.${i}.key`].dims.join(',') !== [B, H, S, HD].join(',')) fail('present shape', out[`present.${i}.key`].dims);
  }
  if (out.logits.dims.join(',') !== [B, T, V].join(',')) fail('logits shape', out.logits.dims);
  const lastLogits = chunks.map((c, b) => (c.length ? out.logits.data.subarray((b * T + c.length - 1) * V, (b * T + c.length) * V) : null));
  return { lastLogits, past: next };
}

const labels = fx.labels;
const labIds = fx.label_token_ids;
const allowed = (prev, cur) => {
  if (!fx.bio_constraint || !labels[cur].startsWith('I-')) return true;
  const p = prev < 0 ? 'O' : labels[prev];
  return p.slice(2) === labels[cur].slice(2) && p !== 'O';
};
const pick = (logits, prev) => {
  let best = -1;
  for (let j = 0; j < labIds.length; j++) {
    if (!allowed(prev, j)) continue;
    if (best < 0 || logits[labIds[j]] > logits[labIds[best]]) best = j;
  }
  return best;
};
const maxDiff = (a, b) => a.reduce((m, x, k) => Math.max(m, Math.abs(x - b[k])), 0);

// 3. prefill on a right-padded batch
{
  const chunks = fx.steps.map((s) => s.chunks[0]);
  const B = chunks.length;
  const { lastLogits } = await step(chunks, Array(B).fill(0), chunks.map(() => []), emptyPast(B));
  let d = 0;
  lastLogits.forEach((lo, b) => { d = Math.max(d, maxDiff(Array.from(lo), fx.prefill_last_logits[b])); });
  console.log(`prefill (batch ${B}, right padded, past_len 0): max |onnx - torch| over ${V} logits = ${d.toExponential(2)}`);
  if (!(d < TOL)) fail('prefill logits');
}

// 4. batched greedy constrained decoding, multi-token chunks, holes in the cache
{
  const B = fx.words.length;
  const pieces = fx.pieces;
  const prompt = (b) => [...fx.prefix_ids, ...pieces[b].flat(), SEP];
  const prev = Array(B).fill(-1);
  const tags = Array.from({ length: B }, () => []);
  const nReal = Array(B).fill(0);
  const masks = Array.from({ length: B }, () => []);
  let past = emptyPast(B);
  let worst = 0;
  let chunkOk = true;
  const maxWords = Math.max(...pieces.map((p) => p.length));
  for (let k = 0; k < maxWords; k++) {
    const chunks = pieces.map((p, b) => {
      if (k >= p.length) return [];
      if (k === 0) return [...prompt(b), ...p[0], TAB];
      return [labIds[prev[b]], NL, ...p[k], TAB];
    });
    chunks.forEach((c, b) => { if (c.length && !eq(c, fx.steps[b].chunks[k])) chunkOk = false; });
    const r = await step(chunks, nReal, masks, past);
    past = r.past;
    chunks.forEach((c, b) => {
      if (!c.length) return;
      nReal[b] += c.length;
      const lo = r.lastLogits[b];
      worst = Math.max(worst, maxDiff(labIds.map((id) => lo[id]), fx.steps[b].tab_logits[k]));
      prev[b] = pick(lo, prev[b]);
      tags[b].push(labels[prev[b]]);
    });
  }
  const same = tags.filter((t, b) => eq(t, fx.tags[b])).length;
  console.log(`batched KV decoding (batch ${B}, ${maxWords} steps, cache with holes): tags ${same}/${B} identical; fed chunks ${chunkOk ? 'identical' : 'DIFFER'}; max |tag logits onnx - torch| = ${worst.toExponential(2)}`);
  if (same !== B || !chunkOk) fail('batched decoding');
  if (!(worst < TOL)) fail('batched tag logits');
  console.log('tags:', fx.words[0].map((w, k) => `${w}/${tags[0][k]}`).join(' '));
  const withEnt = fx.words.findIndex((_, b) => b > 0 && tags[b].some((t) => t !== 'O'));
  if (withEnt >= 0) console.log('tags:', fx.words[withEnt].map((w, k) => `${w}/${tags[withEnt][k]}`).join(' '));
}

// 5. one sentence at a time, one token per step
{
  let same = 0;
  let worst = 0;
  for (let b = 0; b < fx.words.length; b++) {
    const p = fx.pieces[b];
    const masks = [[]];
    let past = emptyPast(1);
    let n = 0;
    let prev = -1;
    const tags = [];
    // prefill the prompt in one call, then every further token alone
    const promptIds = [...fx.prefix_ids, ...p.flat(), SEP];
    let r = await step([promptIds], [0], masks, past);
    past = r.past;
    n += promptIds.length;
    for (let k = 0; k < p.length; k++) {
      const feed = k === 0 ? [...p[0], TAB] : [labIds[prev], NL, ...p[k], TAB];
      for (const id of feed) {
        r = await step([[id]], [n], masks, past);
        past = r.past;
        n += 1;
      }
      const lo = r.lastLogits[0];
      worst = Math.max(worst, maxDiff(labIds.map((id) => lo[id]), fx.steps[b].tab_logits[k]));
      prev = pick(lo, prev);
      tags.push(labels[prev]);
    }
    if (eq(tags, fx.tags[b])) same++;
    else fail('single-sentence decoding', b, tags, fx.tags[b]);
  }
  console.log(`one-token KV steps (batch 1): tags ${same}/${fx.words.length} identical; max |tag logits onnx - torch| = ${worst.toExponential(2)}`);
  if (!(worst < TOL)) fail('one-token tag logits');
}

console.log(failures === 0 ? 'OK' : `FAILED (${failures})`);
process.exit(failures === 0 ? 0 : 1);
