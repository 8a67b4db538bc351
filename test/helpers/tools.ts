import { execFile, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Locates the real command-line tools some tests run (helm, promtool). `bash scripts/fetch-tools.sh`
 * (which .ci/run calls) puts them in build/tools/bin; HELM_BIN / PROMTOOL_BIN or PATH also work.
 * A tool that cannot be found or run yields a skip reason, never a silent pass.
 */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export type ToolName = 'helm' | 'promtool';

export type Tool = { path: string; version: string; skip?: undefined } | { path?: undefined; version?: undefined; skip: string };

const ENV: Record<ToolName, string> = { helm: 'HELM_BIN', promtool: 'PROMTOOL_BIN' };
const VERSION_ARGS: Record<ToolName, string[]> = { helm: ['version', '--short'], promtool: ['--version'] };

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

const cache = new Map<ToolName, Tool>();

export function findTool(name: ToolName): Tool {
  const hit = cache.get(name);
  if (hit !== undefined) return hit;
  const fromEnv = process.env[ENV[name]];
  const candidates = [
    ...(fromEnv !== undefined && fromEnv !== '' ? [fromEnv] : []),
    join(repoRoot, 'build/tools/bin', name),
    ...(process.env.PATH ?? '')
      .split(delimiter)
      .filter((d) => d !== '')
      .map((d) => join(d, name)),
  ];
  const path = candidates.find(executable);
  let tool: Tool;
  if (path === undefined) {
    tool = { skip: `${name} not found: run \`bash scripts/fetch-tools.sh\` (or set ${ENV[name]})` };
  } else {
    const run = spawnSync(path, VERSION_ARGS[name], { encoding: 'utf8', env: toolEnv() });
    const version = `${run.stdout}${run.stderr}`.trim().split('\n')[0] ?? '';
    tool = run.status === 0 ? { path, version } : { skip: `${path} does not run (${run.error?.message ?? `exit ${run.status}`})` };
    // Helm 4 changed flags and output; the chart tests are written against Helm 3.
    if (name === 'helm' && tool.path !== undefined && !/^v3\./.test(version)) tool = { skip: `${path} is ${version}, the chart tests need Helm 3` };
  }
  cache.set(name, tool);
  return tool;
}

let helmHome: string | undefined;

/** Environment for the tools: Helm's config, cache and data dirs in a private temp dir, so no user repo or plugin leaks in. */
export function toolEnv(): NodeJS.ProcessEnv {
  if (helmHome === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'bioner-helm-home-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    helmHome = dir;
  }
  return { ...process.env, HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data') };
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function runTool(tool: Tool, args: string[], cwd = repoRoot): RunResult {
  if (tool.path === undefined) throw new Error(tool.skip);
  const r = spawnSync(tool.path, args, { cwd, encoding: 'utf8', env: toolEnv(), maxBuffer: 32 * 1024 * 1024 });
  if (r.error !== undefined) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** runTool without blocking, so independent invocations (e.g. a list of renders that must fail) overlap. */
export function runToolAsync(tool: Tool, args: string[], cwd = repoRoot): Promise<RunResult> {
  const path = tool.path;
  if (path === undefined) return Promise.reject(new Error(tool.skip));
  return new Promise((resolve, reject) => {
    execFile(path, args, { cwd, encoding: 'utf8', env: toolEnv(), maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') reject(err);
      else resolve({ status: err === null ? 0 : Number(err.code), stdout, stderr });
    });
  });
}
