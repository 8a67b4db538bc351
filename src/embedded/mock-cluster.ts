/**
 * Embedded Kafka for tests and the demo: librdkafka's mock cluster, run as a
 * child process (scripts/mock-kafka/mock_cluster.c, built to build/mock-kafka)
 * and driven over a line protocol on its stdin/stdout.
 *
 * The mock speaks the Kafka protocol over TCP on 127.0.0.1, so kafkajs talks to
 * it like to a real cluster (plain producer and consumer groups work;
 * idempotent/transactional producers, SASL and TLS do not). It has no
 * CreateTopics API: create topics with `topics` or `createTopic()`.
 *
 * Mock behaviour worth knowing (librdkafka 2.0.2, measured with kafkajs 2.2.4):
 * - An empty Fetch is held for the consumer's full maxWaitTimeInMs even when
 *   records arrive meanwhile: give consumers `maxWaitTimeInMs: 100` or each
 *   idle fetch adds up to 5 s (kafkajs default) of latency.
 * - The first group join takes about 3 s (initial rebalance delay).
 * - Unknown topics are auto-created on Metadata (4 partitions); admin calls
 *   that need the controller fail (the mock reports controller id 0).
 */
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { EmbeddedKafkaError } from '../errors.js';

/** Kafka protocol API keys, for `pushRequestErrors`. */
export const ApiKeys = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  ApiVersions: 18,
} as const;

/** Kafka error codes commonly injected with `pushRequestErrors`. */
export const KafkaErrorCodes = {
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  LEADER_NOT_AVAILABLE: 5,
  NOT_LEADER_FOR_PARTITION: 6,
  REQUEST_TIMED_OUT: 7,
  NETWORK_EXCEPTION: 13,
  COORDINATOR_LOAD_IN_PROGRESS: 14,
  COORDINATOR_NOT_AVAILABLE: 15,
  NOT_COORDINATOR: 16,
  ILLEGAL_GENERATION: 22,
  UNKNOWN_MEMBER_ID: 25,
  REBALANCE_IN_PROGRESS: 27,
  /** librdkafka-internal: the mock broker drops the connection instead of answering. */
  TRANSPORT: -195,
} as const;

export interface MockTopic {
  name: string;
  partitions: number;
}

export interface MockClusterOptions {
  /** Number of brokers, ids 1..brokers (default 3). */
  brokers?: number;
  /** Topics created before `start` resolves. */
  topics?: MockTopic[];
  /** Launcher binary (default: `mockKafkaBinaryPath()`, built on demand). */
  binaryPath?: string;
  /** How long to wait for the BOOTSTRAP line (default 10 s). */
  startTimeoutMs?: number;
}

const COMMAND_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;
const STDERR_TAIL_CHARS = 4_000;
/** Kafka's legal topic characters; also keeps spaces and newlines out of the line protocol. */
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

type Child = ChildProcessByStdio<Writable, Readable, Readable>;

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Package root: this file is src/embedded/*.ts under tsx and dist/embedded/*.js after tsc. */
function packageRoot(): string {
  return fileURLToPath(new URL('../../', import.meta.url));
}

export function mockKafkaBinaryPath(): string {
  return fileURLToPath(new URL('../../build/mock-kafka', import.meta.url));
}

let building: Promise<string> | undefined;

/** Returns the launcher path, running scripts/build-mock-kafka.sh first when the binary is missing. */
export async function ensureMockKafkaBinary(): Promise<string> {
  const bin = mockKafkaBinaryPath();
  try {
    await access(bin, constants.X_OK);
    return bin;
  } catch {
    // missing: build it (once, even when called concurrently)
  }
  building ??= new Promise<string>((resolve, reject) => {
    const script = fileURLToPath(new URL('../../scripts/build-mock-kafka.sh', import.meta.url));
    execFile('bash', [script], { cwd: packageRoot() }, (err, _stdout, stderr) => {
      building = undefined;
      if (err) reject(new EmbeddedKafkaError(`building the mock Kafka launcher failed: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(bin);
    });
  });
  return building;
}

function assertInt(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new EmbeddedKafkaError(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

function assertTopic(name: string, partitions: number): void {
  if (!TOPIC_NAME.test(name)) throw new EmbeddedKafkaError(`invalid topic name ${JSON.stringify(name)}`);
  assertInt('partitions', partitions, 1, 100_000);
}

export class MockKafkaCluster {
  /** e.g. ['127.0.0.1:40123', '127.0.0.1:40125', '127.0.0.1:40127'] */
  readonly bootstrapServers: string[];
  readonly brokerCount: number;

  private readonly child: Child;
  private readonly stderrTail: { text: string };
  private queue: Promise<void> = Promise.resolve();
  private pending: Pending | undefined;
  private exitInfo: string | undefined;
  private readonly exited: Promise<void>;
  private stopping: Promise<void> | undefined;

  private constructor(child: Child, bootstrap: string[], brokers: number, stderrTail: { text: string }, exited: Promise<void>) {
    this.child = child;
    this.bootstrapServers = bootstrap;
    this.brokerCount = brokers;
    this.stderrTail = stderrTail;
    this.exited = exited;
  }

  /** Child process id (for tests that check the process is gone). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** False once the child process has exited. */
  get isRunning(): boolean {
    return this.exitInfo === undefined;
  }

  /**
   * The demo's and the soak's cluster: 3 brokers, the input and output topics
   * with 3 partitions each and the DLQ with 1.
   */
  static startForPipeline(topics: { input: string; output: string; dlq: string }): Promise<MockKafkaCluster> {
    return MockKafkaCluster.start({
      brokers: 3,
      topics: [
        { name: topics.input, partitions: 3 },
        { name: topics.output, partitions: 3 },
        { name: topics.dlq, partitions: 1 },
      ],
    });
  }

  static async start(opts: MockClusterOptions = {}): Promise<MockKafkaCluster> {
    const brokers = opts.brokers ?? 3;
    assertInt('brokers', brokers, 1, 64);
    const args = ['--brokers', String(brokers)];
    for (const t of opts.topics ?? []) {
      assertTopic(t.name, t.partitions);
      args.push('--topic', `${t.name}:${t.partitions}`);
    }
    const bin = opts.binaryPath ?? (await ensureMockKafkaBinary());
    const timeoutMs = opts.startTimeoutMs ?? 10_000;
    const debug = process.env.BIONER_MOCK_DEBUG === '1';

    const child: Child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // Always drain stderr (a full pipe would stall the child); keep a tail for error messages.
    const stderrTail = { text: '' };
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (debug) process.stderr.write(chunk);
      stderrTail.text = (stderrTail.text + chunk).slice(-STDERR_TAIL_CHARS);
    });
    // Writes after the child died fail with EPIPE; the exit handler reports that instead.
    child.stdin.on('error', () => undefined);

    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    let cluster: MockKafkaCluster | undefined;
    const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });

    const bootstrap = await new Promise<string[]>((resolve, reject) => {
      const fail = (why: string, cause?: unknown): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        const tail = stderrTail.text.trim();
        reject(new EmbeddedKafkaError(`mock Kafka failed to start: ${why}${tail ? ` (stderr: ${tail.slice(-500)})` : ''}`, { cause }));
      };
      const timer = setTimeout(() => fail(`no BOOTSTRAP line within ${timeoutMs} ms`), timeoutMs);
      child.once('error', (err) => {
        if (!cluster) fail(`cannot run ${bin}: ${err.message}`, err);
      });
      // 'close', not 'exit': it comes after stdout is drained, so no answer line is lost.
      child.once('close', (code, signal) => {
        if (cluster) cluster.onExit(code, signal);
        else fail(`exited early (code ${String(code)}, signal ${String(signal)})`);
      });
      rl.on('line', (line) => {
        if (cluster) return cluster.onLine(line);
        const m = /^BOOTSTRAP (\S+)$/.exec(line);
        if (!m) return; // nothing else is printed before BOOTSTRAP
        clearTimeout(timer);
        resolve(m[1].split(','));
      });
    });
    cluster = new MockKafkaCluster(child, bootstrap, brokers, stderrTail, exited);
    return cluster;
  }

  async brokerDown(id: number): Promise<void> {
    this.assertBroker(id);
    return this.command(`down ${id}`);
  }

  async brokerUp(id: number): Promise<void> {
    this.assertBroker(id);
    return this.command(`up ${id}`);
  }

  /** Adds `ms` of delay to every response of broker `id` (-1: all brokers). */
  async setRtt(id: number, ms: number): Promise<void> {
    this.assertBroker(id);
    assertInt('rtt ms', ms, 0, 2 ** 31 - 1);
    return this.command(`rtt ${id} ${ms}`);
  }

  /** The next `errorCodes.length` requests with this API key fail with these codes, in order (any broker). */
  async pushRequestErrors(apiKey: number, errorCodes: number[]): Promise<void> {
    assertInt('apiKey', apiKey, 0, 32_767);
    if (errorCodes.length === 0 || errorCodes.length > 64) throw new EmbeddedKafkaError('errorCodes must hold 1..64 codes');
    for (const c of errorCodes) assertInt('error code', c, -200, 1000);
    return this.command(`errors ${apiKey} ${errorCodes.join(' ')}`);
  }

  /** Creates a topic at runtime (replication min(3, brokers)); rejects if it exists. */
  async createTopic(name: string, partitions: number): Promise<void> {
    assertTopic(name, partitions);
    return this.command(`topic ${name} ${partitions}`);
  }

  /** Round-trip to the launcher; resolves when it answers. */
  ping(): Promise<void> {
    return this.command('ping');
  }

  /** Idempotent: asks the launcher to quit, kills it if it has not exited within a grace period. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /**
   * Sends one raw command line (`down 1`, `errors 1 6 6`, ...). Commands run one
   * at a time; an `ERR` answer rejects with EmbeddedKafkaError.
   */
  command(line: string): Promise<void> {
    if (/[\r\n]/.test(line)) return Promise.reject(new EmbeddedKafkaError('command must be a single line'));
    const run = this.queue.then(() => this.exec(line));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private assertBroker(id: number): void {
    if (id !== -1) assertInt('broker id', id, 1, this.brokerCount);
  }

  private exec(line: string): Promise<void> {
    if (this.exitInfo !== undefined) return Promise.reject(new EmbeddedKafkaError(`mock Kafka is not running (${this.exitInfo})`));
    if (this.stopping) return Promise.reject(new EmbeddedKafkaError('mock Kafka is stopping'));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        reject(new EmbeddedKafkaError(`mock Kafka did not answer "${line}" within ${COMMAND_TIMEOUT_MS} ms`));
      }, COMMAND_TIMEOUT_MS);
      this.pending = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.child.stdin.write(`${line}\n`);
    });
  }

  private onLine(line: string): void {
    const p = this.pending;
    this.pending = undefined;
    if (!p) return; // e.g. the OK to quit, sent by stop() outside the queue
    if (line === 'OK') p.resolve();
    else p.reject(new EmbeddedKafkaError(`mock Kafka: ${line.startsWith('ERR ') ? line.slice(4) : `unexpected answer ${JSON.stringify(line)}`}`));
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exitInfo = `exited with code ${String(code)}, signal ${String(signal)}`;
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      const tail = this.stopping ? '' : this.stderrTail.text.trim().slice(-500);
      p.reject(new EmbeddedKafkaError(`mock Kafka ${this.exitInfo}${tail ? ` (stderr: ${tail})` : ''}`));
    }
  }

  private async doStop(): Promise<void> {
    if (this.exitInfo === undefined) {
      // quit answers OK and exits; closing stdin (EOF) would also end it.
      this.child.stdin.end('quit\n');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), STOP_GRACE_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) this.child.kill('SIGKILL');
    }
    await this.exited;
  }
}
