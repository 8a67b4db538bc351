import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const REPORTER = fileURLToPath(new URL('../reporters/summary.mjs', import.meta.url));
// A `node --test` started from inside a test run would report to this run (NODE_TEST_CONTEXT) instead of standing alone.
const env = { ...process.env, NODE_TEST_CONTEXT: undefined };

test('the summary reporter ends a run with the failed tests and their messages, then the skipped ones with why', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bioner-reporter-'));
  const file = join(dir, 'sample.test.mjs');
  writeFileSync(
    file,
    [
      "import test, { describe } from 'node:test';",
      "import assert from 'node:assert/strict';",
      "describe('group', () => { test('breaks', () => assert.equal(1, 2, 'one is not two')); test('holds', () => {}); });",
      "test('needs data', { skip: 'no ../shared/data' }, () => {});",
      "test('also needs data', { skip: 'no ../shared/data' }, () => {});",
    ].join('\n'),
  );
  const run = spawnSync(process.execPath, ['--test', `--test-reporter=${REPORTER}`, '--test-reporter-destination=stdout', file], { encoding: 'utf8', env });
  assert.equal(run.status, 1, 'a failing test fails the run');
  const lines = run.stdout.trim().split('\n');
  assert.equal(lines[0], 'summary: 1 failed test(s)');
  assert.match(lines[1], /^ {2}FAIL group > breaks \(.*sample\.test\.mjs:3\)$/);
  assert.equal(lines[2].trim(), 'one is not two');
  assert.equal(lines[3], 'summary: 2 skipped test(s): 2 x no ../shared/data');
  assert.match(lines[4], /SKIP needs data .*: no \.\.\/shared\/data$/);
  assert.equal(lines.length, 6);

  writeFileSync(file, "import test from 'node:test';\ntest('fine', () => {});\n");
  const clean = spawnSync(process.execPath, ['--test', `--test-reporter=${REPORTER}`, '--test-reporter-destination=stdout', file], { encoding: 'utf8', env });
  assert.equal(clean.status, 0);
  assert.deepEqual(clean.stdout.trim().split('\n'), ['summary: no test failed', 'summary: no test skipped']);
});
