import { ModelLoadError } from '../errors.js';
import type { Route } from '../types.js';
import type { BioMode } from './bio.js';
import { loadModelBundle, type ModelBundle } from './model-bundle.js';
import { OnnxBackend } from './onnx-backend.js';
import { TokenClassifierTagger, type LogitsBackend } from './token-classifier.js';

export interface EncoderOptions {
  /** Pieces per window incl. [CLS]/[SEP]; defaults to the model's limit (max_position_embeddings / model_max_length, at most 512). */
  maxSequenceLength?: number;
  windowOverlapWords?: number;
  /** Windows per onnxruntime call, gathered across notes. */
  batchSize?: number;
  /** How long a partial batch waits for more windows. */
  batchWaitMs?: number;
  /** onnxruntime intra-op threads; 0 lets onnxruntime choose. */
  intraOpThreads?: number;
  decode?: BioMode;
}

/** Loads an HF token-classification export and its `model.onnx` (the in-process half of the encoder and of the reference decoder). */
export async function loadOnnxModel(dir: string, options: EncoderOptions = {}): Promise<{ bundle: ModelBundle; backend: OnnxBackend }> {
  const bundle = await loadModelBundle(dir);
  if (options.maxSequenceLength !== undefined && options.maxSequenceLength < 4)
    throw new ModelLoadError(`maxSequenceLength ${options.maxSequenceLength} is too small`);
  const backend = await OnnxBackend.load(bundle.dir, {
    intraOpThreads: options.intraOpThreads ?? 0,
    padId: bundle.special.pad,
    numLabels: bundle.labels.length,
  });
  return { bundle, backend };
}

/** An ONNX token classifier on any route: the encoder, or the reference decoder as the in-process `llm` adapter. */
export async function loadOnnxTagger(dir: string, route: Route, options: EncoderOptions = {}): Promise<TokenClassifierTagger> {
  const { bundle, backend } = await loadOnnxModel(dir, options);
  return new TokenClassifierTagger(route, bundle, backend, { ...options, maxConcurrentBatches: 1 });
}

/**
 * Token classifier over any Hugging Face token-classification export
 * (config.json with id2label, tokenizer.json, model.onnx), run in-process by
 * onnxruntime. Sentences from concurrent notes are windowed, queued and run
 * together in batches; each word takes the prediction of its first sub-word
 * (the HF convention), and BIO tags are decoded per sentence into spans. The
 * path itself is `TokenClassifierTagger`; this class is it over the ONNX backend
 * on the `encoder` route.
 */
export class EncoderTagger extends TokenClassifierTagger {
  declare readonly route: 'encoder';

  protected constructor(bundle: ModelBundle, backend: LogitsBackend, options: EncoderOptions) {
    super('encoder', bundle, backend, { ...options, maxConcurrentBatches: 1 });
  }

  static async load(dir: string, options: EncoderOptions = {}): Promise<EncoderTagger> {
    const { bundle, backend } = await loadOnnxModel(dir, options);
    return new EncoderTagger(bundle, backend, options);
  }
}
