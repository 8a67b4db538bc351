import { performance } from 'node:perf_hooks';
import type { Span } from '@opentelemetry/api';
import type { RouterConfig } from '../config/schema.js';
import { errorCodeOf, isRetriable, NoteTimeoutError, PublishError } from '../errors.js';
import { decodeNote } from '../ingest/decode.js';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import { ConsumerLoop, createKafka, RecordProducer, shuttingDownError, type InboundRecord, type KafkaSecurityOptions, type OutboundRecord } from '../kafka/index.js';
import { buildDlqMessage, DlqHeaders } from '../publish/dlq.js';
import type { NoteOutcome } from '../publish/outcome.js';
import { encodeTaggedNote, toTaggedNoteRecord } from '../publish/tagged-note.js';
import { parseBudgetHeader } from '../route/budget.js';
import { BionerAttr } from '../telemetry/attributes.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import type { Logger } from '../telemetry/logger.js';
import { withProcessSpan, withSendSpan } from '../telemetry/pipeline-spans.js';
import { recordFailure } from '../telemetry/tracing.js';
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
 * The streaming service: for each consumed record, decode, tag, and publish
 * one Avro record (or one DLQ record); the Kafka adapter (src/kafka) commits
 * an offset only once everything up to it is acknowledged. At-least-once: a
 * crash between publish and commit republishes under the same key (note id),
 * so output stays idempotent. Retries and the dead-letter policy live here.
 */
export class RouterService {
  private readonly source: ConsumerLoop;
  private readonly sink: RecordProducer;
  private readonly hooks: Required<PipelineHooks>;
  private readonly counts = { received: 0, published: 0, deadLettered: 0, retries: 0 };
  private closing: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  private connected = false;
  /** False when the last close() gave up waiting for in-flight notes. */
  drained = true;

  constructor(
    private readonly config: RouterConfig,
    private readonly processor: NoteProcessor,
    private readonly logger: Logger,
    hooks: PipelineHooks = {},
    /** kafkajs ssl/sasl options from kafkaSecurityOptions(config.kafka); none on defaults. */
    kafkaSecurity: KafkaSecurityOptions = {},
  ) {
    const kafka = createKafka(config.kafka, logger, kafkaSecurity);
    this.hooks = safeHooks(hooks, logger);
    this.source = new ConsumerLoop(
      kafka,
      {
        topic: config.input.topic,
        groupId: config.input.groupId,
        fromBeginning: config.input.fromBeginning,
        sessionTimeoutMs: config.input.sessionTimeoutMs,
        heartbeatIntervalMs: config.input.heartbeatIntervalMs,
        maxWaitTimeMs: config.input.maxWaitTimeMs,
        partitionsConsumedConcurrently: config.input.partitionsConsumedConcurrently,
        concurrency: config.processing.concurrency,
        maxInFlight: config.processing.maxInFlight,
        onPauseChanged: (state) => this.hooks.inFlightChanged({ inFlight: state.inFlight, paused: state.paused }),
      },
      logger,
    );
    this.source.onFatal = (err) => {
      this.connected = false;
      this.onFatal(err);
    };
    this.sink = new RecordProducer(kafka, { acks: config.output.acks, compression: config.output.compression });
    processor.attachLoad(() => ({ inFlight: this.source.inFlight, lag: this.source.lag() }));
  }

  get stats(): RouterServiceStats {
    return { ...this.counts, inFlight: this.source.inFlight, paused: this.source.paused };
  }

  /** Sum over this consumer's partitions of the records not yet finished; null before the first batch. */
  consumerLag(): number | null {
    return this.source.lag();
  }

  get isReady(): boolean {
    return this.connected && this.source.isRunning;
  }

  /** Called when the consumer crashed for good (kafkajs will not restart it); the CLI exits non-zero so the orchestrator restarts the process. */
  onFatal: (err: unknown) => void = () => undefined;

  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    await this.sink.connect();
    await this.source.start((record) => this.handle(record));
    if (this.source.isStopping) return;
    this.connected = true;
    this.logger.info('router started', { topic: this.config.input.topic, groupId: this.config.input.groupId, concurrency: this.config.processing.concurrency });
  }

  /**
   * Resolves once the note's output or DLQ record is acknowledged. Throws when
   * the record must stay unresolved (redelivered later): Kafka is failing
   * (retriable), or the service is stopping.
   */
  private handle(record: InboundRecord): Promise<void> {
    const info = { topic: record.topic, partition: record.partition, offset: record.offset, headers: record.headers, bytes: record.value?.length ?? 0 };
    return withProcessSpan(info, this.config.input.groupId, (span) => this.handleTraced(record, span));
  }

  private async handleTraced(record: InboundRecord, span: Span): Promise<void> {
    const receivedAt = performance.now();
    const position: RecordPosition = { topic: record.topic, partition: record.partition, offset: record.offset };
    this.counts.received++;
    this.hooks.noteReceived({ ...position, bytes: record.value?.length ?? 0 });
    let note: ClinicalNote;
    try {
      note = decodeNote(record.value, { format: this.config.input.format, maxNoteBytes: this.config.input.maxNoteBytes, avroWireFormat: this.config.input.avroWireFormat });
    } catch (err) {
      await this.deadLetter(record, position, err, 'decode', span);
      return;
    }
    span.setAttribute(BionerAttr.NOTE_ID, note.noteId);
    const headerBudgetMs = parseBudgetHeader(record.headers[this.config.routing.budgetHeader]);
    for (let attempt = 1; ; attempt++) {
      span.setAttribute(BionerAttr.NOTE_ATTEMPTS, attempt);
      let outcome: NoteOutcome;
      try {
        outcome = await this.processWithTimeout(note, position, receivedAt, headerBudgetMs);
      } catch (err) {
        if (isRetriable(err) && this.source.isStopping) throw shuttingDownError(); // a brief failure is no reason for a permanent DLQ record
        if (isRetriable(err) && attempt < this.config.processing.maxAttempts) {
          this.counts.retries++;
          await new Promise((r) => setTimeout(r, Math.min(10_000, 100 * 2 ** (attempt - 1))));
          continue;
        }
        this.logger.warn('note failed; dead-lettering', { noteId: note.noteId, attempt, code: errorCodeOf(err), error: err instanceof Error ? err.name : 'unknown' });
        await this.deadLetter(record, position, err, 'tag', span);
        return;
      }
      try {
        const value = encodeTaggedNote(toTaggedNoteRecord(outcome, note.text));
        await this.send(this.config.output.topic, { key: Buffer.from(note.noteId, 'utf8'), value, headers: { 'content-type': 'application/avro', 'bioner.schema': 'io.bioner.router.TaggedNote' } }, true);
      } catch (err) {
        // The broker refused this one record for good (e.g. too large): dead-letter it; a failing Kafka stays retriable and stalls instead.
        if (err instanceof PublishError && !err.retriable) {
          await this.deadLetter(record, position, err, 'publish', span);
          return;
        }
        throw err;
      }
      this.counts.published++;
      span.setAttribute(BionerAttr.NOTE_SPANS, outcome.spans.length);
      const routes = { encoder: 0, llm: 0, encoder_fallback: 0 };
      for (const s of outcome.spans) routes[s.route]++;
      this.hooks.notePublished({ noteId: note.noteId, topic: this.config.output.topic, spans: outcome.spans.length, totalMs: outcome.timings.totalMs, routes, routing: outcome.routing });
      return;
    }
  }

  /**
   * Tags the note within processing.noteTimeoutMs. At the limit the note's
   * work is cancelled (queued encoder windows dropped, LLM requests aborted)
   * and the attempt fails with NOTE_TIMEOUT (retriable), so a retry does not
   * start while the first attempt still holds the encoder queue.
   */
  private async processWithTimeout(note: ClinicalNote, position: RecordPosition, receivedAt: number, headerBudgetMs: number | null): Promise<NoteOutcome> {
    const ms = this.config.processing.noteTimeoutMs;
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new NoteTimeoutError(`note processing exceeded processing.noteTimeoutMs (${ms} ms); its tagging was cancelled`);
        controller.abort(err);
        reject(err);
      }, ms);
    });
    const work = this.processor.process(note, position, { receivedAt, headerBudgetMs, signal: controller.signal });
    work.catch(() => undefined); // after a timeout its own rejection (the abort) is expected
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async deadLetter(record: InboundRecord, position: RecordPosition, err: unknown, stage: 'decode' | 'tag' | 'publish', span: Span): Promise<void> {
    const dlq = buildDlqMessage({ key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp }, position, err, stage);
    try {
      await this.send(this.config.output.dlqTopic, dlq);
    } catch (sendErr) {
      if (!(sendErr instanceof PublishError) || sendErr.retriable) throw sendErr;
      // Refused for good (usually size): keep the reason and the position, drop the bytes; the original stays readable in the input topic.
      await this.send(this.config.output.dlqTopic, { ...dlq, value: null, headers: { ...dlq.headers, [DlqHeaders.valueDropped]: String(record.value?.length ?? 0) } });
    }
    this.counts.deadLettered++;
    const code = errorCodeOf(err);
    // The note failed for good: the process span says why (the DLQ code), with the exception's class and PHI-free message.
    recordFailure(span, err, code);
    const dlqStage = String(dlq.headers[DlqHeaders.stage]);
    span.setAttribute(BionerAttr.DLQ_STAGE, dlqStage);
    this.logger.info('record dead-lettered', { ...position, code, stage: dlqStage });
    this.hooks.noteDeadLettered({ ...position, code, stage: dlqStage });
  }

  /** Publishes one record inside its `send <topic>` span; `propagate` puts the trace context into its headers. */
  private send(topic: string, record: OutboundRecord, propagate = false): Promise<void> {
    return withSendSpan(topic, this.config.kafka.clientId, record.value?.length ?? 0, record.headers, propagate, (headers) => this.sink.send(topic, { ...record, headers }));
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
    this.source.requestStop();
    const started = performance.now();
    await this.starting?.catch(() => undefined);
    const limit = this.config.shutdown.drainTimeoutMs;
    const drained = await this.source.stop(limit);
    if (!drained) this.logger.warn('drain timed out; uncommitted notes will be redelivered', { inFlight: this.source.inFlight });
    // After a timed-out drain these could wait on the same stuck batch: bound them too.
    await this.sink.disconnect(drained ? limit : 2000);
    await this.source.disconnect(drained ? limit : 2000);
    this.connected = false;
    this.drained = drained;
    this.logger.info('router stopped', { drainMs: Math.round(performance.now() - started), drained, published: this.counts.published, deadLettered: this.counts.deadLettered });
  }
}
