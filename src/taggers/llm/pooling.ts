import { z } from 'zod';
import { ErrorCodes, LlmError } from '../../errors.js';
import type { LogitsBackend } from '../token-classifier.js';
import type { LlmHttpClient } from './http.js';

/**
 * One token's row of label values. A plain loop rather than z.array(z.number()):
 * a full batch holds ~10^5 numbers, which a per-value schema checks ~10x slower.
 */
function isNumberRow(v: unknown): v is number[] {
  if (!Array.isArray(v)) return false;
  for (let k = 0; k < v.length; k++) if (typeof v[k] !== 'number') return false;
  return true;
}

/**
 * vLLM's `/pooling` answer: per input, its `index` and one row of label
 * values per token. Counts (inputs, tokens, labels) are checked against the
 * request by the backend, which can say which of them is off.
 */
export const PoolingResponseSchema = z.object({
  data: z.array(z.object({ index: z.int().nonnegative().optional(), data: z.array(z.custom<number[]>(isNumberRow, { error: 'must be a list of numbers' })) })),
});
export type PoolingResponse = z.infer<typeof PoolingResponseSchema>;

/** The answer, or LLM_BAD_RESPONSE naming the first missing or mistyped field (never its value). */
export function readPoolingResponse(value: unknown): PoolingResponse {
  const parsed = PoolingResponseSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const at = issue.path.length === 0 ? 'the answer' : issue.path.map(String).join('.');
  throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling answered an unreadable body (${at}: ${issue.message})`);
}

/**
 * Logits from vLLM's pooling API: `POST /pooling` with
 * `{"model", "input": <ids>, "task": "token_classify"}` answers
 * `{"data": [{"index": 0, "data": [[...labels] per token]}]}`. The ids are the
 * client's own window (specials included), so positions line up with the
 * pieces the shared token-classification path assembled. Several rows go as a
 * list of id lists, answered in `data[i]`. vLLM may apply softmax for
 * token_classify; such rows are used as probabilities.
 */
export class VllmPoolingBackend implements LogitsBackend {
  readonly kind = 'vllm-pooling';
  readonly mayAnswerProbabilities = true;
  readonly usesModel = true;

  constructor(
    private readonly client: LlmHttpClient,
    private readonly numLabels: number,
    private readonly model: string | undefined,
  ) {}

  async run(rows: readonly number[][], signal?: AbortSignal, model?: string): Promise<Float32Array[]> {
    const body: Record<string, unknown> = { input: rows.length === 1 ? rows[0] : rows, task: 'token_classify' };
    // A call's own model (the per-topic routing.domains llmModel) wins over llm.model.
    const name = model ?? this.model;
    if (name !== undefined) body.model = name;
    const { data } = readPoolingResponse(await this.client.postJson('/pooling', body, signal));
    if (data.length !== rows.length)
      throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling answered ${data.length} data entries for ${rows.length} input(s)`);
    // Entries without an index keep their place.
    const ordered = [...data].sort((a, b) => (a.index !== undefined && b.index !== undefined ? a.index - b.index : 0));
    return rows.map((ids, r) => this.toLogits(ordered[r].data, ids.length));
  }

  private toLogits(value: number[][], positions: number): Float32Array {
    const L = this.numLabels;
    if (value.length !== positions) throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling answered ${value.length} rows for ${positions} tokens`);
    const out = new Float32Array(positions * L);
    value.forEach((row, p) => {
      if (row.length !== L) {
        throw new LlmError(
          ErrorCodes.LLM_BAD_RESPONSE,
          `/pooling row ${p} has ${row.length} values; the local model has ${L} labels (check llm.modelDir matches the served model)`,
        );
      }
      for (let k = 0; k < L; k++) out[p * L + k] = row[k];
    });
    return out;
  }

  async close(): Promise<void> {
    // The HTTP client holds no connections of its own beyond undici's pool.
  }
}
