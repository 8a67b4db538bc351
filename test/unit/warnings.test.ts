import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const WARNINGS = fileURLToPath(new URL('../../src/cli/warnings.ts', import.meta.url));

test("the CLI drops kafkajs's negative-timeout warning and keeps every other warning", () => {
  const script = `await import(${JSON.stringify(WARNINGS)}); setTimeout(() => undefined, -5); process.emitWarning('kept', 'OtherWarning');`;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.doesNotMatch(run.stderr, /TimeoutNegativeWarning/);
  assert.match(run.stderr, /OtherWarning: kept/);
  // Without the module Node does warn: the test would notice if it stopped doing so.
  const bare = spawnSync(process.execPath, ['--input-type=module', '-e', 'setTimeout(() => undefined, -5);'], { encoding: 'utf8' });
  assert.match(bare.stderr, /TimeoutNegativeWarning/);
});
