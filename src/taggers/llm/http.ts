import { readFile } from 'node:fs/promises';
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  circuitBreaker,
  halfJitterGenerator,
  handleWhen,
  retry,
  type CircuitBreakerPolicy,
  type RetryPolicy,
} from 'cockatiel';
import pLimit, { type LimitFunction } from 'p-limit';
import { ConfigError, ErrorCodes, LlmError, RouterError, isRetriable } from '../../errors.js';
import { SpanKind } from '@opentelemetry/api';
import { HttpAttr, LlmClientAttr } from '../../telemetry/attributes.js';
import { silentLogger, type Logger } from '../../telemetry/logger.js';
import { recordFailure, tracer } from '../../telemetry/tracing.js';
import { abortError } from '../batch-queue.js';

export interface LlmClientOptions {
  /** Server root, e.g. http://127.0.0.1:8000 (paths such as /v1/chat/completions and /pooling are appended). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <key>`; never logged. */
  apiKey?: string;
  /** Per-request limit, from sending the request to the last byte of the answer. */
  timeoutMs: number;
  /** Requests in flight at once; more wait their turn (the timeout starts when a request is sent). */
  maxConcurrency: number;
  /** Extra attempts for retriable failures (timeouts, 429, 5xx, refused/reset connections). */
  retries: number;
  /** First backoff delay; each retry waits up to twice as long as the one before (half jitter). */
  retryBackoffMs: number;
  circuit: {
    /** Consecutive failed requests (after which requests fail fast with CIRCUIT_OPEN). */
    failureThreshold: number;
    /** How long the circuit stays open before one trial request is let through (half-open). */
    resetTimeoutMs: number;
  };
  logger?: Logger;
}

export type CircuitStateName = 'closed' | 'open' | 'half-open';

/** Counters for telemetry and tests; they never hold request content. */
export interface LlmClientStats {
  /** HTTP requests actually sent. */
  requests: number;
  retries: number;
  /** Requests that failed in a way that counts for the circuit breaker. */
  failures: number;
  /** Calls refused at once because the circuit was open. */
  rejectedOpen: number;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** The errno-style code somewhere in a fetch failure's cause chain (undici wraps it, sometimes in an AggregateError). */
export function networkErrorCode(err: unknown): string | undefined {
  const seen = new Set<unknown>();
  const queue: unknown[] = [err];
  while (queue.length > 0) {
    const e = queue.shift();
    if (e === null || typeof e !== 'object' || seen.has(e)) continue;
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
    queue.push((e as { cause?: unknown }).cause);
    if (e instanceof AggregateError) queue.push(...e.errors);
  }
  return undefined;
}

/** Failures that say the server is unwell: they count for the breaker and are retried. */
function isServerFailure(err: unknown): boolean {
  return err instanceof RouterError && err.code !== ErrorCodes.CIRCUIT_OPEN && err.code !== ErrorCodes.LLM_BUDGET_EXCEEDED && isRetriable(err);
}

export async function readApiKey(file: string | undefined, field = 'llm.apiKeyFile'): Promise<string | undefined> {
  if (file === undefined) return undefined;
  let key: string;
  try {
    key = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new ConfigError(field, `cannot read the API key file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (key === '' || /\s/.test(key)) throw new ConfigError(field, 'the API key file must hold one key on one line');
  return key;
}

/**
 * JSON over HTTP to an LLM server with Node's fetch (undici): a timeout per
 * request, at most `maxConcurrency` requests in flight, retries with
 * exponential backoff for retriable failures only, and a circuit breaker
 * (cockatiel's ConsecutiveBreaker) that opens after `failureThreshold`
 * consecutive failed requests, refuses calls without a request while open, and
 * lets one trial request through after `resetTimeoutMs` (half-open): its
 * success closes the circuit, its failure opens it again.
 *
 * Error messages name the method, path, status and error code, never request
 * or response bodies (they carry note text).
 */
export class LlmHttpClient {
  readonly stats: LlmClientStats = { requests: 0, retries: 0, failures: 0, rejectedOpen: 0 };
  private readonly baseUrl: string;
  private readonly limit: LimitFunction;
  private readonly breaker: CircuitBreakerPolicy;
  private readonly retryPolicy: RetryPolicy;
  private readonly logger: Logger;

  constructor(private readonly options: LlmClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.limit = pLimit(options.maxConcurrency);
    this.logger = options.logger ?? silentLogger;
    this.breaker = circuitBreaker(handleWhen(isServerFailure), {
      halfOpenAfter: options.circuit.resetTimeoutMs,
      breaker: new ConsecutiveBreaker(options.circuit.failureThreshold),
    });
    this.breaker.onStateChange((state) => this.logger.warn('llm circuit state changed', { state: stateName(state), baseUrlHost: safeHost(this.baseUrl) }));
    this.retryPolicy = retry(handleWhen(isServerFailure), {
      maxAttempts: options.retries,
      backoff: new ExponentialBackoff({
        initialDelay: options.retryBackoffMs,
        maxDelay: Math.max(options.retryBackoffMs, 1) * 32,
        generator: halfJitterGenerator,
      }),
    });
    this.retryPolicy.onRetry((e) => {
      this.stats.retries++;
      this.logger.debug('llm request retried', { attempt: e.attempt, delayMs: Math.round(e.delay), code: 'error' in e ? errorCode(e.error) : 'result' });
    });
  }

  get circuitState(): CircuitStateName {
    return stateName(this.breaker.state);
  }

  get url(): string {
    return this.baseUrl;
  }

  postJson(path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.call('POST', path, body, signal);
  }

  getJson(path: string, signal?: AbortSignal): Promise<unknown> {
    return this.call('GET', path, undefined, signal);
  }

  private async call(method: 'GET' | 'POST', path: string, body: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    if (signal?.aborted === true) throw abortError(signal);
    // cockatiel passes the number of attempts made so far (0 for the first).
    return this.retryPolicy.execute(async ({ attempt }) => {
      if (signal?.aborted === true) throw abortError(signal);
      try {
        return await this.breaker.execute(() => this.limit(() => this.tracedAttempt(method, path, body, signal, attempt)));
      } catch (err) {
        if (err instanceof BrokenCircuitError) {
          this.stats.rejectedOpen++;
          throw new LlmError(
            ErrorCodes.CIRCUIT_OPEN,
            `LLM circuit is open after ${this.options.circuit.failureThreshold} consecutive failures; next trial after ${this.options.circuit.resetTimeoutMs} ms`,
            { retriable: true, cause: err },
          );
        }
        throw err;
      }
    }, signal);
  }

  /**
   * One request inside a CLIENT span `<METHOD> <path>` (HTTP semantic
   * conventions: method, server address and port, url without credentials or
   * query, status code, resend count), plus the circuit state it was sent in.
   * Bodies never go on the span: they carry note text.
   */
  private tracedAttempt(method: 'GET' | 'POST', path: string, body: unknown, signal: AbortSignal | undefined, resends: number): Promise<unknown> {
    const url = new URL(this.baseUrl + path);
    const span = tracer().startSpan(`${method} ${path}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        [HttpAttr.REQUEST_METHOD]: method,
        [HttpAttr.URL_FULL]: `${url.protocol}//${url.host}${url.pathname}`,
        [HttpAttr.SERVER_ADDRESS]: url.hostname,
        [HttpAttr.SERVER_PORT]: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
        [HttpAttr.RESEND_COUNT]: resends,
        [LlmClientAttr.CIRCUIT_STATE]: this.circuitState,
      },
    });
    return this.attempt(method, path, body, signal, (status) => span.setAttribute(HttpAttr.RESPONSE_STATUS_CODE, status)).then(
      (value) => {
        span.end();
        return value;
      },
      (err: unknown) => {
        recordFailure(span, err);
        span.end();
        throw err;
      },
    );
  }

  private async attempt(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    onStatus: (status: number) => void = () => undefined,
  ): Promise<unknown> {
    if (signal?.aborted === true) throw abortError(signal);
    // The circuit may have opened while this request waited for a slot.
    if (this.breaker.state === CircuitState.Open) throw new BrokenCircuitError();
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.options.timeoutMs);
    const onAbort = (): void => controller.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.apiKey !== undefined) headers.authorization = `Bearer ${this.options.apiKey}`;
    this.stats.requests++;
    try {
      const res = await fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal });
      onStatus(res.status);
      const text = await res.text();
      if (!res.ok) {
        const retriable = res.status === 429 || res.status >= 500;
        throw new LlmError(ErrorCodes.LLM_HTTP_ERROR, `${method} ${path} answered HTTP ${res.status}`, { retriable, status: res.status });
      }
      try {
        return JSON.parse(text) as unknown;
      } catch (err) {
        throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `${method} ${path} answered ${text.length} characters that are not JSON`, {
          status: res.status,
          cause: err,
        });
      }
    } catch (err) {
      const failure = this.classify(err, method, path, timedOut, signal);
      if (isServerFailure(failure)) this.stats.failures++;
      throw failure;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private classify(err: unknown, method: string, path: string, timedOut: boolean, signal: AbortSignal | undefined): RouterError {
    if (err instanceof RouterError) return err;
    if (signal?.aborted === true) return abortError(signal);
    if (timedOut)
      return new LlmError(ErrorCodes.LLM_TIMEOUT, `${method} ${path} took longer than ${this.options.timeoutMs} ms (llm.timeoutMs)`, {
        retriable: true,
        cause: err,
      });
    const code = networkErrorCode(err);
    return new LlmError(
      ErrorCodes.LLM_UNAVAILABLE,
      `${method} ${path} could not reach the LLM server: ${code ?? (err instanceof Error ? err.name : 'network error')}`,
      { retriable: true, cause: err },
    );
  }
}

function stateName(state: CircuitState): CircuitStateName {
  if (state === CircuitState.Closed) return 'closed';
  if (state === CircuitState.HalfOpen) return 'half-open';
  return 'open';
}

function errorCode(err: unknown): string {
  return err instanceof RouterError ? err.code : 'INTERNAL';
}

/** Host and port only: a base URL may carry credentials in its userinfo. */
function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '?';
  }
}
