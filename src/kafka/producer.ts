import { CompressionTypes, type Kafka, type Producer } from 'kafkajs';
import { PublishError } from '../errors.js';
import { createProducer } from './client.js';
import { withDeadline } from './consumer.js';
import type { OutboundRecord } from './types.js';

export interface RecordProducerOptions {
  /** -1 (all in-sync replicas) or 1. */
  acks: number;
  compression: 'none' | 'gzip';
}

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

/**
 * Sends one record at a time and resolves once the broker acknowledged it
 * (`acks`). Failures are PublishError: not retriable when the broker refused
 * this very record (too large, invalid), retriable for everything else
 * (leader moved, auth, timeouts), so the caller can stall instead of
 * dead-lettering everything while Kafka is failing.
 */
export class RecordProducer {
  private readonly producer: Producer;

  constructor(
    kafka: Kafka,
    private readonly options: RecordProducerOptions,
  ) {
    this.producer = createProducer(kafka);
  }

  connect(): Promise<void> {
    return this.producer.connect();
  }

  async send(topic: string, record: OutboundRecord): Promise<void> {
    try {
      await this.producer.send({
        topic,
        acks: this.options.acks,
        compression: this.options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: [record],
      });
    } catch (err) {
      const refusal = recordRefusal(err);
      throw new PublishError(`producing to ${topic} failed: ${refusal ?? (err instanceof Error ? err.name : 'unknown')}`, {
        retriable: refusal === undefined,
        cause: err,
      });
    }
  }

  async disconnect(timeoutMs: number): Promise<void> {
    await withDeadline(this.producer.disconnect(), timeoutMs, undefined);
  }
}
