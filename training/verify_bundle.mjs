// Verify an exported encoder bundle from Node, against the fixture written by
// training/train_encoder.py (Python WordPiece ids + torch logits):
//   1. tokenizer.json loads in @huggingface/tokenizers and gives the same ids
//      as the Python encoder, both for whole-text encoding with special tokens
//      and for the per-word path ([CLS] + encode(word, no specials)... + [SEP]);
//   2. model.onnx runs in onnxruntime-node on the right-padded batch and the
//      logits match torch within 1e-4.
// Usage (from the repo root):
//   node training/verify_bundle.mjs models/bc5cdr-encoder /tmp/bioner-bc5cdr-fixture.json
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import ort from 'onnxruntime-node';

const [dir, fixturePath] = process.argv.slice(2);
if (!dir || !fixturePath) {
  console.error('usage: node training/verify_bundle.mjs <bundle-dir> <fixture.json>');
  process.exit(2);
}
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const fx = JSON.parse(fs.readFileSync(fixturePath, 'utf8'));
const tok = new Tokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
const config = read('config.json');
let failures = 0;
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

fx.texts.forEach((text, i) => {
  const whole = tok.encode(text, { add_special_tokens: true }).ids.map(Number);
  const perWord = [2];
  for (const w of fx.words[i]) perWord.push(...tok.encode(w, { add_special_tokens: false }).ids.map(Number));
  perWord.push(3);
  const ok = eq(whole, fx.ids[i]) && eq(perWord, fx.ids[i]);
  if (!ok) {
    failures++;
    console.log('TOKENIZER MISMATCH', JSON.stringify(text), { python: fx.ids[i], whole, perWord });
  }
});
console.log(`tokenizer: ${fx.texts.length - failures}/${fx.texts.length} texts identical`);
console.log('example:', fx.texts[0], '->', tok.encode(fx.texts[0], { add_special_tokens: true }).tokens);

const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
const B = fx.input_ids.length;
const T = fx.input_ids[0].length;
const flat = (m) => BigInt64Array.from(m.flat().map((x) => BigInt(x)));
const out = await session.run({
  input_ids: new ort.Tensor('int64', flat(fx.input_ids), [B, T]),
  attention_mask: new ort.Tensor('int64', flat(fx.attention_mask), [B, T]),
});
const logits = out.logits;
const L = config.num_labels;
if (logits.dims.join(',') !== [B, T, L].join(',')) {
  failures++;
  console.log('BAD LOGITS SHAPE', logits.dims);
}
let maxDiff = 0;
for (let b = 0; b < B; b++) {
  const len = fx.attention_mask[b].reduce((s, x) => s + x, 0);
  for (let t = 0; t < len; t++) {
    for (let k = 0; k < L; k++) {
      const d = Math.abs(logits.data[(b * T + t) * L + k] - fx.logits[b][t][k]);
      if (d > maxDiff) maxDiff = d;
    }
  }
}
console.log(`onnxruntime-node vs torch (batch ${B}x${T}, right padded): max |diff| = ${maxDiff.toExponential(2)}`);
if (!(maxDiff < 1e-4)) failures++;
// a different batch size / length: each sequence alone, unpadded
let maxSingle = 0;
for (let b = 0; b < B; b++) {
  const ids = fx.ids[b];
  const n = ids.length;
  const one = await session.run({
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((x) => BigInt(x))), [1, n]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
  });
  for (let t = 0; t < n; t++) {
    for (let k = 0; k < L; k++) {
      const d = Math.abs(one.logits.data[t * L + k] - fx.logits[b][t][k]);
      if (d > maxSingle) maxSingle = d;
    }
  }
}
console.log(`onnxruntime-node batch 1 (unpadded) vs torch batched: max |diff| = ${maxSingle.toExponential(2)}`);
if (!(maxSingle < 1e-4)) failures++;
// first-sub-word labels of the first text
const words = fx.words[0];
const labels = [];
let pos = 1;
for (const w of words) {
  const n = tok.encode(w, { add_special_tokens: false }).ids.length;
  let best = 0;
  for (let k = 1; k < L; k++) if (logits.data[pos * L + k] > logits.data[pos * L + best]) best = k;
  labels.push(`${w}/${config.id2label[best]}`);
  pos += n;
}
console.log('tags:', labels.join(' '));
console.log(failures === 0 ? 'OK' : `FAILED (${failures})`);
process.exit(failures === 0 ? 0 : 1);
