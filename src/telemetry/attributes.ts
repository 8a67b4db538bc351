/**
 * Span attribute names, in one place. Our own names carry the `bioner.`
 * prefix; the messaging ones are OpenTelemetry's semantic conventions for
 * Kafka (still "incubating" upstream, so copied here rather than imported from
 * @opentelemetry/semantic-conventions/incubating, as its README advises).
 *
 * PHI rule: attributes carry ids, codes, counts and timings only. Note ids are
 * pseudonymous record keys and may be traced; note text, span text and
 * patient_id never are.
 */

/** The tracer (instrumentation scope) name of the pipeline's spans. */
export const TRACER_NAME = 'bioner-router';

export const BionerAttr = {
  /** The note's id (the output key). */
  NOTE_ID: 'bioner.note.id',
  /** Length of the note text in UTF-16 units (a size, never the text). */
  NOTE_CHARS: 'bioner.note.chars',
  TEXT_SENTENCES: 'bioner.text.sentences',
  TEXT_WORDS: 'bioner.text.words',

  ROUTE_POLICY: 'bioner.route.policy',
  ROUTE_GRANULARITY: 'bioner.route.granularity',
  ROUTE_BUDGET_MS: 'bioner.route.budget_ms',
  ROUTE_EFFECTIVE_BUDGET_MS: 'bioner.route.effective_budget_ms',
  ROUTE_BUDGET_SOURCE: 'bioner.route.budget_source',
  ROUTE_LOAD_FACTOR: 'bioner.route.load_factor',
  ROUTE_PREDICTED_ENCODER_MS: 'bioner.route.predicted_encoder_ms',
  ROUTE_PREDICTED_LLM_MS: 'bioner.route.predicted_llm_ms',
  /** What the router chose for the note: `encoder`, `llm` or `mixed` (for cascade, after its refine step). */
  ROUTE_CHOSEN: 'bioner.route.chosen',
  /** Sentences the router sent to the LLM (plan, or the cascade's refine step). */
  ROUTE_SENTENCES_PLANNED_LLM: 'bioner.route.sentences_planned_llm',
  /** Sentences that ended up tagged by the LLM (after any fallback). */
  ROUTE_SENTENCES_LLM: 'bioner.route.sentences_llm',
  ROUTE_SENTENCES_ENCODER: 'bioner.route.sentences_encoder',
  ROUTE_SENTENCES_FALLBACK: 'bioner.route.sentences_encoder_fallback',
  ROUTE_SENTENCES: 'bioner.route.sentences',
  ROUTE_ESTIMATED_GAIN: 'bioner.route.estimated_gain',
  /** Reason codes (string[]), as in the decision record. */
  ROUTE_REASONS: 'bioner.route.reasons',
  /** Time spent deciding (plan + refine), not tagging. */
  ROUTE_DECISION_MS: 'bioner.route.decision_ms',
  /** Cascade only: whether the refine step ran. */
  ROUTE_CASCADE: 'bioner.route.cascade',
  /** The LLM call failed and its sentences went to the encoder. */
  ROUTE_FALLBACK: 'bioner.route.fallback',
  /** The error code of that failure. */
  ROUTE_FALLBACK_CODE: 'bioner.route.fallback_code',

  TAGGER_ROUTE: 'bioner.tagger.route',
  TAGGER_SENTENCES: 'bioner.tagger.sentences',
  TAGGER_WORDS: 'bioner.tagger.words',
  TAGGER_MODEL: 'bioner.tagger.model',
  TAGGER_MS: 'bioner.tagger.ms',
  TAGGER_OK: 'bioner.tagger.ok',

  /** Spans found in the note (a count). */
  NOTE_SPANS: 'bioner.note.spans',
  /** Processing attempts of the note (retriable failures retried). */
  NOTE_ATTEMPTS: 'bioner.note.attempts',
  /** Pipeline stage a dead-lettered record failed at. */
  DLQ_STAGE: 'bioner.dlq.stage',
} as const;

export type BionerAttrName = (typeof BionerAttr)[keyof typeof BionerAttr];

/** OpenTelemetry messaging semantic conventions used on the Kafka spans. */
export const MessagingAttr = {
  SYSTEM: 'messaging.system',
  DESTINATION_NAME: 'messaging.destination.name',
  DESTINATION_PARTITION_ID: 'messaging.destination.partition.id',
  OPERATION_TYPE: 'messaging.operation.type',
  OPERATION_NAME: 'messaging.operation.name',
  CONSUMER_GROUP_NAME: 'messaging.consumer.group.name',
  KAFKA_OFFSET: 'messaging.kafka.offset',
  MESSAGE_BODY_SIZE: 'messaging.message.body.size',
  CLIENT_ID: 'messaging.client.id',
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
} as const;

export const MESSAGING_SYSTEM_KAFKA = 'kafka';

/** HTTP client span attributes (OpenTelemetry's stable HTTP semantic conventions), for requests to the LLM server. */
export const HttpAttr = {
  REQUEST_METHOD: 'http.request.method',
  RESPONSE_STATUS_CODE: 'http.response.status_code',
  /** Attempts before this one (0 for the first), as the conventions name a retry's count. */
  RESEND_COUNT: 'http.request.resend_count',
  URL_FULL: 'url.full',
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
} as const;

/** Our LLM client attributes beside the HTTP ones. */
export const LlmClientAttr = {
  CIRCUIT_STATE: 'bioner.llm.circuit_state',
} as const;

/** Stable semantic convention: the class of error an operation ended with (our RouterError code, else the class name). */
export const ATTR_ERROR_TYPE = 'error.type';
