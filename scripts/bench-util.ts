/** Helpers the benchmark scripts share. */
import ort from 'onnxruntime-node';

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
