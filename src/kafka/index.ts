/**
 * Kafka behind one adapter: the only folder that imports kafkajs at run time
 * (tests and dev tools may use the client directly). The pipeline sees
 * records, a handler, and a producer that raises typed errors.
 */
export { createKafka, createProducer } from './client.js';
export { kafkaSecurityOptions, type KafkaSecurityOptions } from './security.js';
export { ConsumerLoop, shuttingDownError, withDeadline, type ConsumerLoopOptions } from './consumer.js';
export { RecordProducer, type RecordProducerOptions } from './producer.js';
export type { InboundRecord, OutboundRecord, RecordHandler, RecordHeaders, ConsumerState } from './types.js';
