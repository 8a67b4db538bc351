/**
 * Development and test tools, apart from the library's public surface
 * (`import ... from 'bioner-router/testing'`): the embedded librdkafka mock
 * cluster with fault injection, a TCP fault proxy, the accounting oracle, a
 * topic reader, and the reference LLM server (vLLM's HTTP shapes over an
 * in-process model).
 */
export { MockKafkaCluster, ApiKeys, KafkaErrorCodes } from './embedded/mock-cluster.js';
export { FaultProxy } from './embedded/fault-proxy.js';
export { runOracle, tallyRecords, topicOffsets, type OracleReport, type OffsetTally } from './embedded/oracle.js';
export { readTopics, type ReadRecord } from './embedded/read-topic.js';
export { startLlmServer, type LlmServer, type LlmServerOptions } from './taggers/llm/reference-server.js';
