import { ErrorCodes, LlmError } from '../../errors.js';
import type { LogitsBackend } from '../token-classifier.js';
import type { LlmHttpClient } from './http.js';

interface PoolingResponse {
  data?: Array<{ index?: unknown; data?: unknown }>;
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

  constructor(
    private readonly client: LlmHttpClient,
    private readonly numLabels: number,
    private readonly model: string | undefined,
  ) {}

  async run(rows: readonly number[][], signal?: AbortSignal): Promise<Float32Array[]> {
    const body: Record<string, unknown> = { input: rows.length === 1 ? rows[0] : rows, task: 'token_classify' };
    if (this.model !== undefined) body.model = this.model;
    const answer = (await this.client.postJson('/pooling', body, signal)) as PoolingResponse | null;
    const data = answer?.data;
    if (!Array.isArray(data) || data.length !== rows.length) {
      throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling answered ${Array.isArray(data) ? data.length : 'no'} data entries for ${rows.length} input(s)`);
    }
    const ordered = [...data].sort((a, b) => (typeof a.index === 'number' && typeof b.index === 'number' ? a.index - b.index : 0));
    return rows.map((ids, r) => this.toLogits(ordered[r].data, ids.length));
  }

  private toLogits(value: unknown, positions: number): Float32Array {
    const L = this.numLabels;
    if (!Array.isArray(value) || value.length !== positions) {
      throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling answered ${Array.isArray(value) ? value.length : 'no'} rows for ${positions} tokens`);
    }
    const out = new Float32Array(positions * L);
    value.forEach((row: unknown, p) => {
      if (!Array.isArray(row) || row.length !== L) {
        throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling row ${p} has ${Array.isArray(row) ? row.length : 'no'} values; the local model has ${L} labels (check llm.modelDir matches the served model)`);
      }
      for (let k = 0; k < L; k++) {
        const v: unknown = row[k];
        if (typeof v !== 'number' || Number.isNaN(v)) throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `/pooling row ${p} holds a non-number`);
        out[p * L + k] = v;
      }
    });
    return out;
  }

  async close(): Promise<void> {
    // The HTTP client holds no connections of its own beyond undici's pool.
  }
}
