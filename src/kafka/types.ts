/**
 * The narrow interface the pipeline sees of Kafka: records in, records out.
 * Nothing here names kafkajs, so a move to another client stays inside
 * src/kafka.
 */

/** Header values as Kafka carries them (several values per key are allowed). */
export type RecordHeaders = Record<string, Buffer | string | Array<Buffer | string> | undefined>;

/** One consumed record. `offset` is a decimal string (Kafka offsets are int64). */
export interface InboundRecord {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  /** null for a tombstone. */
  value: Buffer | null;
  headers: RecordHeaders;
  timestamp: string;
}

/** One record to produce. */
export interface OutboundRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers?: RecordHeaders;
  timestamp?: string;
}

/**
 * Called once per consumed record. It resolves once the record is finished
 * (its output acknowledged by the broker): only then may its offset be
 * committed. It rejects to leave the record uncommitted, so it is redelivered
 * (Kafka failing, or the router stopping); the batch then ends early.
 */
export type RecordHandler = (record: InboundRecord) => Promise<void>;

/** What the consumer loop reports about its own state. */
export interface ConsumerState {
  /** Records handed to the handler (or waiting for a concurrency slot) and not yet finished. */
  inFlight: number;
  /** Fetching is paused because `maxInFlight` was reached. */
  paused: boolean;
}
