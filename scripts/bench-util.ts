/** Helpers the benchmark scripts share. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { readMtsamplesCsv, readNotesFile } from '../src/eval/datasets.js';
import { packageRoot } from '../src/schemas.js';

/** Median of a list (mean of the middle two for an even count; 0 for none). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Feeds of one encoder batch as raw `session.run` takes them: right-padded ids and the attention mask (and token types when the graph has them). */
export function feedsFor(batch: number[][], padId: number, tokenTypes: boolean): Record<string, ort.Tensor> {
  const n = batch.length;
  const cols = batch.reduce((m, ids) => Math.max(m, ids.length), 0);
  const ids = new BigInt64Array(n * cols).fill(BigInt(padId));
  const mask = new BigInt64Array(n * cols);
  batch.forEach((r, i) => {
    r.forEach((id, c) => {
      ids[i * cols + c] = BigInt(id);
      mask[i * cols + c] = 1n;
    });
  });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', ids, [n, cols]),
    attention_mask: new ort.Tensor('int64', mask, [n, cols]),
  };
  if (tokenTypes) feeds.token_type_ids = new ort.Tensor('int64', new BigInt64Array(n * cols), [n, cols]);
  return feeds;
}

/** Two decimals, as a number (for the JSON line). */
export const r2 = (x: number): number => Number(x.toFixed(2));

/** The benchmarks' text: the shared mtsamples transcriptions, else the fixture notes (non-empty). */
export async function loadBenchTexts(): Promise<{ source: string; texts: string[] }> {
  const csv = resolve(packageRoot, '../shared/data/mtsamples/mtsamples.csv');
  if (existsSync(csv)) return { source: 'mtsamples.csv', texts: await readMtsamplesCsv(csv) };
  const jsonl = resolve(packageRoot, 'test/fixtures/mtsamples/notes.jsonl');
  return { source: 'fixtures notes.jsonl', texts: (await readNotesFile(jsonl)).map((n) => n.text).filter((t) => t.trim() !== '') };
}

/** A benchmark's rows (echoed to stderr as they come), printed at the end as one aligned table. */
export class BenchTable {
  readonly rows: Array<[string, string, string]> = [];

  readonly row = (what: string, value: string, note = ''): void => {
    this.rows.push([what, value, note]);
    process.stderr.write(`  ${what}: ${value} ${note}\n`);
  };

  /** The title line, a header, a rule and one line a row. */
  lines(title: string): string[] {
    const w1 = Math.max(...this.rows.map((r) => r[0].length));
    const w2 = Math.max(...this.rows.map((r) => r[1].length));
    const lines = [title, `${'measure'.padEnd(w1)}  ${'value'.padEnd(w2)}  notes`, '-'.repeat(w1 + w2 + 40)];
    for (const [a, b, c] of this.rows) lines.push(`${a.padEnd(w1)}  ${b.padEnd(w2)}  ${c}`);
    return lines;
  }
}
