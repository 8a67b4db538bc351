import type { IHeaders } from 'kafkajs';
import { errorCodeOf, RouterError, safeMessage, type Stage } from '../errors.js';
import type { RecordPosition } from '../ingest/note.js';

/** DLQ header names (Kafka Connect's DeadLetterQueueReporter is the model). */
export const DlqHeaders = {
  sourceTopic: 'bioner.dlq.source.topic',
  sourcePartition: 'bioner.dlq.source.partition',
  sourceOffset: 'bioner.dlq.source.offset',
  stage: 'bioner.dlq.stage',
  errorCode: 'bioner.dlq.error.code',
  errorClass: 'bioner.dlq.error.class',
  errorMessage: 'bioner.dlq.error.message',
  errorRetriable: 'bioner.dlq.error.retriable',
  failedAt: 'bioner.dlq.failed.at',
  /** Set when the broker refused even the DLQ copy with its value: the value's size in bytes; the original stays in the input topic. */
  valueDropped: 'bioner.dlq.value.dropped.bytes',
} as const;

export interface OriginalRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers?: IHeaders;
  timestamp: string;
}

export interface DlqMessage {
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
  timestamp: string;
}

/**
 * Keeps the original key, value, headers and timestamp untouched and adds the
 * reason. The message is the error's own (written without note text), capped in
 * length; no stack traces, since those can quote input.
 */
export function buildDlqMessage(original: OriginalRecord, position: RecordPosition, err: unknown, fallbackStage: Stage): DlqMessage {
  const stage = err instanceof RouterError && err.stage !== undefined ? err.stage : fallbackStage;
  return {
    key: original.key,
    value: original.value,
    timestamp: original.timestamp,
    headers: {
      ...(original.headers ?? {}),
      [DlqHeaders.sourceTopic]: position.topic,
      [DlqHeaders.sourcePartition]: String(position.partition),
      [DlqHeaders.sourceOffset]: position.offset,
      [DlqHeaders.stage]: stage,
      [DlqHeaders.errorCode]: errorCodeOf(err),
      [DlqHeaders.errorClass]: err instanceof Error ? err.name : 'unknown',
      [DlqHeaders.errorMessage]: safeMessage(err).slice(0, 500),
      [DlqHeaders.errorRetriable]: String(err instanceof RouterError ? err.retriable : false),
      [DlqHeaders.failedAt]: new Date().toISOString(),
    },
  };
}

/** Reads a header as a string (kafkajs hands headers back as Buffers). */
export function headerString(headers: IHeaders | undefined, name: string): string | undefined {
  const v = headers?.[name];
  if (v === undefined) return undefined;
  const first = Array.isArray(v) ? v[0] : v;
  return first === undefined ? undefined : first.toString();
}
