import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelLoadError } from '../../src/errors.js';
import { loadModelBundle, readModelLabels } from '../../src/taggers/model-bundle.js';

const SOURCE = resolve(fileURLToPath(new URL('../../models/bc5cdr-encoder', import.meta.url)));
const FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

let root = '';
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'bioner-bundle-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A copy of the bundled encoder's JSON files (no model.onnx: nothing here loads it), with one file rewritten. */
async function bundle(edit?: { file: string; change: (json: Record<string, unknown>) => void }): Promise<string> {
  const dir = join(root, `b${n++}`);
  await mkdir(dir);
  for (const f of FILES) await copyFile(join(SOURCE, f), join(dir, f));
  if (edit !== undefined) {
    const json = JSON.parse(await readFile(join(dir, edit.file), 'utf8')) as Record<string, unknown>;
    edit.change(json);
    await writeFile(join(dir, edit.file), JSON.stringify(json));
  }
  return dir;
}

/** One ModelLoadError, one line, naming the file and the field. */
const namesField = (file: string, field: string) => (e: unknown) =>
  e instanceof ModelLoadError && e.message.includes(file) && e.message.includes(`field "${field}"`) && !e.message.includes('\n');

test('the bundled encoder loads: labels, specials, limit', async () => {
  const b = await loadModelBundle(await bundle());
  assert.deepEqual(b.labels, ['O', 'B-Chemical', 'I-Chemical', 'B-Disease', 'I-Disease']);
  assert.equal(b.model.id, 'bc5cdr-encoder');
  assert.equal(b.modelLimit, 512);
  assert.equal(b.special.cls, b.tokenizer.token_to_id('[CLS]'));
  assert.equal(b.special.pad, b.tokenizer.token_to_id('[PAD]'));
});

test('a malformed config.json is one error naming the field', async () => {
  const cases: Array<[(c: Record<string, unknown>) => void, string]> = [
    [(c) => (c.max_position_embeddings = 'big'), 'max_position_embeddings'],
    [(c) => (c.max_position_embeddings = -1), 'max_position_embeddings'],
    [(c) => (c.id2label = ['O']), 'id2label'],
    [(c) => ((c.id2label as Record<string, unknown>)['1'] = 7), 'id2label.1'],
    [(c) => ((c.bioner as Record<string, unknown>).version = 1), 'bioner.version'],
  ];
  for (const [change, field] of cases) {
    const dir = await bundle({ file: 'config.json', change });
    await assert.rejects(loadModelBundle(dir), namesField('config.json', field), field);
    await assert.rejects(readModelLabels(dir), namesField('config.json', field), field);
  }
  const noLabels = await bundle({ file: 'config.json', change: (c) => delete c.id2label });
  await assert.rejects(loadModelBundle(noLabels), (e: unknown) => e instanceof ModelLoadError && /has no id2label/.test(e.message));
  const notObject = await bundle();
  await writeFile(join(notObject, 'config.json'), '[1, 2]');
  await assert.rejects(
    loadModelBundle(notObject),
    (e: unknown) => e instanceof ModelLoadError && /config\.json in model directory .*: must be a JSON object/.test(e.message),
  );
  const notJson = await bundle();
  await writeFile(join(notJson, 'config.json'), '{"id2label": ');
  await assert.rejects(loadModelBundle(notJson), (e: unknown) => e instanceof ModelLoadError && /cannot read config\.json/.test(e.message));
});

test('tokenizer files: bad fields are named, AddedToken objects and nulls are read, special_tokens_map.json fills gaps', async () => {
  const badLimit = await bundle({ file: 'tokenizer_config.json', change: (c) => (c.model_max_length = '512') });
  await assert.rejects(loadModelBundle(badLimit), namesField('tokenizer_config.json', 'model_max_length'));
  const badToken = await bundle({ file: 'tokenizer_config.json', change: (c) => (c.cls_token = 5) });
  await assert.rejects(loadModelBundle(badToken), namesField('tokenizer_config.json', 'cls_token'));
  const badMap = await bundle({ file: 'special_tokens_map.json', change: (c) => (c.sep_token = { id: 3 }) });
  await assert.rejects(loadModelBundle(badMap), namesField('special_tokens_map.json', 'sep_token'));
  const noModel = await bundle({ file: 'tokenizer.json', change: (c) => delete c.model });
  await assert.rejects(loadModelBundle(noModel), namesField('tokenizer.json', 'model'));

  const objects = await bundle({
    file: 'tokenizer_config.json',
    change: (c) => {
      c.cls_token = { content: '[CLS]', lstrip: false };
      c.bos_token = null;
    },
  });
  const b = await loadModelBundle(objects);
  assert.equal(b.special.cls, b.tokenizer.token_to_id('[CLS]'));
  // The pad token named only in special_tokens_map.json (not a default name) is the one used.
  const mapOnly = await bundle({ file: 'tokenizer_config.json', change: (c) => delete c.pad_token });
  await writeFile(join(mapOnly, 'special_tokens_map.json'), JSON.stringify({ pad_token: '[MASK]' }));
  const m = await loadModelBundle(mapOnly);
  assert.equal(m.special.pad, m.tokenizer.token_to_id('[MASK]'));
  // Both optional files may be absent.
  const bare = await bundle();
  await rm(join(bare, 'tokenizer_config.json'));
  await rm(join(bare, 'special_tokens_map.json'));
  assert.equal((await loadModelBundle(bare)).special.cls, b.special.cls);
});
