import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The container's CPU limit in cores, from the cgroup CPU quota: cgroup v2
 * `cpu.max` ("<quota> <period>" or "max <period>"), else cgroup v1
 * `cpu/cpu.cfs_quota_us` / `cpu/cpu.cfs_period_us` (-1: no limit). undefined
 * when there is no limit or nothing can be read (not Linux, no cgroup mount).
 * Node's os.availableParallelism() counts the node's cores, not this.
 */
export function containerCpuLimit(root = '/sys/fs/cgroup'): number | undefined {
  const read = (path: string): string | undefined => {
    try {
      return readFileSync(join(root, path), 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  const v2 = read('cpu.max');
  if (v2 !== undefined) {
    const [quota, period] = v2.split(/\s+/);
    return ratio(quota, period);
  }
  return ratio(read('cpu/cpu.cfs_quota_us') ?? read('cpu.cfs_quota_us'), read('cpu/cpu.cfs_period_us') ?? read('cpu.cfs_period_us'));
}

function ratio(quota: string | undefined, period: string | undefined): number | undefined {
  if (quota === undefined || period === undefined || quota === 'max') return undefined;
  const q = Number(quota);
  const p = Number(period);
  if (!(q > 0) || !(p > 0)) return undefined;
  return q / p;
}

/**
 * encoder.intraOpThreads as onnxruntime gets it: an explicit value as it is;
 * 0 (the default) becomes the container's CPU limit rounded down (at least 1),
 * so a pod limited to 2 CPUs on a 64-core node does not start 64 threads and
 * get throttled; without a limit 0 stays 0 (onnxruntime's own default).
 */
export function resolveIntraOpThreads(configured: number, limit: number | undefined = containerCpuLimit()): number {
  if (configured > 0) return configured;
  return limit === undefined ? 0 : Math.max(1, Math.floor(limit));
}
