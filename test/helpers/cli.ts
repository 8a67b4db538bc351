import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

/** `bioner-router <args>` as a child process from the repository root: its output and exit code (never throws on a non-zero exit). */
export async function cli(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/** Two sentences in IOB (token<TAB>tag) with Chemical and Disease spans, in a fresh temp file. */
export async function tinyIobFile(prefix = 'bioner-eval-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const iob = join(dir, 'devel.tsv');
  const lines = [
    'Cisplatin\tB-Chemical',
    'induced\tO',
    'nephrotoxicity\tB-Disease',
    '.\tO',
    '',
    'Patients\tO',
    'with\tO',
    'hypertension\tB-Disease',
    'received\tO',
    'furosemide\tB-Chemical',
    '.\tO',
    '',
  ];
  await writeFile(iob, lines.join('\n'));
  return iob;
}
