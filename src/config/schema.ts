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

/** The enum lists, in one place: the CLI, the router and the docs read them from here. */
export const POLICY_NAMES = ['encoder', 'llm', 'length-aware', 'cascade'] as const;
export const LLM_ADAPTERS = ['onnx', 'openai', 'vllm-pooling'] as const;
export const GRANULARITIES = ['sentence', 'note'] as const;
export const LLM_ENDPOINTS = ['chat', 'completions'] as const;
export const STRUCTURED_OUTPUT_MODES = ['json', 'regex', 'none'] as const;
export const WORD_SPLITS = ['pipeline', 'whitespace'] as const;

export const KafkaTlsSchema = z
  .object({
    enabled: z
      .boolean()
      .default(false)
      .describe(
        "TLS to the brokers; certificates are read from files (mounted Kubernetes secrets) at start-up. Alone it means Node's bundled CAs with full verification.",
      ),
    caFile: z.string().min(1).optional().describe("PEM CA bundle that signs the brokers' certificates; default: Node's bundled CAs."),
    certFile: z.string().min(1).optional().describe('PEM client certificate for mutual TLS (with keyFile).'),
    keyFile: z.string().min(1).optional().describe('PEM private key of certFile.'),
    rejectUnauthorized: z.boolean().default(true).describe("Verify the brokers' certificates; false only for testing."),
    servername: z.string().min(1).optional().describe('SNI / name checked in the broker certificate when it differs from the broker host.'),
  })
  .strict();

export const KafkaSaslSchema = z
  .object({
    mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).describe('SASL mechanism (no SASL when kafka.sasl is absent); `plain` needs TLS.'),
    usernameFile: z.string().min(1).describe('File holding the SASL username; read once at start-up, one trailing newline trimmed, never logged.'),
    passwordFile: z.string().min(1).describe('File holding the SASL password; read once at start-up, one trailing newline trimmed, never logged.'),
  })
  .strict();

export const KafkaSchema = z
  .object({
    clientId: z.string().min(1).default('bioner-router').describe('Kafka client id.'),
    brokers: z.array(brokerAddress).min(1).default(['localhost:9092']).describe('Bootstrap servers, each host:port.'),
    connectionTimeoutMs: z.number().int().positive().default(3000).describe('TCP connect timeout (ms).'),
    requestTimeoutMs: z.number().int().positive().default(30000).describe('Per-request timeout (ms).'),
    retries: z.number().int().min(0).default(8).describe('kafkajs client retries before an operation fails (then our own logic decides).'),
    tls: KafkaTlsSchema.prefault({}),
    sasl: KafkaSaslSchema.optional(),
  })
  .strict();

export const InputSchema = z
  .object({
    topic: z.string().min(1).default('clinical-notes').describe('Topic of ClinicalNote records.'),
    groupId: z.string().min(1).default('bioner-router').describe('Consumer group id.'),
    format: z.enum(['json', 'avro']).default('json').describe('Wire format of input records: JSON objects or Avro binary of schemas/clinical-note.avsc.'),
    avroWireFormat: z
      .enum(['raw', 'confluent'])
      .default('raw')
      .describe(
        "`confluent`: Schema Registry wire format (magic byte 0, 4-byte schema id, Avro body). With schemaRegistry.url each record's writer schema is fetched by its id (cached) and resolved to schemas/clinical-note.avsc, so evolved writers decode; without it the header is only stripped and the body read with the router's own schema.",
      ),
    fromBeginning: z.boolean().default(true).describe('Where a new consumer group starts: the earliest offset (true) or the latest (false).'),
    maxNoteBytes: z
      .number()
      .int()
      .positive()
      .default(1_000_000)
      .describe('Records larger than this (bytes, raw value) are dead-lettered as NOTE_TOO_LARGE, before parsing.'),
    sessionTimeoutMs: z
      .number()
      .int()
      .positive()
      .default(30000)
      .describe(
        'Consumer group session timeout (ms). Real brokers accept 6000-300000 by default (group.min/max.session.timeout.ms); the embedded mock accepts less.',
      ),
    heartbeatIntervalMs: z.number().int().positive().default(3000).describe('Consumer heartbeat interval (ms); at most a third of input.sessionTimeoutMs.'),
    maxWaitTimeMs: z
      .number()
      .int()
      .min(10)
      .default(1000)
      .describe(
        'Longest a fetch waits for data (ms). Real brokers answer as soon as data arrives; the embedded mock waits the whole time, so the demo and tests use 100.',
      ),
    partitionsConsumedConcurrently: z
      .number()
      .int()
      .positive()
      .default(3)
      .describe('Partitions processed at once by this consumer (kafkajs partitionsConsumedConcurrently).'),
  })
  .strict();

export const OutputSchema = z
  .object({
    topic: z.string().min(1).default('tagged-notes').describe('TaggedNote output topic (schemas/tagged-note.avsc), keyed by note id.'),
    dlqTopic: z.string().min(1).default('clinical-notes.dlq').describe('Dead-letter topic: unusable records, original bytes, the reason in headers.'),
    acks: z
      .union([z.literal(-1), z.literal(1)])
      .default(-1)
      .describe('-1 = all in-sync replicas, 1 = leader only; offsets are committed only after this acknowledgement (0 would ack nothing, so it is refused).'),
    compression: z.enum(['none', 'gzip']).default('none').describe('Compression of produced records.'),
    wireFormat: z
      .enum(['raw', 'confluent'])
      .default('raw')
      .describe(
        'Framing of TaggedNote values: `raw` Avro binary, or `confluent` (magic byte 0 + 4-byte schema id + Avro), the schema registered or looked up in schemaRegistry at start-up, as Confluent deserializers, Kafka Connect and ksqlDB expect. Tombstones stay null and DLQ records keep their original bytes.',
      ),
    subject: z
      .string()
      .min(1)
      .optional()
      .describe('Schema Registry subject of the TaggedNote schema with output.wireFormat `confluent`; default `<output.topic>-value` (TopicNameStrategy).'),
    spanText: z
      .boolean()
      .default(true)
      .describe(
        "Copy each span's characters into `spans[].text` (PHI like the note). false: `text` is null in every span, for deployments that must not copy entity text.",
      ),
  })
  .strict();

export const ProcessingSchema = z
  .object({
    concurrency: z.number().int().positive().default(8).describe('Notes tagged at once (p-limit).'),
    maxInFlight: z
      .number()
      .int()
      .positive()
      .default(64)
      .describe('Notes fetched but not yet committed; at this bound the consumer pauses fetching and resumes at half.'),
    noteTimeoutMs: z
      .number()
      .int()
      .positive()
      .default(20000)
      .describe("Per-note time limit for tagging + publishing (ms); past it the note's work is cancelled and the attempt fails with NOTE_TIMEOUT (retriable)."),
    maxAttempts: z.number().int().positive().max(10).default(3).describe('Attempts for a note whose failure is retriable before it is dead-lettered.'),
  })
  .strict();

export const EncoderSchema = z
  .object({
    modelDir: z
      .string()
      .min(1)
      .default('models/bc5cdr-encoder')
      .describe(
        'A Hugging Face token-classification export: config.json, tokenizer.json, model.onnx (a relative path: the working directory, then the package).',
      ),
    maxSequenceLength: z
      .number()
      .int()
      .min(8)
      .optional()
      .describe(
        "Pieces per window incl. [CLS]/[SEP]; overrides the model's max_position_embeddings / model_max_length (default: the model's limit, at most 512).",
      ),
    windowOverlapWords: z.number().int().min(0).default(16).describe('Words repeated between neighbouring windows of an over-long sentence.'),
    batchSize: z.number().int().positive().default(32).describe('Windows per onnxruntime call, gathered across notes.'),
    batchWaitMs: z.number().int().min(0).default(2).describe('How long a partial batch waits for more windows before it runs (ms).'),
    intraOpThreads: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe("onnxruntime intra-op threads; 0 = the container's CPU limit (cgroup quota, rounded down, at least 1), else onnxruntime's default."),
    decode: z
      .enum(['viterbi', 'argmax'])
      .default('viterbi')
      .describe("`viterbi`: constrained BIO decoding (never an invalid sequence); `argmax`: each word's best tag, repaired with the conlleval rule."),
  })
  .strict();

const httpUrl = z.string().regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'expected http(s)://host[:port][/prefix]');

export const SchemaRegistryTlsSchema = z
  .object({
    caFile: z.string().min(1).optional().describe("PEM CA bundle that signs the registry's certificate (https only); default: Node's bundled CAs."),
    rejectUnauthorized: z.boolean().default(true).describe("Verify the registry's certificate; false only for testing."),
  })
  .strict();

export const SchemaRegistrySchema = z
  .object({
    url: httpUrl
      .refine((v) => !/^https?:\/\/[^/]*@/.test(v), 'put no credentials in the URL; use schemaRegistry.usernameFile and passwordFile')
      .optional()
      .describe(
        'Confluent Schema Registry root, e.g. https://schema-registry:8081 (a path prefix is kept); needed by input.avroWireFormat `confluent` to resolve writer schemas and by output.wireFormat `confluent`.',
      ),
    usernameFile: z
      .string()
      .min(1)
      .optional()
      .describe('File holding the basic-auth username (with passwordFile); read once at start-up, one trailing newline trimmed, never logged.'),
    passwordFile: z
      .string()
      .min(1)
      .optional()
      .describe('File holding the basic-auth password (with usernameFile); read once at start-up, one trailing newline trimmed, never logged.'),
    tls: SchemaRegistryTlsSchema.prefault({}),
    timeoutMs: z.number().int().positive().default(5000).describe('Per-request limit (ms); a registry slower than this counts as unavailable (retriable).'),
    autoRegister: z
      .boolean()
      .default(true)
      .describe(
        'true: register the TaggedNote schema under the output subject at start-up (POST /subjects/{subject}/versions); false: only look it up (POST /subjects/{subject}) and refuse to start when it is not registered.',
      ),
  })
  .strict();

export const LlmCircuitSchema = z
  .object({
    failureThreshold: z
      .number()
      .int()
      .positive()
      .default(5)
      .describe('Consecutive failed LLM requests after which the circuit opens (calls then fail fast and fall back).'),
    resetTimeoutMs: z
      .number()
      .int()
      .positive()
      .default(30000)
      .describe('How long the circuit stays open before one trial request is let through (half-open) (ms).'),
  })
  .strict();

export const LlmSchema = z
  .object({
    adapter: z
      .enum(LLM_ADAPTERS)
      .default('onnx')
      .describe(
        '`onnx`: the bundle in llm.modelDir in-process (a generative decoder generates the answer with a KV cache; a token-classification export runs as the encoder does); `openai`: chat completions (vLLM, OpenAI-compatible); `vllm-pooling`: vLLM /pooling token_classify.',
      ),
    modelDir: z
      .string()
      .min(1)
      .default('models/bc5cdr-generative')
      .describe(
        'HF-layout model directory: the model itself for `onnx` (default: the generative decoder `models/bc5cdr-generative`); tokenizer.json + id2label of a token-classification export for `vllm-pooling` (e.g. `models/bc5cdr-decoder-classifier`); the label set for `openai`.',
      ),
    baseUrl: httpUrl
      .optional()
      .describe('Server root for the remote adapters, e.g. http://vllm:8000 (no /v1: paths are appended); required for `openai` and `vllm-pooling`.'),
    model: z.string().min(1).optional().describe("Model name sent in requests (vLLM's served model name); omitted when unset."),
    apiKeyFile: z
      .string()
      .min(1)
      .optional()
      .describe('File holding the API key (one line), read once at start-up and sent as `Authorization: Bearer`; never logged.'),
    labels: z
      .array(z.string().regex(/^\S+$/, 'labels have no spaces'))
      .min(1)
      .optional()
      .describe("Labels for the `openai` adapter's prompt and schema; default: the labels of llm.modelDir (id2label, or `labels` of a generative bundle)."),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .default(4000)
      .describe('Per-request limit (ms), from sending to the last byte of the answer; must stay below processing.noteTimeoutMs.'),
    maxConcurrency: z.number().int().positive().default(8).describe('LLM requests in flight at once (p-limit).'),
    retries: z.number().int().min(0).max(10).default(2).describe('Extra attempts for retriable failures (timeouts, 429, 5xx, refused/reset connections).'),
    retryBackoffMs: z.number().int().min(0).default(100).describe('First retry delay (ms); doubles per retry, with jitter.'),
    structuredOutputs: z
      // Booleans (and their BIONER_* spellings) are the option's old values.
      .union([z.enum(STRUCTURED_OUTPUT_MODES), z.boolean(), z.enum(['true', 'false'])], {
        error: 'must be json, regex or none (true and false still mean json and none)',
      })
      .transform((v): (typeof STRUCTURED_OUTPUT_MODES)[number] => (v === true || v === 'true' ? 'json' : v === false || v === 'false' ? 'none' : v))
      .default('json')
      .describe(
        'vLLM `structured_outputs` sent with `openai` requests (vLLM >= 0.12): `json` (a JSON schema of {token, tag} lines with the label enum), `regex` (exactly one `token<TAB>TAG` line per input word, tags from the label set), `none`. `true`/`false`, the old boolean values, mean `json`/`none`.',
      ),
    endpoint: z
      .enum(LLM_ENDPOINTS)
      .default('chat')
      .describe(
        '`openai` adapter: `chat` posts /v1/chat/completions (system + user messages); `completions` posts /v1/completions with one prompt (a base model without a chat template).',
      ),
    promptFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        '`openai` adapter: YAML or JSON file with `system`, `user` and `completion` templates (placeholders {{labels}}, {{count}}, {{tokens}}, {{text}}; {{system}} and {{user}} in `completion`); keys left out keep the built-in prompt. Read once at start-up.',
      ),
    wordSplit: z
      .enum(WORD_SPLITS)
      .default('pipeline')
      .describe(
        "`openai` adapter: the words sent to the model: `pipeline` = the pipeline's BERT-style tokens; `whitespace` = whitespace-separated words (tags are spread back onto the tokens each word covers; offsets stay exact).",
      ),
    logprobs: z
      .boolean()
      .default(true)
      .describe(
        "`openai` adapter: request token logprobs and score each span with the mean probability of its words' tag tokens; spans score 1.0 when the server returns none.",
      ),
    circuit: LlmCircuitSchema.prefault({}),
  })
  .strict();

export const RoutingLoadSchema = z
  .object({
    inFlightHigh: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'In-flight notes above which budgets shrink (docs/router.md, "Budget and load shedding"); default half of processing.maxInFlight, at most processing.maxInFlight.',
      ),
    lagHigh: z.number().int().positive().default(2000).describe("Consumer lag (records, summed over this consumer's partitions) above which budgets shrink."),
    minFactor: z.number().gt(0).max(1).default(0.25).describe('Smallest share of its budget a note keeps under load.'),
  })
  .strict();

export const RoutingCascadeSchema = z
  .object({
    confidenceThreshold: z
      .number()
      .min(0)
      .max(1)
      .default(0.8)
      .describe('The cascade re-tags a sentence whose least confident word has a top label probability below this.'),
    flagLongSpans: z.boolean().default(true).describe('The cascade re-tags a sentence where the encoder found a span of 3+ words.'),
  })
  .strict();

export const RoutingDomainSchema = z
  .object({
    domain: z.string().min(1).describe('Calibration-file domain (dataset) for notes of this input topic.'),
    lengthEstimator: z
      .string()
      .min(1)
      .optional()
      .describe('Entity-length estimator for this topic; default models/length-estimator/<domain>.json when it exists.'),
    llmModel: z
      .string()
      .min(1)
      .optional()
      .describe("LLM model name sent in this topic's requests (a LoRA adapter served by the same vLLM); default llm.model."),
  })
  .strict();

export const RoutingLlmCapSchema = z
  .object({
    maxSentenceShare: z
      .number()
      .min(0)
      .max(1)
      .optional()
      .describe('Largest share of the sentences routed within the window that may go to the LLM (0..1); unset: no share cap.'),
    maxTokensPerMinute: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Most word tokens (the pipeline's tokens, the cost model's unit) sent to the LLM per minute, counted over the window; unset: no rate cap."),
    windowMs: z.number().int().positive().default(60_000).describe('Sliding window over which the LLM cap counts routed work (ms).'),
  })
  .strict();

export const RoutingSchema = z
  .object({
    policy: z
      .enum(POLICY_NAMES)
      .default('encoder')
      .describe(
        "`encoder`: every sentence to the encoder; `llm`: every sentence to the LLM within the budget; `length-aware`: the LLM where the expected gain (measured gains x entity-length estimate) is worth its cost; `cascade`: encoder on everything, then the LLM re-tags the sentences the estimate or the encoder's confidence flags.",
      ),
    granularity: z
      .enum(GRANULARITIES)
      .default('sentence')
      .describe('`sentence`: each sentence routed on its own; `note`: the whole note or nothing (length-aware only; cascade needs `sentence`).'),
    defaultBudgetMs: z
      .number()
      .int()
      .positive()
      .default(5000)
      .describe('Latency budget for notes that carry none, in no header, on a topic without its own (ms); at most processing.noteTimeoutMs.'),
    topicBudgets: z
      .record(z.string().min(1), z.number().int().positive())
      .default({})
      .describe('Per-input-topic default budgets (ms), each at most processing.noteTimeoutMs.'),
    budgetHeader: z
      .string()
      .min(1)
      .default('x-latency-budget-ms')
      .describe('Kafka header holding a budget in ms (a positive integer; used when the note has no latency_budget_ms).'),
    calibrationFile: z.string().min(1).default('models/calibration.json').describe('Measured costs and gains (written by `npm run eval:table`).'),
    domain: z.string().min(1).default('bc5cdr').describe('Which dataset of the calibration file (and which length estimator) the notes resemble.'),
    lengthEstimator: z
      .string()
      .min(1)
      .optional()
      .describe('Entity-length estimator file; default models/length-estimator/<domain>.json (an explicitly set one must load).'),
    minGain: z
      .number()
      .min(-1)
      .max(1)
      .default(0)
      .describe('Smallest expected F1 gain (0..1 per sentence) that sends a sentence to the LLM under length-aware.'),
    cascade: RoutingCascadeSchema.prefault({}),
    load: RoutingLoadSchema.prefault({}),
    costHalfLife: z
      .number()
      .int()
      .positive()
      .default(50)
      .describe("Observations (tagger calls) after which an observed latency's weight in the cost model has halved."),
    domains: z
      .record(z.string().min(1), RoutingDomainSchema)
      .default({})
      .describe(
        'Per-input-topic domains: `<topic>: {domain, lengthEstimator?, llmModel?}` picks the calibration entry, the length estimator and the LLM model name for notes of that topic; other topics use routing.domain and llm.model.',
      ),
    llmCap: RoutingLlmCapSchema.prefault({}),
    costFailureMemoryMs: z
      .number()
      .int()
      .positive()
      .default(10_000)
      .describe(
        'How long a timed-out or budget-cut call\'s shortfall raises a route\'s predicted cost, unless a success comes first (ms). With llm.circuit.resetTimeoutMs it bounds the return to the LLM after an outage (docs/router.md, "Cost model").',
      ),
  })
  .strict();

export const TelemetrySchema = z
  .object({
    serviceName: z.string().min(1).default('bioner-router').describe('service.name of traces and metrics; OTEL_SERVICE_NAME wins when set.'),
    tracesExporter: z
      .enum(['otlp', 'console', 'none'])
      .default('otlp')
      .describe(
        '`otlp`: OTLP/HTTP (JSON) to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (default http://localhost:4318); `console`: spans printed to stdout as they end; `none`: no trace export. OTEL_TRACES_EXPORTER (comma-separated) wins.',
      ),
    sampleRatio: z
      .number()
      .min(0)
      .max(1)
      .default(1)
      .describe('Share of notes traced (parent-based; a sampled producer trace is always followed). OTEL_TRACES_SAMPLER_ARG wins when set.'),
    port: z
      .number()
      .int()
      .min(-1)
      .max(65535)
      .default(9464)
      .describe('Port of the HTTP server with /metrics (Prometheus), /healthz and /readyz; 0 = a free port; -1 = no server.'),
    host: z.string().min(1).default('0.0.0.0').describe('Bind address of the telemetry server.'),
  })
  .strict();

export const ShutdownSchema = z
  .object({
    drainTimeoutMs: z
      .number()
      .int()
      .positive()
      .default(25000)
      .describe('Longest a SIGTERM drain waits for in-flight notes before disconnecting anyway (ms); at least processing.noteTimeoutMs.'),
  })
  .strict();

export const LoggingSchema = z
  .object({
    level: z
      .enum(['debug', 'info', 'warn', 'error', 'silent'])
      .default('info')
      .describe('Log level of the JSON log lines on stderr (ids, counts and timings only, never note text).'),
  })
  .strict();

export const ConfigSchema = z
  .object({
    kafka: KafkaSchema.prefault({}),
    input: InputSchema.prefault({}),
    output: OutputSchema.prefault({}),
    schemaRegistry: SchemaRegistrySchema.prefault({}),
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
    problems.push([
      'input.heartbeatIntervalMs',
      `must be at most a third of input.sessionTimeoutMs (${c.input.sessionTimeoutMs}); lower it or raise the session timeout`,
    ]);
  }
  if (c.input.maxWaitTimeMs >= c.input.sessionTimeoutMs) {
    problems.push(['input.maxWaitTimeMs', `must be below input.sessionTimeoutMs (${c.input.sessionTimeoutMs})`]);
  }
  if (c.shutdown.drainTimeoutMs < c.processing.noteTimeoutMs) {
    problems.push([
      'shutdown.drainTimeoutMs',
      `must be at least processing.noteTimeoutMs (${c.processing.noteTimeoutMs}) so a note in flight can finish during a drain`,
    ]);
  }
  if (c.processing.concurrency > c.processing.maxInFlight) {
    problems.push(['processing.concurrency', `must not exceed processing.maxInFlight (${c.processing.maxInFlight})`]);
  }
  if (c.routing.defaultBudgetMs > c.processing.noteTimeoutMs) {
    problems.push([
      'routing.defaultBudgetMs',
      `must not exceed processing.noteTimeoutMs (${c.processing.noteTimeoutMs}): a note's budget has to fit in its processing timeout`,
    ]);
  }
  for (const [topic, ms] of Object.entries(c.routing.topicBudgets)) {
    if (ms > c.processing.noteTimeoutMs)
      problems.push([`routing.topicBudgets.${topic}`, `must not exceed processing.noteTimeoutMs (${c.processing.noteTimeoutMs})`]);
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
  const registry = c.schemaRegistry;
  if (c.output.wireFormat === 'confluent' && registry.url === undefined) {
    problems.push(['schemaRegistry.url', 'is required with output.wireFormat: confluent (the TaggedNote schema is registered there at start-up)']);
  }
  if (c.output.subject !== undefined && c.output.wireFormat !== 'confluent') {
    problems.push(['output.subject', 'is set but output.wireFormat is raw; set output.wireFormat: confluent or remove it']);
  }
  if ((registry.usernameFile === undefined) !== (registry.passwordFile === undefined)) {
    problems.push([
      registry.usernameFile === undefined ? 'schemaRegistry.usernameFile' : 'schemaRegistry.passwordFile',
      'schemaRegistry.usernameFile and schemaRegistry.passwordFile go together (basic auth needs both)',
    ]);
  }
  if (registry.url === undefined && (registry.usernameFile !== undefined || registry.tls.caFile !== undefined)) {
    problems.push(['schemaRegistry.url', 'is required when schemaRegistry credentials or TLS files are set']);
  }
  if (registry.tls.caFile !== undefined && registry.url?.startsWith('http://') === true) {
    problems.push(['schemaRegistry.tls.caFile', 'is set but schemaRegistry.url is http://; use https:// or remove it']);
  }
  if (c.llm.timeoutMs >= c.processing.noteTimeoutMs) {
    problems.push([
      'llm.timeoutMs',
      `must be below processing.noteTimeoutMs (${c.processing.noteTimeoutMs}): an LLM request has to leave time for the encoder fallback`,
    ]);
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
