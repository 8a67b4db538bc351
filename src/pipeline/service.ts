import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { Span } from '@opentelemetry/api';
import type { RouterConfig } from '../config/schema.js';
import { ConfigError, errorCodeOf, isRetriable, NoteTimeoutError, PublishError, SchemaRegistryError } from '../errors.js';
import type { ClinicalNote, RecordPosition } from '../ingest/note.js';
import { NoteDecoder } from '../ingest/note-decoder.js';
import { SchemaRegistryClient, schemaRegistryOptions } from '../ingest/schema-registry.js';
import {
  ConsumerLoop,
  createKafka,
  RecordProducer,
  shuttingDownError,
  type InboundRecord,
  type KafkaSecurityOptions,
  type OutboundRecord,
} from '../kafka/index.js';
import { buildDlqMessage, DlqHeaders } from '../publish/dlq.js';
import type { NoteOutcome } from '../publish/outcome.js';
import { encodeTaggedNote, SourceHeaders, toTaggedNoteRecord } from '../publish/tagged-note.js';
import { parseBudgetHeader } from '../route/budget.js';
import { schemaPath } from '../schemas.js';
import { BionerAttr } from '../telemetry/attributes.js';
import { safeHooks, type PipelineHooks } from '../telemetry/hooks.js';
import type { Logger } from '../telemetry/logger.js';
import type { DeliveryHooks } from '../telemetry/metrics.js';
import { brokerAddress, withProcessSpan, withSendSpan, type BrokerAddress } from '../telemetry/pipeline-spans.js';
import { recordFailure } from '../telemetry/tracing.js';
import type { NoteProcessor } from './processor.js';

export interface RouterServiceStats {
  received: number;
  published: number;
  deadLettered: number;
  /** Input tombstones propagated to the output topic (or skipped for want of a key). */
  tombstones: number;
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
  private readonly counts = { received: 0, published: 0, deadLettered: 0, tombstones: 0, retries: 0 };
  private readonly delivery: Required<DeliveryHooks>;
  private registry: SchemaRegistryClient | undefined;
  private decoder: NoteDecoder;
  /** Schema id that frames every output value (output.wireFormat confluent), from the registry at start-up. */
  private outputSchemaId: number | undefined;
  /**
   * Per input key, the handling of the latest record with that key. Records
   * are tagged concurrently, but a record's output waits for the earlier
   * records with its key, so the output topic sees one key's records (a
   * tombstone above all) in input order: a slow note cannot land after its
   * own delete and resurrect it downstream.
   */
  private readonly keyTurns = new Map<string, Promise<void>>();
  private closing: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  private connected = false;
  /** False when the last close() gave up waiting for in-flight notes. */
  drained = true;
  /** server.address/server.port of the messaging spans: the first bootstrap server. */
  private readonly broker: BrokerAddress | undefined;

  constructor(
    private readonly config: RouterConfig,
    private readonly processor: NoteProcessor,
    private readonly logger: Logger,
    hooks: PipelineHooks & DeliveryHooks = {},
    /** kafkajs ssl/sasl options from kafkaSecurityOptions(config.kafka); none on defaults. */
    kafkaSecurity: KafkaSecurityOptions = {},
    /** A registry client to use instead of the one start() builds from config.schemaRegistry (tests, shared clients). */
    options: { schemaRegistry?: SchemaRegistryClient } = {},
  ) {
    const kafka = createKafka(config.kafka, logger, kafkaSecurity);
    this.broker = brokerAddress(config.kafka.brokers[0]);
    this.hooks = safeHooks(hooks, logger);
    this.delivery = safeDeliveryHooks(hooks, logger);
    this.registry = options.schemaRegistry;
    this.decoder = this.makeDecoder();
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

  /** Lag per partition this consumer owns (`topic/partition` keys), pruned when partitions are revoked; empty before the first batch. */
  consumerLagByPartition(): ReadonlyMap<string, number> {
    return this.source.lagByKey();
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

  private makeDecoder(): NoteDecoder {
    const { format, maxNoteBytes, avroWireFormat } = this.config.input;
    return new NoteDecoder({ format, maxNoteBytes, avroWireFormat }, this.registry);
  }

  /**
   * The registry client (credential and CA files read now, as for Kafka), and
   * with output.wireFormat confluent the id of the TaggedNote schema under the
   * output subject: registered, or only looked up when autoRegister is false.
   * Any failure here stops the start: no record is consumed without it.
   */
  private async setUpSchemaRegistry(): Promise<void> {
    if (this.registry === undefined) {
      const options = await schemaRegistryOptions(this.config.schemaRegistry);
      if (options !== undefined) {
        this.registry = new SchemaRegistryClient(options);
        this.decoder = this.makeDecoder();
      }
    }
    const { input, output } = this.config;
    if (input.format === 'avro' && input.avroWireFormat === 'confluent' && !this.decoder.resolvesWriterSchemas) {
      this.logger.warn(
        'input.avroWireFormat is confluent but no schemaRegistry.url is set: schema ids are not looked up, and records written with another (evolved) schema are dead-lettered',
        { topic: input.topic },
      );
    }
    if (output.wireFormat !== 'confluent') return;
    if (this.registry === undefined) throw new ConfigError('schemaRegistry.url', 'is required with output.wireFormat: confluent');
    const subject = output.subject ?? `${output.topic}-value`;
    // The shipped file, compacted: the registry stores what it is sent, and readers fetch it by id.
    const schema = JSON.stringify(JSON.parse(await readFile(schemaPath('tagged-note'), 'utf8')) as unknown);
    try {
      this.outputSchemaId = this.config.schemaRegistry.autoRegister
        ? await this.registry.register(subject, schema)
        : await this.registry.lookup(subject, schema);
    } catch (err) {
      this.delivery.schemaRegistryFailed({ code: errorCodeOf(err) });
      throw err;
    }
    this.logger.info('output schema ready', { subject, schemaId: this.outputSchemaId, registered: this.config.schemaRegistry.autoRegister });
  }

  private async doStart(): Promise<void> {
    await this.setUpSchemaRegistry();
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
    // Taken synchronously: the consumer loop starts handlers in offset order, so the chain per key is in input order.
    const key = record.key === null ? undefined : record.key.toString('latin1');
    const previous = key === undefined ? undefined : this.keyTurns.get(key);
    let release: () => void = () => undefined;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    if (key !== undefined) this.keyTurns.set(key, mine);
    const turn = previous ?? Promise.resolve();
    return withProcessSpan(info, this.config.input.groupId, (span) => this.handleTraced(record, span, turn), this.broker).finally(() => {
      release();
      if (key !== undefined && this.keyTurns.get(key) === mine) this.keyTurns.delete(key);
    });
  }

  /** `turn` settles when the earlier records with this record's key are finished (it never rejects). */
  private async handleTraced(record: InboundRecord, span: Span, turn: Promise<void>): Promise<void> {
    const receivedAt = performance.now();
    const position: RecordPosition = { topic: record.topic, partition: record.partition, offset: record.offset };
    this.counts.received++;
    this.hooks.noteReceived({ ...position, bytes: record.value?.length ?? 0 });
    if (record.value === null) {
      await turn;
      await this.propagateTombstone(record, position, span);
      return;
    }
    let note: ClinicalNote;
    try {
      note = await this.decoder.decode(record.value);
    } catch (err) {
      if (err instanceof SchemaRegistryError) this.delivery.schemaRegistryFailed({ code: err.code });
      if (isRetriable(err)) {
        // The registry, not the record, is failing: leave the record uncommitted so it is redelivered (the partition waits).
        this.logger.warn('schema registry unavailable; the record stays uncommitted and is redelivered', {
          ...position,
          code: errorCodeOf(err),
          status: err instanceof SchemaRegistryError ? err.status : undefined,
        });
        throw this.source.isStopping ? shuttingDownError() : err;
      }
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
        this.logger.warn('note failed; dead-lettering', {
          noteId: note.noteId,
          attempt,
          code: errorCodeOf(err),
          error: err instanceof Error ? err.name : 'unknown',
        });
        await this.deadLetter(record, position, err, 'tag', span);
        return;
      }
      const published = await this.publishOrDeadLetter(record, position, span, async () => {
        const value = encodeTaggedNote(toTaggedNoteRecord(outcome, note.text, undefined, { spanText: this.config.output.spanText }), this.outputSchemaId);
        await turn;
        await this.send(
          this.config.output.topic,
          { key: Buffer.from(note.noteId, 'utf8'), value, headers: { 'content-type': 'application/avro', 'bioner.schema': 'io.bioner.router.TaggedNote' } },
          true,
        );
      });
      if (!published) return;
      this.counts.published++;
      span.setAttribute(BionerAttr.NOTE_SPANS, outcome.spans.length);
      const routes = { encoder: 0, llm: 0, encoder_fallback: 0 };
      for (const s of outcome.spans) routes[s.route]++;
      this.hooks.notePublished({
        noteId: note.noteId,
        topic: this.config.output.topic,
        spans: outcome.spans.length,
        totalMs: outcome.timings.totalMs,
        routes,
        routing: outcome.routing,
      });
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

  /**
   * A tombstone (null value) on the input is a delete: the same key gets a
   * tombstone on the output topic, so compacted topics drop the note
   * downstream. It is neither tagged nor dead-lettered; a keyless one deletes
   * nothing and is skipped (counted, logged). Headers name the input position.
   */
  private async propagateTombstone(record: InboundRecord, position: RecordPosition, span: Span): Promise<void> {
    this.counts.tombstones++;
    if (record.key === null) {
      this.logger.warn('tombstone without a key skipped: there is nothing to delete downstream', { ...position });
      this.delivery.tombstone({ ...position, propagated: false });
      return;
    }
    const published = await this.publishOrDeadLetter(record, position, span, () =>
      this.send(
        this.config.output.topic,
        {
          key: record.key,
          value: null,
          headers: { [SourceHeaders.topic]: position.topic, [SourceHeaders.partition]: String(position.partition), [SourceHeaders.offset]: position.offset },
        },
        true,
      ),
    );
    if (!published) return;
    this.delivery.tombstone({ ...position, propagated: true });
    this.logger.debug('tombstone propagated', { ...position, keyBytes: record.key.length });
  }

  /**
   * Runs one publish. A record the broker refuses for good (e.g. too large) is
   * dead-lettered with PUBLISH_FAILED and false is returned; a failing Kafka
   * stays retriable and throws, so the partition stalls instead of losing it.
   */
  private async publishOrDeadLetter(record: InboundRecord, position: RecordPosition, span: Span, publish: () => Promise<void>): Promise<boolean> {
    try {
      await publish();
      return true;
    } catch (err) {
      if (err instanceof PublishError && !err.retriable) {
        await this.deadLetter(record, position, err, 'publish', span);
        return false;
      }
      throw err;
    }
  }

  private async deadLetter(record: InboundRecord, position: RecordPosition, err: unknown, stage: 'decode' | 'tag' | 'publish', span: Span): Promise<void> {
    const dlq = buildDlqMessage({ key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp }, position, err, stage);
    try {
      await this.send(this.config.output.dlqTopic, dlq);
    } catch (sendErr) {
      if (!(sendErr instanceof PublishError) || sendErr.retriable) throw sendErr;
      // Refused for good (usually size: raise max.message.bytes on the DLQ topic): keep the reason and the position, drop the bytes; the original stays readable in the input topic until its retention ends.
      const bytes = record.value?.length ?? 0;
      await this.send(this.config.output.dlqTopic, { ...dlq, value: null, headers: { ...dlq.headers, [DlqHeaders.valueDropped]: String(bytes) } });
      const code = errorCodeOf(err);
      // Loud: the DLQ no longer holds the bytes, only the input topic does. The key may be a patient-linked id: its length only.
      this.logger.warn('DLQ copy refused by the broker with its value; sent without it (raise max.message.bytes on the DLQ topic)', {
        ...position,
        code,
        valueBytes: bytes,
        keyBytes: record.key?.length ?? 0,
        dlqTopic: this.config.output.dlqTopic,
      });
      this.delivery.dlqValueDropped({ ...position, code, bytes });
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
    return withSendSpan(
      topic,
      this.config.kafka.clientId,
      record.value?.length ?? 0,
      record.headers,
      propagate,
      (headers) => this.sink.send(topic, { ...record, headers }),
      this.broker,
    );
  }

  /**
   * Stop fetching, let in-flight notes finish and their outputs be acknowledged,
   * commit, then disconnect. Safe to call twice: both calls share one promise.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /** Counters of the registry client (requests, cache hits, failures); undefined without a registry. */
  get schemaRegistryStats(): SchemaRegistryClient['stats'] | undefined {
    return this.registry?.stats;
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
    this.logger.info('router stopped', {
      drainMs: Math.round(performance.now() - started),
      drained,
      published: this.counts.published,
      deadLettered: this.counts.deadLettered,
    });
  }
}

/** The delivery hooks of `hooks` (when it has them), each wrapped so a failing hook is logged and never reaches the pipeline. */
function safeDeliveryHooks(hooks: DeliveryHooks, logger: Logger): Required<DeliveryHooks> {
  const wrap = <K extends keyof DeliveryHooks>(name: K): Required<DeliveryHooks>[K] =>
    ((e: unknown) => {
      const fn = hooks[name] as ((e: unknown) => unknown) | undefined;
      if (fn === undefined) return;
      const failed = (err: unknown): void => logger.warn('pipeline hook failed', { hook: name, error: err instanceof Error ? err.name : 'unknown' });
      try {
        const result = fn.call(hooks, e);
        if (result instanceof Promise) result.catch(failed);
      } catch (err) {
        failed(err);
      }
    }) as Required<DeliveryHooks>[K];
  return { tombstone: wrap('tombstone'), dlqValueDropped: wrap('dlqValueDropped'), schemaRegistryFailed: wrap('schemaRegistryFailed') };
}
