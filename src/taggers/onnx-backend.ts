import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { ErrorCodes, ModelLoadError, TaggerError } from '../errors.js';
import { resolveIntraOpThreads } from './cpu-quota.js';
import { type GenerationJob, type GenerationOutput, generateBatch } from './llm/generation-loop.js';
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

/** What the inference thread is asked (one request, one reply with the same id). */
type InferenceRequest =
  | { kind: 'load'; id: number; modelPath: string; options: ort.InferenceSession.SessionOptions }
  | { kind: 'run'; id: number; session: number; feeds: Array<{ name: string; data: BigInt64Array; dims: number[] }> }
  /** A whole generation of one batch; `cancel[0]` set to 1 by the main thread stops it between steps. */
  | { kind: 'generate'; id: number; session: number; job: GenerationJob; cancel: Int32Array }
  | { kind: 'release'; id: number; session: number };

type InferenceReply =
  | {
      id: number;
      ok: true;
      session?: number;
      inputNames?: string[];
      outputNames?: string[];
      logits?: Float32Array;
      dims?: number[];
      runMs?: number;
      generation?: GenerationOutput;
    }
  | { id: number; ok: false; message: string };

const WORKER_FLAG = 'bionerOnnxInferenceThread';
/** Slots of the thread's shared state: a run is in progress; the process is exiting (no run may start). */
const RUNNING = 0;
const EXITING = 1;

/**
 * The process's one inference thread: every OnnxBackend's session and every
 * GenerativeDecoder's (GenerationSession) lives and runs there, one run at a
 * time. onnxruntime-node runs a session synchronously on the calling thread
 * (inside a setImmediate), so on the main
 * thread each run blocked the event loop: decoding answers, the next notes'
 * text stage, Kafka fetches, publishes and commits all waited between runs,
 * about 15 % of the pipeline's wall time (npm run bench:scale). On its own
 * thread a run overlaps that work. One thread for all sessions keeps what the
 * main thread gave: the encoder's and the LLM's runs never contend for cores.
 * Started with the first session, ended with the last (it never keeps the
 * process alive while idle).
 */
class InferenceThread {
  private static current: InferenceThread | undefined;
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: InferenceReply & { ok: true }) => void; reject: (err: Error) => void }>();
  private nextId = 1;
  private sessions = 0;
  private dead: Error | undefined;
  private readonly state = new Int32Array(new SharedArrayBuffer(8));
  /**
   * onnxruntime-node aborts the whole process (an uncaught Napi::Error) when its
   * thread is torn down in the middle of a run, as process.exit() does (the
   * CLI's second signal): on exit no run may start, and the one running is
   * waited for (a batch takes milliseconds).
   */
  private readonly onExit = (): void => {
    Atomics.store(this.state, EXITING, 1);
    const until = Date.now() + 10_000;
    while (Atomics.load(this.state, RUNNING) === 1 && Date.now() < until) Atomics.wait(this.state, RUNNING, 1, 50);
  };

  private constructor() {
    this.worker = new Worker(new URL(import.meta.url), { workerData: { [WORKER_FLAG]: true, state: this.state } });
    this.worker.unref();
    process.on('exit', this.onExit);
    this.worker.on('message', (reply: InferenceReply) => {
      const waiter = this.pending.get(reply.id);
      if (waiter === undefined) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) this.worker.unref();
      if (reply.ok) waiter.resolve(reply);
      else waiter.reject(new Error(reply.message));
    });
    const fail = (err: Error): void => {
      this.dead ??= err;
      process.off('exit', this.onExit);
      if (InferenceThread.current === this) InferenceThread.current = undefined;
      for (const w of this.pending.values()) w.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', (err) => fail(err));
    this.worker.on('exit', (code) => fail(new Error(`the onnxruntime inference thread exited (code ${code})`)));
  }

  /** The running thread, started if need be, holding one more session. */
  static acquire(): InferenceThread {
    InferenceThread.current ??= new InferenceThread();
    InferenceThread.current.sessions++;
    return InferenceThread.current;
  }

  /** One session fewer; the last one ends the thread. */
  async releaseOne(): Promise<void> {
    this.sessions--;
    if (this.sessions > 0) return;
    if (InferenceThread.current === this) InferenceThread.current = undefined;
    await this.worker.terminate();
  }

  ask(request: InferenceRequest, transfer: ArrayBuffer[] = []): Promise<InferenceReply & { ok: true }> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage(request, transfer);
    });
  }

  id(): number {
    return this.nextId++;
  }
}

/**
 * The inference thread's side: sessions by id, one request at a time in
 * arrival order, except that a generation (many steps, up to seconds) lets the
 * single runs queued behind it (the encoder's batches) go between two of its
 * steps: they would otherwise wait for the whole generation, where on the
 * main thread they used to overlap it.
 */
function serveInferenceThread(state: Int32Array): void {
  const port = parentPort;
  if (port === null) return;
  const sessions = new Map<number, ort.InferenceSession>();
  let nextSession = 1;
  const waiting: InferenceRequest[] = [];
  let busy = false;
  const sessionOf = (id: number): ort.InferenceSession => {
    const session = sessions.get(id);
    if (session === undefined) throw new Error(`no session ${id} on the inference thread`);
    return session;
  };
  /** One forward run, exit-safe: marked before the exit flag is read (the main thread sets the flag, then reads the mark), so a run either starts before the process's exit waits for it, or not at all. */
  const run = async (session: ort.InferenceSession, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> => {
    Atomics.store(state, RUNNING, 1);
    try {
      if (Atomics.load(state, EXITING) === 1) throw new Error('the process is exiting');
      return await session.run(feeds);
    } finally {
      Atomics.store(state, RUNNING, 0);
      Atomics.notify(state, RUNNING);
    }
  };
  const handle = async (req: InferenceRequest): Promise<InferenceReply> => {
    if (req.kind === 'load') {
      const session = await ort.InferenceSession.create(req.modelPath, req.options);
      const id = nextSession++;
      sessions.set(id, session);
      return { id: req.id, ok: true, session: id, inputNames: [...session.inputNames], outputNames: [...session.outputNames] };
    }
    const session = sessionOf(req.session);
    if (req.kind === 'release') {
      sessions.delete(req.session);
      await session.release();
      return { id: req.id, ok: true };
    }
    if (req.kind === 'generate') {
      const generation = await generateBatch(req.job, {
        run: (feeds) => run(session, feeds),
        stopped: () => Atomics.load(req.cancel, 0) === 1,
        betweenSteps: serveWaitingRuns,
      });
      return { id: req.id, ok: true, generation };
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (const f of req.feeds) feeds[f.name] = new ort.Tensor('int64', f.data, f.dims);
    const t = performance.now();
    const output = await run(session, feeds);
    const runMs = performance.now() - t;
    const tensor = output.logits ?? output[session.outputNames[0]];
    // A copy: the output's buffer belongs to onnxruntime, and a copy of our own can be handed over without another.
    const logits = Float32Array.from(tensor.data as Float32Array);
    return { id: req.id, ok: true, logits, dims: [...tensor.dims], runMs };
  };
  const serve = async (req: InferenceRequest): Promise<void> => {
    let reply: InferenceReply;
    try {
      reply = await handle(req);
    } catch (err) {
      reply = { id: req.id, ok: false, message: err instanceof Error ? err.message : String(err) };
    }
    const transfer: ArrayBuffer[] = [];
    if (reply.ok && reply.logits !== undefined) transfer.push(reply.logits.buffer as ArrayBuffer);
    if (reply.ok && reply.generation !== undefined) transfer.push(reply.generation.tags.buffer as ArrayBuffer, reply.generation.probs.buffer as ArrayBuffer);
    port.postMessage(reply, transfer);
  };
  /**
   * Between two generation steps: the single runs waiting now, in order (not
   * those arriving meanwhile, so a stream of them cannot starve the
   * generation); loads, releases and other generations wait for its end.
   */
  async function serveWaitingRuns(): Promise<void> {
    const runs = waiting.filter((r) => r.kind === 'run');
    if (runs.length === 0) return;
    const rest = waiting.filter((r) => r.kind !== 'run');
    waiting.length = 0;
    waiting.push(...rest);
    for (const req of runs) await serve(req);
  }
  port.on('message', (req: InferenceRequest) => {
    waiting.push(req);
    if (busy) return;
    busy = true;
    void (async () => {
      for (let req = waiting.shift(); req !== undefined; req = waiting.shift()) await serve(req);
      busy = false;
    })();
  });
}

const data = workerData as { [WORKER_FLAG]?: boolean; state?: Int32Array } | null;
if (!isMainThread && data?.[WORKER_FLAG] === true && data.state !== undefined) serveInferenceThread(data.state);

/**
 * One session on the inference thread, held by OnnxBackend or GenerationSession:
 * loaded there (the thread is started if need be), released once, which ends
 * the thread with its last session.
 */
class ThreadSession {
  private released = false;

  private constructor(
    private readonly thread: InferenceThread,
    private readonly session: number,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  /** onnxruntime's error as is (the caller names the bundle). */
  static async load(modelPath: string, intraOpThreads: number): Promise<ThreadSession> {
    const thread = InferenceThread.acquire();
    try {
      const loaded = await thread.ask({ kind: 'load', id: thread.id(), modelPath, options: onnxSessionOptions(intraOpThreads) });
      return new ThreadSession(thread, loaded.session ?? 0, loaded.inputNames ?? [], loaded.outputNames ?? []);
    } catch (err) {
      await thread.releaseOne();
      throw err;
    }
  }

  get isReleased(): boolean {
    return this.released;
  }

  run(feeds: Array<{ name: string; data: BigInt64Array; dims: number[] }>): Promise<InferenceReply & { ok: true }> {
    return this.thread.ask(
      { kind: 'run', id: this.thread.id(), session: this.session, feeds },
      feeds.map((f) => f.data.buffer as ArrayBuffer),
    );
  }

  generate(job: GenerationJob, cancel: Int32Array, transfer: ArrayBuffer[]): Promise<InferenceReply & { ok: true }> {
    return this.thread.ask({ kind: 'generate', id: this.thread.id(), session: this.session, job, cancel }, transfer);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    try {
      await this.thread.ask({ kind: 'release', id: this.thread.id(), session: this.session });
    } finally {
      await this.thread.releaseOne();
    }
  }
}

/**
 * Runs `model.onnx` of an HF token-classification export in-process, on the
 * process's inference thread (InferenceThread): inputs `input_ids`,
 * `attention_mask` (and `token_type_ids` when the graph has it), output
 * `logits` of shape [rows, positions, labels]. The decoder classifiers
 * (models/<ds>-decoder-classifier) have the same interface: the causal model repeats the
 * sentence inside the graph and still answers one row per input position.
 */
export class OnnxBackend implements LogitsBackend {
  readonly kind = 'onnxruntime';
  readonly mayAnswerProbabilities = false;
  /**
   * Fitted on the reference encoder's batches in the pipeline (ms = 0.147 cols
   * + 0.0165 rows x cols + 0.42): each position step costs about 9 rows more
   * than its rows, each call about 25 positions. The batching it steers is
   * insensitive to these between 4 and 32 step rows (simulated on mtsamples).
   */
  readonly batchCost = { stepRows: 8, callCells: 24 };
  /** One batch waits on the inference thread behind the running one (its runs are in order, one at a time). */
  readonly queuesAhead = 1;
  /** Runs done and the time onnxruntime itself took for them (ms, measured on the inference thread). */
  readonly stats = { runs: 0, runMs: 0 };
  private readonly needsTokenTypeIds: boolean;

  private constructor(
    private readonly session: ThreadSession,
    private readonly options: OnnxBackendOptions,
  ) {
    this.needsTokenTypeIds = session.inputNames.includes('token_type_ids');
  }

  static async load(modelDir: string, options: OnnxBackendOptions): Promise<OnnxBackend> {
    let session: ThreadSession;
    try {
      session = await ThreadSession.load(join(modelDir, 'model.onnx'), options.intraOpThreads ?? 0);
    } catch (err) {
      throw new ModelLoadError(`model.onnx in ${modelDir} could not be loaded by onnxruntime: ${(err as Error).message}`, { cause: err });
    }
    for (const input of ['input_ids', 'attention_mask']) {
      if (!session.inputNames.includes(input)) {
        await session.release().catch(() => undefined);
        throw new ModelLoadError(`model.onnx in ${modelDir} lacks the input "${input}" (has ${session.inputNames.join(', ')})`);
      }
    }
    return new OnnxBackend(session, options);
  }

  async run(batch: readonly number[][]): Promise<Float32Array[]> {
    if (this.session.isReleased) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'the onnxruntime session is closed');
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
    const feeds = [
      { name: 'input_ids', data: inputIds, dims: [rows, cols] },
      { name: 'attention_mask', data: mask, dims: [rows, cols] },
    ];
    if (this.needsTokenTypeIds) feeds.push({ name: 'token_type_ids', data: new BigInt64Array(rows * cols), dims: [rows, cols] });
    const reply = await this.session.run(feeds);
    this.stats.runs++;
    this.stats.runMs += reply.runMs ?? 0;
    const logits = reply.logits ?? new Float32Array(0);
    const numLabels = this.options.numLabels;
    const dims = reply.dims ?? [];
    if (dims.length !== 3 || dims[0] !== rows || dims[1] !== cols || dims[2] !== numLabels) {
      throw new TaggerError(ErrorCodes.INFERENCE_FAILED, `logits have shape [${dims.join(', ')}], expected [${rows}, ${cols}, ${numLabels}]`);
    }
    // Views, not copies: the buffer came over from the inference thread and is ours alone.
    return batch.map((ids, r) => logits.subarray(r * cols * numLabels, (r * cols + ids.length) * numLabels));
  }

  close(): Promise<void> {
    return this.session.release();
  }
}

/**
 * A KV-cache decoder's session on the inference thread (GenerativeDecoder):
 * each request is the whole generation of one batch, so the past key/values
 * stay on that thread; only the rows go there, and only the tags and
 * probabilities come back (transferred, not copied).
 */
export class GenerationSession {
  private constructor(private readonly session: ThreadSession) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Loads `modelPath` there; onnxruntime's error as is (the caller names the bundle). */
  static async load(modelPath: string, intraOpThreads: number): Promise<GenerationSession> {
    return new GenerationSession(await ThreadSession.load(modelPath, intraOpThreads));
  }

  /**
   * Generates one batch there (its arrays are transferred: the caller must not
   * reuse them). Setting `cancel[0]` to 1 (Atomics.store) stops it before its next step.
   */
  async generate(job: GenerationJob, cancel: Int32Array): Promise<GenerationOutput> {
    if (this.session.isReleased) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'the generative onnxruntime session is closed');
    const { batch } = job;
    const reply = await this.session.generate(job, cancel, [
      batch.rowWords.buffer as ArrayBuffer,
      batch.wordPieces.buffer as ArrayBuffer,
      batch.pieces.buffer as ArrayBuffer,
      batch.allowed.buffer as ArrayBuffer,
    ]);
    if (reply.generation === undefined) throw new TaggerError(ErrorCodes.INFERENCE_FAILED, 'the inference thread answered a generation without its result');
    return reply.generation;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
