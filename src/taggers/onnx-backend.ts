import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { ErrorCodes, ModelLoadError, TaggerError } from '../errors.js';
import { resolveIntraOpThreads } from './cpu-quota.js';
import type { LogitsBackend } from './token-classifier.js';

/**
 * Session options for every in-process model. Spin-waiting is off: by default
 * onnxruntime's idle intra-op threads spin for a while after each run (about
 * 55 ms of CPU per run measured here), which on a few cores takes CPU from the
 * event loop (Kafka, tokenising) and from the other model's session, while a
 * run itself is no faster with it (22.1 vs 21.5 ms per batch of 32).
 */
export function onnxSessionOptions(intraOpThreads: number): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: resolveIntraOpThreads(intraOpThreads),
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

export interface OnnxBackendOptions {
  /** onnxruntime intra-op threads; 0: the container's CPU limit (cgroup quota), else onnxruntime's choice. */
  intraOpThreads?: number;
  /** Id used to pad rows of a batch to one length (masked out). */
  padId: number;
  numLabels: number;
}

/**
 * Runs `model.onnx` of an HF token-classification export in-process:
 * inputs `input_ids`, `attention_mask` (and `token_type_ids` when the graph has
 * it), output `logits` of shape [rows, positions, labels]. The reference
 * decoder bundles (models/<ds>-llm) have the same interface: the causal model
 * repeats the sentence inside the graph and still answers one row per input
 * position.
 */
export class OnnxBackend implements LogitsBackend {
  readonly kind = 'onnxruntime';
  readonly mayAnswerProbabilities = false;
  private readonly needsTokenTypeIds: boolean;

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly options: OnnxBackendOptions,
  ) {
    this.needsTokenTypeIds = session.inputNames.includes('token_type_ids');
  }

  static async load(modelDir: string, options: OnnxBackendOptions): Promise<OnnxBackend> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(join(modelDir, 'model.onnx'), onnxSessionOptions(options.intraOpThreads ?? 0));
    } catch (err) {
      throw new ModelLoadError(`model.onnx in ${modelDir} could not be loaded by onnxruntime: ${(err as Error).message}`, { cause: err });
    }
    for (const input of ['input_ids', 'attention_mask']) {
      if (!session.inputNames.includes(input)) {
        await session.release();
        throw new ModelLoadError(`model.onnx in ${modelDir} lacks the input "${input}" (has ${session.inputNames.join(', ')})`);
      }
    }
    return new OnnxBackend(session, options);
  }

  async run(batch: readonly number[][]): Promise<Float32Array[]> {
    const rows = batch.length;
    const cols = batch.reduce((m, ids) => Math.max(m, ids.length), 0);
    const inputIds = new BigInt64Array(rows * cols).fill(BigInt(this.options.padId));
    const mask = new BigInt64Array(rows * cols);
    batch.forEach((ids, r) => {
      const base = r * cols;
      for (let c = 0; c < ids.length; c++) {
        inputIds[base + c] = BigInt(ids[c]);
        mask[base + c] = 1n;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', inputIds, [rows, cols]),
      attention_mask: new ort.Tensor('int64', mask, [rows, cols]),
    };
    if (this.needsTokenTypeIds) feeds.token_type_ids = new ort.Tensor('int64', new BigInt64Array(rows * cols), [rows, cols]);
    const output = await this.session.run(feeds);
    const logitsTensor = output.logits ?? output[this.session.outputNames[0]];
    const logits = logitsTensor.data as Float32Array;
    const numLabels = this.options.numLabels;
    const dims = logitsTensor.dims;
    if (dims.length !== 3 || dims[0] !== rows || dims[1] !== cols || dims[2] !== numLabels) {
      throw new TaggerError(ErrorCodes.INFERENCE_FAILED, `logits have shape [${dims.join(', ')}], expected [${rows}, ${cols}, ${numLabels}]`);
    }
    return batch.map((ids, r) => logits.slice(r * cols * numLabels, (r * cols + ids.length) * numLabels));
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
