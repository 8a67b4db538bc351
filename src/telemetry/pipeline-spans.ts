import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Span } from '@opentelemetry/api';
import { hrTime } from '@opentelemetry/core';
import type { RecordHeaders } from '../kafka/types.js';
import type { RoutingRecord } from '../route/record.js';
import type { Route } from '../types.js';
import { BionerAttr, MESSAGING_SYSTEM_KAFKA, MessagingAttr } from './attributes.js';
import { errorType, kafkaHeaderGetter, kafkaHeaderSetter, recordFailure, tracer } from './tracing.js';

/**
 * Every span the pipeline opens, in one place: `process <topic>` per consumed
 * record (CONSUMER, parented on the producer's trace context in the headers),
 * `text`, `route <policy>` with its `tag <route>` children, and `send <topic>`
 * per produced record (PRODUCER). Attributes carry ids, counts and timings,
 * never text.
 */

/**
 * Start and end times from one sub-millisecond clock (performance.timeOrigin + now). Left to itself the SDK
 * anchors each span's start on Date.now(), whole milliseconds, so a span that starts right after another ends
 * could appear to start before it.
 */
const at = (): { startTime: ReturnType<typeof hrTime> } => ({ startTime: hrTime() });

/** Runs `fn` inside a span that is marked failed (and rethrown) if `fn` throws, and always ended. */
async function inSpan<T>(span: Span, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    recordFailure(span, err);
    throw err;
  } finally {
    span.end(hrTime());
  }
}

export interface ConsumedRecordInfo {
  topic: string;
  partition: number;
  offset: string;
  headers: RecordHeaders;
  bytes: number;
}

/** The broker a messaging span talks to (`server.address` / `server.port`): the first bootstrap server, as kafkajs does not say which broker served a record. */
export interface BrokerAddress {
  address: string;
  port: number;
}

/** host:port of a bootstrap server string (IPv6 in brackets allowed); undefined when it does not parse. */
export function brokerAddress(bootstrap: string | undefined): BrokerAddress | undefined {
  const m = bootstrap === undefined ? null : /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(bootstrap.trim());
  return m === null ? undefined : { address: m[1], port: Number(m[2]) };
}

function serverAttributes(server: BrokerAddress | undefined): Record<string, string | number> {
  return server === undefined ? {} : { [MessagingAttr.SERVER_ADDRESS]: server.address, [MessagingAttr.SERVER_PORT]: server.port };
}

/** The CONSUMER span of one record; the record's W3C trace context (if any) is its parent, and it is active inside `fn`. */
export function withProcessSpan<T>(record: ConsumedRecordInfo, groupId: string, fn: (span: Span) => Promise<T>, server?: BrokerAddress): Promise<T> {
  const parent = propagation.extract(ROOT_CONTEXT, record.headers, kafkaHeaderGetter);
  const span = tracer().startSpan(
    `process ${record.topic}`,
    {
      ...at(),
      kind: SpanKind.CONSUMER,
      attributes: {
        [MessagingAttr.SYSTEM]: MESSAGING_SYSTEM_KAFKA,
        [MessagingAttr.DESTINATION_NAME]: record.topic,
        [MessagingAttr.DESTINATION_PARTITION_ID]: String(record.partition),
        [MessagingAttr.KAFKA_OFFSET]: Number(record.offset),
        [MessagingAttr.OPERATION_TYPE]: 'process',
        [MessagingAttr.OPERATION_NAME]: 'process',
        [MessagingAttr.CONSUMER_GROUP_NAME]: groupId,
        [MessagingAttr.MESSAGE_BODY_SIZE]: record.bytes,
        ...serverAttributes(server),
      },
    },
    parent,
  );
  return context.with(trace.setSpan(parent, span), () => inSpan(span, () => fn(span)));
}

/**
 * The PRODUCER span `send <topic>` around one send. With `propagate`, the
 * span's trace context goes into a copy of the headers (`traceparent`) that
 * `fn` sends, so downstream consumers continue the trace; DLQ records keep the
 * original headers untouched instead.
 */
export function withSendSpan<T>(
  topic: string,
  clientId: string,
  bytes: number,
  headers: RecordHeaders | undefined,
  propagate: boolean,
  fn: (headers: RecordHeaders | undefined) => Promise<T>,
  server?: BrokerAddress,
): Promise<T> {
  const span = tracer().startSpan(`send ${topic}`, {
    ...at(),
    kind: SpanKind.PRODUCER,
    attributes: {
      [MessagingAttr.SYSTEM]: MESSAGING_SYSTEM_KAFKA,
      [MessagingAttr.DESTINATION_NAME]: topic,
      [MessagingAttr.OPERATION_TYPE]: 'send',
      [MessagingAttr.OPERATION_NAME]: 'send',
      [MessagingAttr.CLIENT_ID]: clientId,
      [MessagingAttr.MESSAGE_BODY_SIZE]: bytes,
      ...serverAttributes(server),
    },
  });
  let outgoing = headers;
  if (propagate) {
    outgoing = { ...(headers ?? {}) };
    propagation.inject(trace.setSpan(context.active(), span), outgoing, kafkaHeaderSetter);
  }
  return inSpan(span, () => fn(outgoing));
}

/** The `text` span: normalise, split, tokenise. */
export function withTextSpan<T extends { sentences: ReadonlyArray<{ tokens: readonly unknown[] }> }>(noteId: string, chars: number, fn: () => T): T {
  return tracer().startActiveSpan('text', at(), (span) => {
    try {
      const out = fn();
      span.setAttributes({
        [BionerAttr.NOTE_ID]: noteId,
        [BionerAttr.NOTE_CHARS]: chars,
        [BionerAttr.TEXT_SENTENCES]: out.sentences.length,
        [BionerAttr.TEXT_WORDS]: out.sentences.reduce((n, s) => n + s.tokens.length, 0),
      });
      return out;
    } catch (err) {
      recordFailure(span, err);
      throw err;
    } finally {
      span.end(hrTime());
    }
  });
}

/** One `route <policy>` span covers the decision and the tagger calls it led to (their `tag <route>` spans are its children). */
export function withRouteSpan<T>(policy: string, noteId: string, cascade: boolean, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(`route ${policy}`, at(), (span) => {
    span.setAttributes({ [BionerAttr.NOTE_ID]: noteId, [BionerAttr.ROUTE_POLICY]: policy, [BionerAttr.ROUTE_CASCADE]: cascade });
    return inSpan(span, () => fn(span));
  });
}

/** The decision attributes of a `route <policy>` span, once the note is tagged. */
export function describeRoute(
  span: Span,
  routing: RoutingRecord,
  fallbackSentences: number,
  plannedLlmSentences: number,
  decisionMs: number,
  fallback: boolean,
): void {
  const chosen = plannedLlmSentences === 0 ? 'encoder' : plannedLlmSentences >= routing.sentences ? 'llm' : 'mixed';
  span.setAttributes({
    [BionerAttr.ROUTE_GRANULARITY]: routing.granularity,
    [BionerAttr.ROUTE_BUDGET_MS]: routing.budgetMs,
    [BionerAttr.ROUTE_EFFECTIVE_BUDGET_MS]: routing.effectiveBudgetMs,
    [BionerAttr.ROUTE_BUDGET_SOURCE]: routing.budgetSource,
    [BionerAttr.ROUTE_LOAD_FACTOR]: routing.loadFactor,
    [BionerAttr.ROUTE_PREDICTED_ENCODER_MS]: routing.predictedEncoderMs,
    [BionerAttr.ROUTE_PREDICTED_LLM_MS]: routing.predictedLlmMs,
    [BionerAttr.ROUTE_SENTENCES]: routing.sentences,
    [BionerAttr.ROUTE_SENTENCES_LLM]: routing.sentencesLlm,
    [BionerAttr.ROUTE_SENTENCES_ENCODER]: routing.sentencesEncoder - fallbackSentences,
    [BionerAttr.ROUTE_SENTENCES_FALLBACK]: fallbackSentences,
    [BionerAttr.ROUTE_ESTIMATED_GAIN]: routing.estimatedGain,
    [BionerAttr.ROUTE_REASONS]: [...routing.reasons],
    [BionerAttr.ROUTE_DECISION_MS]: decisionMs,
    [BionerAttr.ROUTE_FALLBACK]: fallback,
    [BionerAttr.ROUTE_SENTENCES_PLANNED_LLM]: plannedLlmSentences,
    [BionerAttr.ROUTE_CHOSEN]: chosen,
  });
}

/** An LLM call that failed and fell back: the route span says so, with the failure's type. */
export function markRouteFallback(span: Span, failure: unknown): void {
  span.setAttributes({ [BionerAttr.ROUTE_FALLBACK]: true, [BionerAttr.ROUTE_FALLBACK_CODE]: errorType(failure) });
}

export interface TaggerCall {
  route: Route;
  sentences: number;
  words: number;
  model: string | undefined;
}

/**
 * A `tag <route>` span around one tagger call. `fn` returns whether the call
 * succeeded (an LLM failure that falls back is returned, not thrown, and passed
 * as `failure` to be recorded on the span); a throw marks the span failed too.
 */
export function withTaggerSpan<T>(
  call: TaggerCall,
  now: () => number,
  fn: () => Promise<{ value: T; failure?: unknown }>,
): Promise<{ value: T; failure?: unknown; ms: number }> {
  return tracer().startActiveSpan(`tag ${call.route}`, at(), async (span) => {
    span.setAttributes({ [BionerAttr.TAGGER_ROUTE]: call.route, [BionerAttr.TAGGER_SENTENCES]: call.sentences, [BionerAttr.TAGGER_WORDS]: call.words });
    if (call.model !== undefined) span.setAttribute(BionerAttr.TAGGER_MODEL, call.model);
    const start = now();
    let ok = false;
    try {
      const out = await fn();
      ok = out.failure === undefined;
      if (!ok) recordFailure(span, out.failure);
      return { ...out, ms: now() - start };
    } catch (err) {
      recordFailure(span, err);
      throw err;
    } finally {
      span.setAttributes({ [BionerAttr.TAGGER_MS]: now() - start, [BionerAttr.TAGGER_OK]: ok });
      span.end(hrTime());
    }
  });
}
