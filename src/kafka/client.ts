import { Kafka, logLevel as KafkaLogLevel, Partitioners, type LogEntry, type logCreator, type Producer } from 'kafkajs';
import type { RouterConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import type { KafkaSecurityOptions } from './security.js';
import type { Logger } from '../telemetry/logger.js';

/**
 * The only place that constructs a kafkajs client, so a swap to another
 * KafkaJS-compatible client (e.g. @confluentinc/kafka-javascript) stays small.
 * kafkajs log entries are forwarded with their scalar fields only: some carry
 * request payloads.
 * `security` is what `kafkaSecurityOptions(config)` resolved at start-up (files
 * already read); it is required when kafka.tls.enabled or kafka.sasl is set, so
 * a caller cannot silently connect in plain text.
 */
export function createKafka(config: RouterConfig['kafka'], logger: Logger, security: KafkaSecurityOptions = {}): Kafka {
  if (config.tls.enabled && security.ssl === undefined) {
    throw new ConfigError(
      'kafka.tls.enabled',
      'TLS is on but no TLS options were resolved; call kafkaSecurityOptions(config.kafka) and pass its result to createKafka',
    );
  }
  if (config.sasl !== undefined && security.sasl === undefined) {
    throw new ConfigError(
      'kafka.sasl',
      'SASL is configured but no credentials were resolved; call kafkaSecurityOptions(config.kafka) and pass its result to createKafka',
    );
  }
  const creator: logCreator = () => (entry: LogEntry) => {
    const { message, ...rest } = entry.log;
    const fields: Record<string, string | number | boolean> = { namespace: entry.namespace };
    for (const key of ['groupId', 'memberId', 'topic', 'partition', 'broker', 'clientId', 'retryCount', 'retryTime', 'error']) {
      const v = (rest as Record<string, unknown>)[key];
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') fields[key] = v;
    }
    const text = `kafkajs: ${message}`;
    if (entry.level === KafkaLogLevel.ERROR) logger.error(text, fields);
    else if (entry.level === KafkaLogLevel.WARN) logger.warn(text, fields);
    else if (entry.level === KafkaLogLevel.INFO) logger.debug(text, fields);
  };
  return new Kafka({
    clientId: config.clientId,
    brokers: config.brokers,
    connectionTimeout: config.connectionTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    retry: { retries: config.retries, initialRetryTime: 300, maxRetryTime: 10_000 },
    logLevel: KafkaLogLevel.INFO,
    logCreator: creator,
    ...(security.ssl === undefined ? {} : { ssl: security.ssl }),
    ...(security.sasl === undefined ? {} : { sasl: security.sasl }),
  });
}

/** A plain (non-idempotent) producer: the embedded mock cannot run the idempotent one; output is keyed by note id instead. Murmur2 partitioning as the Java client does. */
export function createProducer(kafka: Kafka): Producer {
  return kafka.producer({ allowAutoTopicCreation: false, idempotent: false, createPartitioner: Partitioners.DefaultPartitioner });
}
