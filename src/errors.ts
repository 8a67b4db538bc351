/**
 * One errors module: every failure the pipeline acts on carries a stable `code`
 * and a `retriable` flag. Retry, dead-letter and fallback decisions read these,
 * never the message text. Messages must never contain note text (PHI).
 */
export const ErrorCodes = {
  CONFIG_INVALID: 'CONFIG_INVALID',
  DECODE_FAILED: 'DECODE_FAILED',
  INVALID_UTF8: 'INVALID_UTF8',
  SCHEMA_MISMATCH: 'SCHEMA_MISMATCH',
  TEXT_MISSING: 'TEXT_MISSING',
  TEXT_EMPTY: 'TEXT_EMPTY',
  NOTE_TOO_LARGE: 'NOTE_TOO_LARGE',
  MODEL_LOAD_FAILED: 'MODEL_LOAD_FAILED',
  INFERENCE_FAILED: 'INFERENCE_FAILED',
  TAGGER_UNAVAILABLE: 'TAGGER_UNAVAILABLE',
  /** An LLM request took longer than llm.timeoutMs (retriable). */
  LLM_TIMEOUT: 'LLM_TIMEOUT',
  /** The LLM server answered an HTTP error; retriable for 429 and 5xx only. */
  LLM_HTTP_ERROR: 'LLM_HTTP_ERROR',
  /** The LLM server could not be reached (connection refused/reset, DNS) (retriable). */
  LLM_UNAVAILABLE: 'LLM_UNAVAILABLE',
  /** The LLM answered something that cannot be read (not the expected JSON, no token lines). */
  LLM_BAD_RESPONSE: 'LLM_BAD_RESPONSE',
  /** The note's LLM time (its latency budget) ran out before the LLM answered. */
  LLM_BUDGET_EXCEEDED: 'LLM_BUDGET_EXCEEDED',
  /** The LLM circuit breaker is open: calls fail fast without a request until it half-opens (retriable later). */
  CIRCUIT_OPEN: 'CIRCUIT_OPEN',
  /** A note's tagging and publishing outlasted processing.noteTimeoutMs; its work is cancelled (retriable). */
  NOTE_TIMEOUT: 'NOTE_TIMEOUT',
  PUBLISH_FAILED: 'PUBLISH_FAILED',
  /** The Schema Registry has no schema with the record's schema id (HTTP 404): the record is dead-lettered. At start-up (schemaRegistry.autoRegister: false): the TaggedNote schema is not registered under the output subject. */
  SCHEMA_NOT_FOUND: 'SCHEMA_NOT_FOUND',
  /** A writer schema from the registry cannot be read as a ClinicalNote (not Avro, uses references, or no Avro resolution to the router's schema): the record is dead-lettered. At start-up: the registry refused the TaggedNote schema (HTTP 409/422). */
  SCHEMA_INCOMPATIBLE: 'SCHEMA_INCOMPATIBLE',
  /** The Schema Registry could not be reached, timed out, or answered 5xx, 429, 401 or 403 (retriable: the partition waits and the record is redelivered, never dead-lettered). */
  SCHEMA_REGISTRY_UNAVAILABLE: 'SCHEMA_REGISTRY_UNAVAILABLE',
  MOCK_CLUSTER_FAILED: 'MOCK_CLUSTER_FAILED',
  DATA_FORMAT: 'DATA_FORMAT',
  /** A command line that cannot be run as given (unknown option, bad value). */
  USAGE: 'USAGE',
  /** A file or directory named on the command line or in the config does not exist or cannot be read. */
  INPUT_NOT_FOUND: 'INPUT_NOT_FOUND',
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Pipeline stage an error belongs to; recorded in DLQ headers. */
export type Stage = 'cli' | 'config' | 'ingest' | 'decode' | 'validate' | 'text' | 'route' | 'tag' | 'publish' | 'embedded' | 'eval';

/**
 * The one constructor shape: `(code, message, options)`, or `(message, options)`
 * for a class with a fixed code. Options are named, never positional.
 */
export interface RouterErrorOptions {
  retriable?: boolean;
  stage?: Stage;
  cause?: unknown;
}

export class RouterError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly stage: Stage | undefined;

  constructor(code: ErrorCode, message: string, options: RouterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.stage = options.stage;
  }
}

type CauseOnly = Pick<RouterErrorOptions, 'cause'>;
type RetriableAndCause = Pick<RouterErrorOptions, 'retriable' | 'cause'>;

export interface ConfigProblem {
  field: string;
  message: string;
}

/**
 * Configuration is wrong; `field` is the dotted path of the (first) offending
 * option, `problems` every one found (the message lists them, one per line).
 */
export class ConfigError extends RouterError {
  readonly field: string;
  readonly problems: readonly ConfigProblem[];
  constructor(field: string, message: string, options: CauseOnly & { more?: readonly ConfigProblem[] } = {}) {
    const problems = [{ field, message }, ...(options.more ?? [])];
    super(ErrorCodes.CONFIG_INVALID, problems.map((p) => `config field "${p.field}": ${p.message}`).join('\n'), { stage: 'config', cause: options.cause });
    this.field = field;
    this.problems = problems;
  }
}

/** The command line cannot be run as given; the CLI prints the command's usage and exits 2. */
export class UsageError extends RouterError {
  constructor(message: string) {
    super(ErrorCodes.USAGE, message, { stage: 'cli' });
  }
}

/** A named input file or directory is missing or unreadable: one line, exit 1. */
export class InputNotFoundError extends RouterError {
  constructor(message: string, options: CauseOnly = {}) {
    super(ErrorCodes.INPUT_NOT_FOUND, message, { stage: 'cli', cause: options.cause });
  }
}

/** A single input record is unusable; it goes to the dead-letter topic, never retried. */
export class InvalidRecordError extends RouterError {
  constructor(code: ErrorCode, message: string, options: Pick<RouterErrorOptions, 'stage' | 'cause'> = {}) {
    super(code, message, { retriable: false, stage: options.stage ?? 'validate', cause: options.cause });
  }
}

export class ModelLoadError extends RouterError {
  constructor(message: string, options: CauseOnly = {}) {
    super(ErrorCodes.MODEL_LOAD_FAILED, message, { retriable: false, stage: 'tag', cause: options.cause });
  }
}

/** A tagger failed (the encoder, or no tagger configured). LLM request failures are LlmError. */
export class TaggerError extends RouterError {
  constructor(code: ErrorCode, message: string, options: RetriableAndCause = {}) {
    super(code, message, { retriable: options.retriable ?? false, stage: 'tag', cause: options.cause });
  }
}

/** A failed call to an LLM; `status` is the HTTP status when the server answered one. */
export class LlmError extends TaggerError {
  readonly status: number | undefined;
  constructor(code: ErrorCode, message: string, options: RetriableAndCause & { status?: number } = {}) {
    super(code, message, options);
    this.status = options.status;
  }
}

/** The note outlasted processing.noteTimeoutMs; its tagging was cancelled. Retriable: a later attempt may be faster. */
export class NoteTimeoutError extends RouterError {
  constructor(message: string) {
    super(ErrorCodes.NOTE_TIMEOUT, message, { retriable: true, stage: 'tag' });
  }
}

export class PublishError extends RouterError {
  constructor(message: string, options: RetriableAndCause = {}) {
    super(ErrorCodes.PUBLISH_FAILED, message, { retriable: options.retriable ?? false, stage: 'publish', cause: options.cause });
  }
}

/**
 * A Schema Registry call failed, or what it answered cannot be used. `status`
 * is the HTTP status when the registry answered one. Retriable only for
 * SCHEMA_REGISTRY_UNAVAILABLE: the record's own schema is not at fault then.
 */
export class SchemaRegistryError extends RouterError {
  readonly status: number | undefined;
  constructor(code: ErrorCode, message: string, options: RouterErrorOptions & { status?: number } = {}) {
    super(code, message, {
      retriable: options.retriable ?? code === ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE,
      stage: options.stage ?? 'decode',
      cause: options.cause,
    });
    this.status = options.status;
  }
}

export class EmbeddedKafkaError extends RouterError {
  constructor(message: string, options: CauseOnly = {}) {
    super(ErrorCodes.MOCK_CLUSTER_FAILED, message, { retriable: false, stage: 'embedded', cause: options.cause });
  }
}

export class DataFormatError extends RouterError {
  constructor(message: string, options: CauseOnly = {}) {
    super(ErrorCodes.DATA_FORMAT, message, { retriable: false, stage: 'eval', cause: options.cause });
  }
}

/** A broken invariant inside the router (a bug, not bad input); code INTERNAL, not retriable. */
export class InternalError extends RouterError {
  constructor(message: string, options: Pick<RouterErrorOptions, 'stage' | 'cause'> = {}) {
    super(ErrorCodes.INTERNAL, message, { retriable: false, stage: options.stage, cause: options.cause });
  }
}

/** Walks `cause` so a wrapped retriable failure is still seen as retriable. */
export function isRetriable(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (current instanceof RouterError) return current.retriable;
    if (typeof current === 'object' && 'retriable' in current && typeof (current as { retriable: unknown }).retriable === 'boolean') {
      return (current as { retriable: boolean }).retriable;
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return false;
}

export function errorCodeOf(err: unknown): ErrorCode {
  return err instanceof RouterError ? err.code : ErrorCodes.INTERNAL;
}

/** A message safe to put in a DLQ header or log: code and class only for unknown errors, since foreign messages may quote input. */
export function safeMessage(err: unknown): string {
  if (err instanceof RouterError) return err.message;
  return err instanceof Error ? `${err.name} (message withheld)` : 'unknown error';
}
