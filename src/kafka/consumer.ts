import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import pLimit, { type LimitFunction } from 'p-limit';
import { ErrorCodes, RouterError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { ConsumerState, InboundRecord, RecordHandler } from './types.js';

export interface ConsumerLoopOptions {
  topic: string;
  groupId: string;
  fromBeginning: boolean;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  maxWaitTimeMs: number;
  partitionsConsumedConcurrently: number;
  /** Records handled at once (p-limit). */
  concurrency: number;
  /** Fetched-but-unfinished records; fetching pauses at this bound and resumes at half. */
  maxInFlight: number;
  /** Told whenever fetching pauses or resumes. */
  onPauseChanged?: (state: ConsumerState) => void;
}

/** Longest time finished records stay uncommitted while a batch runs: what a crash may make the next owner redo. */
const AUTO_COMMIT_MS = 1000;

/** The error a record gets when the loop stops before it was handled: it stays uncommitted and is redelivered. */
export function shuttingDownError(): RouterError {
  return new RouterError(ErrorCodes.SHUTTING_DOWN, 'the router is stopping; the record stays uncommitted and is redelivered', {
    retriable: true,
    stage: 'ingest',
  });
}

const isShuttingDown = (err: unknown): boolean => err instanceof RouterError && err.code === ErrorCodes.SHUTTING_DOWN;

/**
 * A kafkajs consumer group member that hands each record to one handler and
 * owns everything about offsets: resolved strictly in order per partition,
 * and only once the handler resolved; committed at the end of each batch.
 * kafkajs has no background heartbeat, so a timer heartbeats during long
 * batches; a rebalance seen there stops the batch early (finished records are
 * committed, the rest redelivered). At most `maxInFlight` records are fetched
 * and unfinished: the consumer pauses at that bound and resumes at half.
 * Consumer lag (records behind the high watermark, counted down as records
 * finish) is kept per partition and pruned when a partition is revoked.
 */
export class ConsumerLoop {
  private readonly consumer: Consumer;
  private readonly limit: LimitFunction;
  private readonly waiters: Array<() => void> = [];
  private readonly lagByPartition = new Map<string, number>();
  private readonly state: ConsumerState = { inFlight: 0, paused: false };
  private stopping = false;
  private running = false;

  /** Called when the consumer crashed for good (kafkajs will not restart it). */
  onFatal: (err: unknown) => void = () => undefined;

  constructor(
    kafka: Kafka,
    private readonly options: ConsumerLoopOptions,
    private readonly logger: Logger,
  ) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs,
      maxWaitTimeInMs: options.maxWaitTimeMs,
      allowAutoTopicCreation: false,
    });
    this.limit = pLimit(options.concurrency);
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      this.logger.error('consumer crashed', { error: (e.payload.error as Error | undefined)?.name, restart: e.payload.restart, groupId: e.payload.groupId });
      if (!e.payload.restart && !this.stopping) {
        // kafkajs gives up on non-retriable errors and leaves the process idle: stop being ready and tell the owner.
        this.running = false;
        this.onFatal(e.payload.error);
      }
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      const assigned = new Set(Object.entries(e.payload.memberAssignment).flatMap(([topic, parts]) => parts.map((p) => `${topic}/${p}`)));
      // Partitions this member no longer owns must not keep counting as its lag.
      for (const key of [...this.lagByPartition.keys()]) if (!assigned.has(key)) this.lagByPartition.delete(key);
      this.logger.info('joined consumer group', { groupId: e.payload.groupId, partitions: assigned.size });
    });
  }

  get inFlight(): number {
    return this.state.inFlight;
  }

  get paused(): boolean {
    return this.state.paused;
  }

  /** Connected, subscribed and not stopping. */
  get isRunning(): boolean {
    return this.running && !this.stopping;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Sum over this member's partitions of the records not yet finished; null before the first batch. */
  lag(): number | null {
    if (this.lagByPartition.size === 0) return null;
    let total = 0;
    for (const lag of this.lagByPartition.values()) total += lag;
    return total;
  }

  /** Lag per partition of this member (`topic/partition` keys). */
  lagByKey(): ReadonlyMap<string, number> {
    return this.lagByPartition;
  }

  async start(handler: RecordHandler): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.options.topic, fromBeginning: this.options.fromBeginning });
    if (this.stopping) return;
    await this.consumer.run({
      eachBatchAutoResolve: false,
      autoCommit: true,
      autoCommitInterval: AUTO_COMMIT_MS,
      partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently,
      eachBatch: (payload) => this.eachBatch(payload, handler),
    });
    this.running = true;
  }

  /** From now on no record is started (queued ones are refused with SHUTTING_DOWN) and a pending start() does not run the consumer. */
  requestStop(): void {
    this.stopping = true;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Stops fetching and waits (at most `timeoutMs`) for the records being handled; false when it gave up. */
  async stop(timeoutMs: number): Promise<boolean> {
    this.requestStop();
    return withDeadline(
      this.consumer.stop().then(() => true),
      timeoutMs,
      false,
    );
  }

  async disconnect(timeoutMs: number): Promise<void> {
    await withDeadline(this.consumer.disconnect(), timeoutMs, undefined);
    this.running = false;
  }

  private async eachBatch(
    { batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, uncommittedOffsets, isRunning, isStale }: EachBatchPayload,
    handler: RecordHandler,
  ): Promise<void> {
    const { topic, partition, messages } = batch;
    const lagKey = `${topic}/${partition}`;
    const behind = Number(batch.offsetLag());
    this.lagByPartition.set(lagKey, (Number.isFinite(behind) ? behind : 0) + messages.length);
    const done = new Uint8Array(messages.length);
    let nextToResolve = 0;
    let failure: unknown;
    // kafkajs has no background heartbeat: long tagging inside a batch would otherwise trigger a rebalance.
    const beat = setInterval(
      () => {
        heartbeat().catch((err: unknown) => {
          failure ??= err;
        });
        // Offsets resolved so far are committed during the batch too (at most every AUTO_COMMIT_MS), not only at its end: a
        // batch can hold a partition's whole backlog, and a member killed mid-batch otherwise leaves all of it to be redone
        // (npm run bench:scale: 127 of 720 notes published twice after a SIGKILL). A failed commit here is retried by the next
        // tick or the batch's own commit.
        commitOffsetsIfNecessary().catch(() => undefined);
      },
      Math.max(100, Math.floor(this.options.heartbeatIntervalMs / 2)),
    );
    const tasks: Array<Promise<void>> = [];
    const halted = (): boolean => this.stopping || !isRunning() || isStale() || failure !== undefined;
    try {
      for (let i = 0; i < messages.length; i++) {
        if (halted()) break;
        await this.acquireSlot();
        if (halted()) {
          this.releaseSlot();
          break;
        }
        const record = toInbound(topic, partition, messages[i]);
        tasks.push(
          this.limit(() => (this.stopping ? Promise.reject(shuttingDownError()) : handler(record)))
            .then(
              () => {
                done[i] = 1;
                // Offsets are resolved strictly in order: a later record finishing first waits for the earlier ones.
                while (nextToResolve < messages.length && done[nextToResolve] === 1) {
                  resolveOffset(messages[nextToResolve].offset);
                  nextToResolve++;
                  this.lagByPartition.set(lagKey, Math.max(0, (this.lagByPartition.get(lagKey) ?? 1) - 1));
                }
              },
              (err: unknown) => {
                // A stop leaves the record unresolved for redelivery; anything else ends the batch with an error.
                if (!isShuttingDown(err)) failure ??= err;
              },
            )
            // resolveOffset throws if a rebalance took the partition away mid-batch: end the batch, the new owner redoes the rest.
            .catch((err: unknown) => {
              failure ??= err;
            })
            .finally(() => this.releaseSlot()),
        );
      }
    } finally {
      // Never return while tasks still run: they would resolve offsets after the batch has ended.
      await Promise.allSettled(tasks);
      clearInterval(beat);
    }
    const pending = uncommittedOffsets();
    if (pending.topics.length > 0) {
      try {
        await commitOffsetsIfNecessary(pending);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) {
      this.logger.warn('batch ended early; unresolved records will be redelivered', {
        topic,
        partition,
        resolved: nextToResolve,
        size: messages.length,
        error: failure instanceof Error ? failure.name : 'unknown',
      });
      throw failure;
    }
  }

  private async acquireSlot(): Promise<void> {
    while (this.state.inFlight >= this.options.maxInFlight) {
      if (!this.state.paused) {
        this.state.paused = true;
        this.consumer.pause([{ topic: this.options.topic }]);
        this.options.onPauseChanged?.({ ...this.state });
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.state.inFlight++;
  }

  private releaseSlot(): void {
    this.state.inFlight--;
    if (this.state.paused && this.state.inFlight <= Math.floor(this.options.maxInFlight / 2)) {
      this.state.paused = false;
      this.consumer.resume([{ topic: this.options.topic }]);
      this.options.onPauseChanged?.({ ...this.state });
    }
    this.waiters.shift()?.();
  }
}

function toInbound(topic: string, partition: number, m: KafkaMessage): InboundRecord {
  return { topic, partition, offset: m.offset, key: m.key ?? null, value: m.value ?? null, headers: m.headers ?? {}, timestamp: m.timestamp };
}

/** Resolves with the work's value, or `fallback` when it fails or outlasts `ms`. */
export function withDeadline<T, F>(work: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.catch(() => fallback),
    new Promise<F>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
