import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { containerCpuLimit, resolveIntraOpThreads } from '../../src/taggers/cpu-quota.js';

function cgroup(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'bioner-cgroup-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

test('the container CPU limit comes from cgroup v2 cpu.max, else v1 cfs quota/period; no limit is undefined', () => {
  assert.equal(containerCpuLimit(cgroup({ 'cpu.max': '250000 100000\n' })), 2.5);
  assert.equal(containerCpuLimit(cgroup({ 'cpu.max': 'max 100000\n' })), undefined);
  assert.equal(containerCpuLimit(cgroup({ 'cpu/cpu.cfs_quota_us': '150000\n', 'cpu/cpu.cfs_period_us': '100000\n' })), 1.5);
  assert.equal(containerCpuLimit(cgroup({ 'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n' })), undefined);
  assert.equal(containerCpuLimit(cgroup({})), undefined);
  assert.equal(containerCpuLimit(cgroup({ 'cpu.max': 'garbage' })), undefined);
});

test("encoder.intraOpThreads 0 follows the CPU limit (rounded down, at least 1); an explicit value wins; no limit keeps onnxruntime's default", () => {
  assert.equal(resolveIntraOpThreads(0, 2.5), 2);
  assert.equal(resolveIntraOpThreads(0, 0.5), 1);
  assert.equal(resolveIntraOpThreads(0, undefined), 0);
  assert.equal(resolveIntraOpThreads(3, 1), 3);
});
