/**
 * Public surface: what users of the library call. Internals stay behind their
 * stage folders; development tools (embedded mock Kafka, fault proxy, oracle,
 * reference LLM server) are in `bioner-router/testing` (src/testing.ts).
 */
export { loadConfig, validateConfig, environmentOverrides } from './config/load.js';
export type { RouterConfig, ConfigInput } from './config/schema.js';
export {
  RouterError,
  ConfigError,
  InvalidRecordError,
  ModelLoadError,
  TaggerError,
  LlmError,
  NoteTimeoutError,
  PublishError,
  ErrorCodes,
  isRetriable,
} from './errors.js';
export type { ErrorCode, Stage } from './errors.js';
export { decodeNote, encodeNote, validateNote } from './ingest/decode.js';
export { NoteDecoder } from './ingest/note-decoder.js';
export {
  SchemaRegistryClient,
  schemaRegistryOptions,
  frameConfluent,
  parseConfluentFrame,
  type SchemaRegistryClientOptions,
} from './ingest/schema-registry.js';
export type { ClinicalNote, RecordPosition } from './ingest/note.js';
export { prepareText, type PreparedText } from './text/index.js';
export {
  createRouter,
  Router,
  Reasons,
  OnlineCostModel,
  loadCalibration,
  resolveBudget,
  type RouterSetup,
  type PolicyName,
  type RouteDecision,
  type NoteBudget,
  type DomainCalibration,
} from './route/index.js';
export { EncoderTagger, type EncoderOptions } from './taggers/encoder.js';
export type { Tagger, ModelInfo, TagOptions } from './taggers/types.js';
export { createLlmTagger, type LlmTagger, type LlmConfig, type RealignStats } from './taggers/llm/index.js';
export { decodeBio } from './taggers/bio.js';
export { toTaggedNoteRecord, encodeTaggedNote, decodeTaggedNote, SourceHeaders, type TaggedNoteRecord } from './publish/tagged-note.js';
export type { NoteOutcome, NoteTimings } from './publish/outcome.js';
export type { RoutingRecord } from './route/record.js';
export { DlqHeaders } from './publish/dlq.js';
export { NoteProcessor } from './pipeline/processor.js';
export { RouterService } from './pipeline/service.js';
export { composeRouter, type ComposedRouter, type ComposeOptions } from './pipeline/compose.js';
export type { PipelineHooks } from './telemetry/hooks.js';
export { createLogger, type Logger } from './telemetry/logger.js';
export type { Sentence, WordToken, EntitySpan, TokenSpan, Route } from './types.js';
export { setupTracing } from './telemetry/tracing.js';
export { telemetryIdentity, type TelemetryIdentity } from './telemetry/otel-env.js';
export { createRouterMetrics, serviceSources, METRIC_SERIES, type RouterMetrics } from './telemetry/metrics.js';
export { startTelemetryServer, routerReadiness, type TelemetryServer } from './telemetry/server.js';
