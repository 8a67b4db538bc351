import { z } from 'zod';

/**
 * The configuration schema with its defaults beside it. `run --config FILE`
 * reads YAML or JSON, applies BIONER_* environment overrides, then validates
 * here; cross-field rules live in `crossFieldRules` below.
 */
const brokerAddress = z
  .string()
  .regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');

/** TLS to the brokers; certificates are read from files (mounted Kubernetes secrets) at start-up. */
export const KafkaTlsSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** PEM CA bundle that signs the brokers' certificates; default: Node's bundled CAs. */
    caFile: z.string().min(1).optional(),
    /** PEM client certificate for mutual TLS (with keyFile). */
    certFile: z.string().min(1).optional(),
    /** PEM private key of certFile. */
    keyFile: z.string().min(1).optional(),
    /** Verify the brokers' certificates; false only for testing. */
    rejectUnauthorized: z.boolean().default(true),
    /** SNI / name checked in the broker certificate when it differs from the broker host. */
    servername: z.string().min(1).optional(),
  })
  .strict();

/** SASL authentication; username and password are read from files at start-up (trailing newline trimmed), never logged. */
export const KafkaSaslSchema = z
  .object({
    mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
    usernameFile: z.string().min(1),
    passwordFile: z.string().min(1),
  })
  .strict();

export const KafkaSchema = z
  .object({
    clientId: z.string().min(1).default('bioner-router'),
    brokers: z.array(brokerAddress).min(1).default(['localhost:9092']),
    connectionTimeoutMs: z.number().int().positive().default(3000),
    requestTimeoutMs: z.number().int().positive().default(30000),
    /** kafkajs client retries before an operation fails (then our own logic decides). */
    retries: z.number().int().min(0).default(8),
    tls: KafkaTlsSchema.prefault({}),
    sasl: KafkaSaslSchema.optional(),
  })
  .strict();

export const InputSchema = z
  .object({
    topic: z.string().min(1).default('clinical-notes'),
    groupId: z.string().min(1).default('bioner-router'),
    /** Wire format of input records: JSON objects or Avro binary of schemas/clinical-note.avsc. */
    format: z.enum(['json', 'avro']).default('json'),
    /** `confluent` strips the 5-byte Schema Registry header (magic byte + schema id) before Avro decoding. */
    avroWireFormat: z.enum(['raw', 'confluent']).default('raw'),
    fromBeginning: z.boolean().default(true),
    /** Records larger than this (bytes, raw value) are dead-lettered as NOTE_TOO_LARGE. */
    maxNoteBytes: z.number().int().positive().default(1_000_000),
    /** Real brokers accept 6000-300000 by default (group.min/max.session.timeout.ms); the embedded mock accepts less. */
    sessionTimeoutMs: z.number().int().positive().default(30000),
    heartbeatIntervalMs: z.number().int().positive().default(3000),
    /** Longest a fetch waits for data. Real brokers answer as soon as data arrives; the embedded mock waits the whole time, so the demo and tests use 100. */
    maxWaitTimeMs: z.number().int().min(10).default(1000),
    /** Partitions processed at once by this consumer (kafkajs partitionsConsumedConcurrently). */
    partitionsConsumedConcurrently: z.number().int().positive().default(3),
  })
  .strict();

export const OutputSchema = z
  .object({
    topic: z.string().min(1).default('tagged-notes'),
    dlqTopic: z.string().min(1).default('clinical-notes.dlq'),
    /** -1 = all in-sync replicas, 1 = leader only; offsets are committed only after this acknowledgement (0 would ack nothing, so it is refused). */
    acks: z.union([z.literal(-1), z.literal(1)]).default(-1),
    compression: z.enum(['none', 'gzip']).default('none'),
  })
  .strict();

export const ProcessingSchema = z
  .object({
    /** Notes tagged at once (p-limit). */
    concurrency: z.number().int().positive().default(8),
    /** Notes fetched but not yet committed; above this the consumer pauses fetching. */
    maxInFlight: z.number().int().positive().default(64),
    /** Per-note time limit for tagging + publishing; past it the attempt fails as retriable. */
    noteTimeoutMs: z.number().int().positive().default(20000),
    /** Attempts for a note whose failure is retriable before it is dead-lettered. */
    maxAttempts: z.number().int().positive().max(10).default(3),
  })
  .strict();

export const EncoderSchema = z
  .object({
    /** A Hugging Face token-classification export: config.json, tokenizer.json, model.onnx. */
    modelDir: z.string().min(1).default('models/bc5cdr-encoder'),
    /** Overrides the model's max_position_embeddings / model_max_length (pieces incl. [CLS]/[SEP]). */
    maxSequenceLength: z.number().int().min(8).optional(),
    /** Words repeated between neighbouring windows of an over-long sentence. */
    windowOverlapWords: z.number().int().min(0).default(16),
    /** Windows per onnxruntime call, gathered across notes. */
    batchSize: z.number().int().positive().default(32),
    /** How long a partial batch waits for more windows before it runs. */
    batchWaitMs: z.number().int().min(0).default(2),
    intraOpThreads: z.number().int().min(0).default(0),
    decode: z.enum(['viterbi', 'argmax']).default('viterbi'),
  })
  .strict();

const httpUrl = z.string().regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'expected http(s)://host[:port][/prefix]');

export const LlmCircuitSchema = z
  .object({
    /** Consecutive failed LLM requests after which the circuit opens (calls then fail fast and fall back). */
    failureThreshold: z.number().int().positive().default(5),
    /** How long the circuit stays open before one trial request is let through (half-open). */
    resetTimeoutMs: z.number().int().positive().default(30000),
  })
  .strict();

export const LlmSchema = z
  .object({
    /** `onnx`: the reference decoder in-process; `openai`: chat completions (vLLM, OpenAI-compatible); `vllm-pooling`: vLLM /pooling token_classify. */
    adapter: z.enum(['onnx', 'openai', 'vllm-pooling']).default('onnx'),
    /** HF-layout model directory: the model itself for `onnx`; tokenizer.json + id2label for `vllm-pooling`; the label set for `openai`. */
    modelDir: z.string().min(1).default('models/bc5cdr-llm'),
    /** Server root for the remote adapters (no /v1: paths are appended). */
    baseUrl: httpUrl.optional(),
    /** Model name sent in requests (vLLM's served model name); omitted when unset. */
    model: z.string().min(1).optional(),
    /** File holding the API key, sent as `Authorization: Bearer`; never logged. */
    apiKeyFile: z.string().min(1).optional(),
    /** Labels for the `openai` adapter's prompt and schema; default: id2label of llm.modelDir. */
    labels: z.array(z.string().regex(/^\S+$/, 'labels have no spaces')).min(1).optional(),
    /** Per-request limit (ms); must stay below processing.noteTimeoutMs. */
    timeoutMs: z.number().int().positive().default(4000),
    /** LLM requests in flight at once (p-limit). */
    maxConcurrency: z.number().int().positive().default(8),
    /** Extra attempts for retriable failures (timeouts, 429, 5xx, refused/reset connections). */
    retries: z.number().int().min(0).max(10).default(2),
    /** First retry delay (ms); doubles per retry, with jitter. */
    retryBackoffMs: z.number().int().min(0).default(100),
    /** Send vLLM `structured_outputs: {json: schema}` with chat requests. */
    structuredOutputs: z.boolean().default(true),
    circuit: LlmCircuitSchema.prefault({}),
  })
  .strict();

export const RoutingLoadSchema = z
  .object({
    /** In-flight notes above which budgets shrink (see "Budget and load shedding" in README); default half of processing.maxInFlight. */
    inFlightHigh: z.number().int().positive().optional(),
    /** Consumer lag (records, summed over this consumer's partitions) above which budgets shrink. */
    lagHigh: z.number().int().positive().default(2000),
    /** Smallest share of its budget a note keeps under load. */
    minFactor: z.number().gt(0).max(1).default(0.25),
  })
  .strict();

export const RoutingCascadeSchema = z
  .object({
    /** The cascade re-tags a sentence whose least confident word has a top label probability below this. */
    confidenceThreshold: z.number().min(0).max(1).default(0.8),
    /** The cascade re-tags a sentence where the encoder found a span of 3+ words. */
    flagLongSpans: z.boolean().default(true),
  })
  .strict();

export const RoutingSchema = z
  .object({
    /**
     * `encoder`: every sentence to the encoder; `llm`: every sentence to the LLM within the budget;
     * `length-aware`: the LLM where the expected gain (measured gains x entity-length estimate) is worth its cost;
     * `cascade`: encoder on everything, then the LLM re-tags the sentences the estimate or the encoder's confidence flags.
     */
    policy: z.enum(['encoder', 'llm', 'length-aware', 'cascade']).default('encoder'),
    /** `sentence`: each sentence routed on its own; `note`: the whole note or nothing (length-aware only). */
    granularity: z.enum(['sentence', 'note']).default('sentence'),
    /** Latency budget for notes that carry none, in no header, on a topic without its own (ms). */
    defaultBudgetMs: z.number().int().positive().default(5000),
    /** Per-input-topic default budgets (ms). */
    topicBudgets: z.record(z.string().min(1), z.number().int().positive()).default({}),
    /** Kafka header holding a budget in ms (used when the note has no latency_budget_ms). */
    budgetHeader: z.string().min(1).default('x-latency-budget-ms'),
    /** Measured costs and gains (written by `npm run eval:table`). */
    calibrationFile: z.string().min(1).default('models/calibration.json'),
    /** Which dataset of the calibration file (and which length estimator) the notes resemble. */
    domain: z.string().min(1).default('bc5cdr'),
    /** Entity-length estimator file; default models/length-estimator/<domain>.json. */
    lengthEstimator: z.string().min(1).optional(),
    /** Smallest expected F1 gain (0..1 per sentence) that sends a sentence to the LLM under length-aware. */
    minGain: z.number().min(-1).max(1).default(0),
    cascade: RoutingCascadeSchema.prefault({}),
    load: RoutingLoadSchema.prefault({}),
    /** Observations after which an observed latency's weight in the cost model has halved. */
    costHalfLife: z.number().int().positive().default(50),
    /** How long a timed-out or budget-cut call's shortfall raises a route's predicted cost, unless a success comes first (ms). */
    costFailureMemoryMs: z.number().int().positive().default(10_000),
  })
  .strict();

export const TelemetrySchema = z
  .object({
    /** service.name of traces and metrics; OTEL_SERVICE_NAME wins when set. */
    serviceName: z.string().min(1).default('bioner-router'),
    /** `otlp`: OTLP/HTTP to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (default http://localhost:4318); `none`: no trace export. */
    tracesExporter: z.enum(['otlp', 'none']).default('otlp'),
    /** Share of notes traced (parent-based; a sampled producer trace is always followed). OTEL_TRACES_SAMPLER_ARG wins when set. */
    sampleRatio: z.number().min(0).max(1).default(1),
    /** Port of the HTTP server with /metrics (Prometheus), /healthz and /readyz; 0 = a free port; -1 = no server. */
    port: z.number().int().min(-1).max(65535).default(9464),
    host: z.string().min(1).default('0.0.0.0'),
  })
  .strict();

export const ShutdownSchema = z
  .object({
    /** Longest a SIGTERM drain waits for in-flight notes before disconnecting anyway. */
    drainTimeoutMs: z.number().int().positive().default(25000),
  })
  .strict();

export const LoggingSchema = z
  .object({
    level: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  })
  .strict();

export const ConfigSchema = z
  .object({
    kafka: KafkaSchema.prefault({}),
    input: InputSchema.prefault({}),
    output: OutputSchema.prefault({}),
    processing: ProcessingSchema.prefault({}),
    encoder: EncoderSchema.prefault({}),
    llm: LlmSchema.prefault({}),
    routing: RoutingSchema.prefault({}),
    shutdown: ShutdownSchema.prefault({}),
    telemetry: TelemetrySchema.prefault({}),
    logging: LoggingSchema.prefault({}),
  })
  .strict();

export type RouterConfig = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** Rules that span fields; each returns [field, message] when broken. */
export function crossFieldRules(c: RouterConfig): Array<[string, string]> {
  const problems: Array<[string, string]> = [];
  const tls = c.kafka.tls;
  if (tls.certFile !== undefined && tls.keyFile === undefined) {
    problems.push(['kafka.tls.keyFile', 'is required with kafka.tls.certFile (a client certificate needs its private key)']);
  }
  if (tls.keyFile !== undefined && tls.certFile === undefined) {
    problems.push(['kafka.tls.certFile', 'is required with kafka.tls.keyFile (a private key needs its client certificate)']);
  }
  if (!tls.enabled) {
    for (const key of ['caFile', 'certFile', 'keyFile', 'servername'] as const) {
      if (tls[key] !== undefined) problems.push([`kafka.tls.${key}`, 'is set but kafka.tls.enabled is false; set kafka.tls.enabled: true or remove it']);
    }
  }
  if (c.kafka.sasl?.mechanism === 'plain' && !tls.enabled) {
    problems.push(['kafka.sasl.mechanism', 'plain sends the password in clear text; it requires kafka.tls.enabled: true (or use scram-sha-256/scram-sha-512)']);
  }
  if (c.input.heartbeatIntervalMs * 3 > c.input.sessionTimeoutMs) {
    problems.push(['input.heartbeatIntervalMs', `must be at most a third of input.sessionTimeoutMs (${c.input.sessionTimeoutMs}); lower it or raise the session timeout`]);
  }
  if (c.input.maxWaitTimeMs >= c.input.sessionTimeoutMs) {
    problems.push(['input.maxWaitTimeMs', `must be below input.sessionTimeoutMs (${c.input.sessionTimeoutMs})`]);
  }
  if (c.shutdown.drainTimeoutMs < c.processing.noteTimeoutMs) {
    problems.push(['shutdown.drainTimeoutMs', `must be at least processing.noteTimeoutMs (${c.processing.noteTimeoutMs}) so a note in flight can finish during a drain`]);
  }
  if (c.processing.concurrency > c.processing.maxInFlight) {
    problems.push(['processing.concurrency', `must not exceed processing.maxInFlight (${c.processing.maxInFlight})`]);
  }
  if (c.routing.defaultBudgetMs > c.processing.noteTimeoutMs) {
    problems.push(['routing.defaultBudgetMs', `must not exceed processing.noteTimeoutMs (${c.processing.noteTimeoutMs}): a note's budget has to fit in its processing timeout`]);
  }
  for (const [topic, ms] of Object.entries(c.routing.topicBudgets)) {
    if (ms > c.processing.noteTimeoutMs) problems.push([`routing.topicBudgets.${topic}`, `must not exceed processing.noteTimeoutMs (${c.processing.noteTimeoutMs})`]);
  }
  if (c.routing.load.inFlightHigh !== undefined && c.routing.load.inFlightHigh > c.processing.maxInFlight) {
    problems.push(['routing.load.inFlightHigh', `must not exceed processing.maxInFlight (${c.processing.maxInFlight}), or load shedding could never start`]);
  }
  if (c.routing.granularity === 'note' && c.routing.policy === 'cascade') {
    problems.push(['routing.granularity', 'cascade re-tags single sentences; use granularity "sentence" with it']);
  }
  if (c.output.topic === c.input.topic || c.output.dlqTopic === c.input.topic) {
    problems.push(['output.topic', 'output and dead-letter topics must differ from input.topic']);
  }
  if (c.output.dlqTopic === c.output.topic) {
    problems.push(['output.dlqTopic', 'must differ from output.topic']);
  }
  if (c.llm.timeoutMs >= c.processing.noteTimeoutMs) {
    problems.push(['llm.timeoutMs', `must be below processing.noteTimeoutMs (${c.processing.noteTimeoutMs}): an LLM request has to leave time for the encoder fallback`]);
  }
  if ((c.llm.adapter === 'openai' || c.llm.adapter === 'vllm-pooling') && c.llm.baseUrl === undefined) {
    problems.push(['llm.baseUrl', `is required for llm.adapter "${c.llm.adapter}": the server root, e.g. http://127.0.0.1:8000`]);
  }
  if (c.llm.baseUrl !== undefined && /\/v1\/?$/.test(c.llm.baseUrl)) {
    problems.push(['llm.baseUrl', 'give the server root without /v1: /v1/chat/completions and /pooling are appended']);
  }
  if (c.shutdown.drainTimeoutMs >= c.input.sessionTimeoutMs * 10) {
    problems.push(['shutdown.drainTimeoutMs', 'is implausibly long; keep it below ten session timeouts']);
  }
  return problems;
}
