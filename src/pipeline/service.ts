import { performance } from 'node:perf_hooks';
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Span } from '@opentelemetry/api';
import { CompressionTypes, type Consumer, type EachBatchPayload, type KafkaMessage, type Producer } from 'kafkajs';
import pLimit, { type LimitFunction } from 'p-limit';
import type { RouterConfig } from '../config/schema.js';
import { ErrorCodes, isRetriable, PublishError, RouterError, TaggerError } from '../errors.js';

/** Broker errors that reject one record for good (kafkajs marks them non-retriable). */
const RECORD_REFUSALS = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE', 'INVALID_TIMESTAMP']);

function recordRefusal(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    // kafkajs's error classes are not named ESM exports (its index spreads them), so read the protocol error's `type`.
    const type = (current as { type?: unknown }).type;
    if (current.name === 'KafkaJSProtocolError' && typeof type === 'string' && RECORD_REFUSALS.has(type)) return type;
    current = current.cause;
  }
  return undefined;
}

function shuttingDown(): RouterError {
  return new RouterError(ErrorCodes.SHUTTING_DOWN, 'the router is stopping; the record stays uncommitted and is redelivered', { retriable: true, stage: 'ingest' });
}
import { decodeNote } from '../ingest/decode.js';
import { createKafka, createProducer } from '../ingest/kafka.js';
import type { KafkaSecurityOptions } from '../ingest/kafka-security.js';
import type { RecordPosition } from '../ingest/note.js';
import { buildDlqMessage, DlqHeaders } from '../publish/dlq.js';
import { encodeTaggedNote } from '../publish/tagged-note.js';
import { BionerAttr, MESSAGING_SYSTEM_KAFKA, MessagingAttr } from '../telemetry/attributes.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import { kafkaHeaderGetter, kafkaHeaderSetter, recordFailure, tracer } from '../telemetry/tracing.js';
import type { Logger } from '../telemetry/logger.js';
import { parseBudgetHeader } from '../route/budget.js';
import type { NoteProcessor } from './processor.js';

export interface RouterServiceStats {
  received: number;
  published: number;
  deadLettered: number;
  retries: number;
  inFlight: number;
  paused: boolean;
}

/**
 * The streaming loop: consume notes, tag them, publish one Avro record (or one
 * DLQ record) per input record, and commit an offset only once everything up to
 * it is acknowledged by the broker. At-least-once: a crash between publish and
 * commit republishes under the same key (note id), so output stays idempotent.
 */
export class RouterService {
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly limit: LimitFunction;
  private readonly hooks: Required<PipelineHooks>;
  private readonly waiters: Array<() => void> = [];
  private closing: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  private stopping = false;
  private connected = false;
  /** False when the last close() gave up waiting for in-flight notes. */
  drained = true;
  readonly stats: RouterServiceStats = { received: 0, published: 0, deadLettered: 0, retries: 0, inFlight: 0, paused: false };
  /** Records behind the high watermark per topic/partition, not yet finished (for load shedding). */
  private readonly lagByPartition = new Map<string, number>();

  constructor(
    private readonly config: RouterConfig,
    private readonly processor: NoteProcessor,
    private readonly logger: Logger,
    hooks: PipelineHooks = {},
    /** kafkajs ssl/sasl options from kafkaSecurityOptions(config.kafka); none on defaults. */
    kafkaSecurity: KafkaSecurityOptions = {},
  ) {
    const kafka = createKafka(config.kafka, logger, kafkaSecurity);
    this.consumer = kafka.consumer({
      groupId: config.input.groupId,
      sessionTimeout: config.input.sessionTimeoutMs,
      heartbeatInterval: config.input.heartbeatIntervalMs,
      maxWaitTimeInMs: config.input.maxWaitTimeMs,
      allowAutoTopicCreation: false,
    });
    this.producer = createProducer(kafka);
    this.limit = pLimit(config.processing.concurrency);
    this.hooks = safeHooks(hooks, logger);
    processor.attachLoad(() => ({ inFlight: this.stats.inFlight, lag: this.consumerLag() }));
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      this.logger.error('consumer crashed', { error: (e.payload.error as Error | undefined)?.name, restart: e.payload.restart, groupId: e.payload.groupId });
      if (!e.payload.restart && !this.stopping) {
        // kafkajs gives up on non-retriable errors and leaves the process idle: stop being ready and tell the owner.
        this.connected = false;
        this.onFatal(e.payload.error);
      }
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      this.logger.info('joined consumer group', { groupId: e.payload.groupId, partitions: Object.values(e.payload.memberAssignment).flat().length });
    });
  }

  /** Sum over this consumer's partitions of the records not yet finished; null before the first batch. */
  consumerLag(): number | null {
    if (this.lagByPartition.size === 0) return null;
    let total = 0;
    for (const lag of this.lagByPartition.values()) total += lag;
    return total;
  }

  get isReady(): boolean {
    return this.connected && !this.stopping;
  }

  /** Called when the consumer crashed for good (kafkajs will not restart it); the CLI exits non-zero so the orchestrator restarts the process. */
  onFatal: (err: unknown) => void = () => undefined;

  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    await this.producer.connect();
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.config.input.topic, fromBeginning: this.config.input.fromBeginning });
    if (this.stopping) return;
    await this.consumer.run({
      eachBatchAutoResolve: false,
      autoCommit: true,
      autoCommitInterval: 5000,
      partitionsConsumedConcurrently: this.config.input.partitionsConsumedConcurrently,
      eachBatch: (payload) => this.eachBatch(payload),
    });
    this.connected = true;
    this.logger.info('router started', { topic: this.config.input.topic, groupId: this.config.input.groupId, concurrency: this.config.processing.concurrency });
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, uncommittedOffsets, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition, messages } = batch;
    const lagKey = `${topic}/${partition}`;
    const behind = Number(batch.offsetLag());
    this.lagByPartition.set(lagKey, (Number.isFinite(behind) ? behind : 0) + messages.length);
    const done = new Uint8Array(messages.length);
    let nextToResolve = 0;
    let failure: unknown;
    // kafkajs has no background heartbeat: long tagging inside a batch would otherwise trigger a rebalance.
    const beat = setInterval(() => {
      heartbeat().catch((err: unknown) => {
        failure ??= err;
      });
    }, Math.max(100, Math.floor(this.config.input.heartbeatIntervalMs / 2)));
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
        const message = messages[i];
        tasks.push(
          this.limit(() => this.handle(message, { topic, partition, offset: message.offset }))
            .then(
              () => {
                done[i] = 1;
                // Offsets are resolved strictly in order: a later note finishing first waits for the earlier ones.
                while (nextToResolve < messages.length && done[nextToResolve] === 1) {
                  resolveOffset(messages[nextToResolve].offset);
                  nextToResolve++;
                  this.lagByPartition.set(lagKey, Math.max(0, (this.lagByPartition.get(lagKey) ?? 1) - 1));
                }
              },
              (err: unknown) => {
                // A stop leaves the record unresolved for redelivery; anything else ends the batch with an error.
                if (!(err instanceof RouterError && err.code === ErrorCodes.SHUTTING_DOWN)) failure ??= err;
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
      this.logger.warn('batch ended early; unresolved records will be redelivered', { topic, partition, resolved: nextToResolve, size: messages.length, error: failure instanceof Error ? failure.name : 'unknown' });
      throw failure;
    }
  }

  /**
   * Resolves once the note's output or DLQ record is acknowledged. Throws when
   * the record must stay unresolved (redelivered later): Kafka is failing
   * (retriable), or the service is stopping.
   */
  private async handle(message: KafkaMessage, position: RecordPosition): Promise<void> {
    // Notes still queued behind p-limit when a stop begins are left for the next owner of the partition.
    if (this.stopping) throw shuttingDown();
    // One CONSUMER span per record; a producer's W3C trace context in the record headers becomes its parent.
    const parent = propagation.extract(ROOT_CONTEXT, message.headers ?? {}, kafkaHeaderGetter);
    const span = tracer().startSpan(
      `process ${position.topic}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          [MessagingAttr.SYSTEM]: MESSAGING_SYSTEM_KAFKA,
          [MessagingAttr.DESTINATION_NAME]: position.topic,
          [MessagingAttr.DESTINATION_PARTITION_ID]: String(position.partition),
          [MessagingAttr.KAFKA_OFFSET]: Number(position.offset),
          [MessagingAttr.OPERATION_TYPE]: 'process',
          [MessagingAttr.OPERATION_NAME]: 'process',
          [MessagingAttr.CONSUMER_GROUP_NAME]: this.config.input.groupId,
          [MessagingAttr.MESSAGE_BODY_SIZE]: message.value?.length ?? 0,
        },
      },
      parent,
    );
    return context.with(trace.setSpan(parent, span), async () => {
      try {
        await this.handleTraced(message, position, span);
      } catch (err) {
        // Left unresolved (redelivered): a stop, or Kafka failing.
        recordFailure(span, err);
        throw err;
      } finally {
        span.end();
      }
    });
  }

  private async handleTraced(message: KafkaMessage, position: RecordPosition, span: Span): Promise<void> {
    const receivedAt = performance.now();
    this.stats.received++;
    this.hooks.noteReceived({ ...position, bytes: message.value?.length ?? 0 });
    let note;
    try {
      note = decodeNote(message.value, {
        format: this.config.input.format,
        maxNoteBytes: this.config.input.maxNoteBytes,
        avroWireFormat: this.config.input.avroWireFormat,
      });
    } catch (err) {
      await this.deadLetter(message, position, err, 'decode', span);
      return;
    }
    span.setAttribute(BionerAttr.NOTE_ID, note.noteId);
    for (let attempt = 1; ; attempt++) {
      span.setAttribute(BionerAttr.NOTE_ATTEMPTS, attempt);
      let processed;
      try {
        processed = await this.withTimeout(this.processor.process(note, position, receivedAt, { headerBudgetMs: parseBudgetHeader(message.headers?.[this.config.routing.budgetHeader]) }));
      } catch (err) {
        if (isRetriable(err) && this.stopping) throw shuttingDown(); // a brief failure is no reason for a permanent DLQ record
        if (isRetriable(err) && attempt < this.config.processing.maxAttempts) {
          this.stats.retries++;
          await new Promise((r) => setTimeout(r, Math.min(10_000, 100 * 2 ** (attempt - 1))));
          continue;
        }
        this.logger.warn('note failed; dead-lettering', { noteId: note.noteId, attempt, code: err instanceof RouterError ? err.code : ErrorCodes.INTERNAL, error: err instanceof Error ? err.name : 'unknown' });
        await this.deadLetter(message, position, err, 'tag', span);
        return;
      }
      try {
        await this.send(
          this.config.output.topic,
          {
            key: Buffer.from(note.noteId, 'utf8'),
            value: encodeTaggedNote(processed.record),
            headers: { 'content-type': 'application/avro', 'bioner.schema': 'io.bioner.router.TaggedNote' },
          },
          true,
        );
      } catch (err) {
        // The broker refused this one record for good (e.g. too large): dead-letter it; a failing Kafka stays retriable and stalls instead.
        if (err instanceof PublishError && !err.retriable) {
          await this.deadLetter(message, position, err, 'publish', span);
          return;
        }
        throw err;
      }
      this.stats.published++;
      span.setAttribute(BionerAttr.NOTE_SPANS, processed.spans.length);
      const routes = { encoder: 0, llm: 0, encoder_fallback: 0 };
      for (const s of processed.spans) routes[s.route]++;
      this.hooks.notePublished({ noteId: note.noteId, topic: this.config.output.topic, spans: processed.spans.length, totalMs: processed.record.timings.total_ms, routes, routing: processed.record.routing });
      return;
    }
  }

  private async deadLetter(message: KafkaMessage, position: RecordPosition, err: unknown, stage: 'decode' | 'tag' | 'publish', span: Span): Promise<void> {
    const dlq = buildDlqMessage({ key: message.key, value: message.value, headers: message.headers, timestamp: message.timestamp }, position, err, stage);
    try {
      await this.send(this.config.output.dlqTopic, dlq);
    } catch (sendErr) {
      if (!(sendErr instanceof PublishError) || sendErr.retriable) throw sendErr;
      // Refused for good (usually size): keep the reason and the position, drop the bytes; the original stays readable in the input topic.
      await this.send(this.config.output.dlqTopic, { ...dlq, value: null, headers: { ...dlq.headers, [DlqHeaders.valueDropped]: String(message.value?.length ?? 0) } });
    }
    this.stats.deadLettered++;
    const code = err instanceof RouterError ? err.code : ErrorCodes.INTERNAL;
    // The note failed for good: the process span says why (the DLQ code), with the exception's class and PHI-free message.
    recordFailure(span, err, code);
    span.setAttribute(BionerAttr.DLQ_STAGE, String(dlq.headers[DlqHeaders.stage]));
    this.logger.info('record dead-lettered', { ...position, code, stage: String(dlq.headers[DlqHeaders.stage]) });
    this.hooks.noteDeadLettered({ ...position, code, stage: String(dlq.headers[DlqHeaders.stage]) });
  }

  /**
   * Publishes one record inside a PRODUCER span `send <topic>`. With `propagate`,
   * the span's W3C trace context goes into the record's headers (`traceparent`)
   * so downstream consumers continue the trace; DLQ records keep the original
   * headers untouched instead.
   */
  private async send(topic: string, message: { key: Buffer | null; value: Buffer | null; headers?: Record<string, string | Buffer | (string | Buffer)[] | undefined>; timestamp?: string }, propagate = false): Promise<void> {
    const span = tracer().startSpan(`send ${topic}`, {
      kind: SpanKind.PRODUCER,
      attributes: {
        [MessagingAttr.SYSTEM]: MESSAGING_SYSTEM_KAFKA,
        [MessagingAttr.DESTINATION_NAME]: topic,
        [MessagingAttr.OPERATION_TYPE]: 'send',
        [MessagingAttr.OPERATION_NAME]: 'send',
        [MessagingAttr.CLIENT_ID]: this.config.kafka.clientId,
        [MessagingAttr.MESSAGE_BODY_SIZE]: message.value?.length ?? 0,
      },
    });
    let outgoing = message;
    if (propagate) {
      const headers = { ...(message.headers ?? {}) };
      propagation.inject(trace.setSpan(context.active(), span), headers, kafkaHeaderSetter);
      outgoing = { ...message, headers };
    }
    try {
      await this.producer.send({
        topic,
        acks: this.config.output.acks,
        compression: this.config.output.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: [outgoing],
      });
    } catch (err) {
      // Only a refusal of this very record (too large, invalid) is final; anything else (leader moved, auth, timeouts) means Kafka is failing, so the partition stalls and retries instead of dead-lettering everything.
      const final = recordRefusal(err);
      const failure = new PublishError(`producing to ${topic} failed: ${final ?? (err instanceof Error ? err.name : 'unknown')}`, final === undefined, err);
      recordFailure(span, failure);
      throw failure;
    } finally {
      span.end();
    }
  }

  private withTimeout<T>(work: Promise<T>): Promise<T> {
    const ms = this.config.processing.noteTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, `note processing exceeded processing.noteTimeoutMs (${ms} ms)`, true)), ms);
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  /** Bounds fetched-but-unfinished notes; fetching pauses while the bound is reached. */
  private async acquireSlot(): Promise<void> {
    while (this.stats.inFlight >= this.config.processing.maxInFlight) {
      if (!this.stats.paused) {
        this.stats.paused = true;
        this.consumer.pause([{ topic: this.config.input.topic }]);
        this.hooks.inFlightChanged({ inFlight: this.stats.inFlight, paused: true });
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.stats.inFlight++;
  }

  private releaseSlot(): void {
    this.stats.inFlight--;
    if (this.stats.paused && this.stats.inFlight <= Math.floor(this.config.processing.maxInFlight / 2)) {
      this.stats.paused = false;
      this.consumer.resume([{ topic: this.config.input.topic }]);
      this.hooks.inFlightChanged({ inFlight: this.stats.inFlight, paused: false });
    }
    this.waiters.shift()?.();
  }

  /**
   * Stop fetching, let in-flight notes finish and their outputs be acknowledged,
   * commit, then disconnect. Safe to call twice: both calls share one promise.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.stopping = true;
    for (const w of this.waiters.splice(0)) w();
    const started = performance.now();
    await this.starting?.catch(() => undefined);
    const limit = this.config.shutdown.drainTimeoutMs;
    const drained = await withDeadline(this.consumer.stop().then(() => true), limit, false);
    if (!drained) this.logger.warn('drain timed out; uncommitted notes will be redelivered', { inFlight: this.stats.inFlight });
    // After a timed-out drain these could wait on the same stuck batch: bound them too.
    await withDeadline(this.producer.disconnect(), drained ? limit : 2000, undefined);
    await withDeadline(this.consumer.disconnect(), drained ? limit : 2000, undefined);
    this.connected = false;
    this.drained = drained;
    this.logger.info('router stopped', { drainMs: Math.round(performance.now() - started), drained, published: this.stats.published, deadLettered: this.stats.deadLettered });
  }
}

/** Resolves with the work's value, or `fallback` when it fails or outlasts `ms`. */
function withDeadline<T, F>(work: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.catch(() => fallback),
    new Promise<F>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
