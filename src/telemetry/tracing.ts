import { context, propagation, SpanStatusCode, trace, type Span, type TextMapGetter, type TextMapSetter, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, TracerProvider, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace';
import type { RouterConfig } from '../config/schema.js';
import { ConfigError, RouterError } from '../errors.js';
import { ATTR_ERROR_TYPE, TRACER_NAME } from './attributes.js';
import { samplerFromEnv, telemetryIdentity, telemetryResource, type SamplerChoice, type TelemetryIdentity } from './otel-env.js';

export interface TracingOptions {
  /** Export here instead of OTLP (tests and the demo pass an InMemorySpanExporter); used even when `tracesExporter` is `none`. */
  exporter?: SpanExporter;
  /** With `exporter`: also export to what an explicit OTEL_TRACES_EXPORTER names (the demo keeps its in-memory copy for its summary). */
  alsoFromEnv?: boolean;
  /** `simple` exports each span as it ends (default with a caller's exporter); `batch` batches (default for OTLP). */
  processor?: 'simple' | 'batch';
  /** Environment to read OTEL_* from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Service name and resource attributes already resolved (run passes the ones its metrics use); default: resolved from config and `env`. */
  identity?: TelemetryIdentity;
}

export interface Tracing {
  /** True when a tracer provider was registered. */
  readonly enabled: boolean;
  /** Where spans go (`otlp`, `console`, `custom`), for the start-up log; empty when disabled. */
  readonly exporters?: readonly string[];
  /** The sampler in use (absent when disabled), for the start-up log. */
  readonly sampling?: Omit<SamplerChoice, 'sampler'>;
  /** Exports what is buffered without stopping. */
  forceFlush(): Promise<void>;
  /** Flushes, stops the provider and unregisters the global tracer, context manager and propagator. Safe to call twice. */
  shutdown(): Promise<void>;
}

const NOOP: Tracing = { enabled: false, exporters: [], forceFlush: async () => undefined, shutdown: async () => undefined };

export const TRACES_EXPORTERS = ['otlp', 'console', 'none'] as const;
export type TracesExporterName = (typeof TRACES_EXPORTERS)[number];

/**
 * OTEL_TRACES_EXPORTER (a comma-separated list of `otlp`, `console`, `none`,
 * as the OpenTelemetry environment spec defines it) wins over
 * telemetry.tracesExporter; `none` anywhere in the list means no export.
 * Unknown names are refused at start-up rather than silently ignored.
 */
export function traceExporterNames(config: RouterConfig['telemetry'], env: Record<string, string | undefined> = process.env): TracesExporterName[] {
  const raw = env.OTEL_TRACES_EXPORTER?.trim();
  const names =
    raw === undefined || raw === ''
      ? [config.tracesExporter]
      : raw
          .split(',')
          .map((n) => n.trim().toLowerCase())
          .filter((n) => n !== '');
  for (const n of names) {
    if (!(TRACES_EXPORTERS as readonly string[]).includes(n))
      throw new ConfigError('OTEL_TRACES_EXPORTER', `"${n}" is not one of ${TRACES_EXPORTERS.join(', ')}`);
  }
  const known = names as TracesExporterName[];
  return known.includes('none') ? [] : [...new Set(known)];
}

function traceExportersOf(config: RouterConfig['telemetry'], env: Record<string, string | undefined>): SpanExporter[] {
  return traceExporterNames(config, env).map((n) => (n === 'console' ? new ConsoleSpanExporter() : new OTLPTraceExporter()));
}

function exporterNames(exporters: readonly SpanExporter[]): string[] {
  return exporters.map((e) => (e instanceof ConsoleSpanExporter ? 'console' : e instanceof OTLPTraceExporter ? 'otlp' : 'custom'));
}

/**
 * Registers the global tracer provider: AsyncLocalStorage context, W3C trace
 * context propagation, the sampler of OTEL_TRACES_SAMPLER (default: parent-based
 * ratio, so a sampled producer trace is always followed; see otel-env.ts), the
 * resource of OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, and the OTLP/HTTP exporter (endpoint from
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, read by the
 * exporter itself; default http://localhost:4318/v1/traces) or the caller's.
 * OTEL_TRACES_EXPORTER (`otlp`, `console`, `none`, comma-separated) wins over
 * telemetry.tracesExporter. `none` (or OTEL_SDK_DISABLED=true) without a
 * caller's exporter registers nothing: the API stays a no-op.
 */
export function setupTracing(config: RouterConfig['telemetry'], options: TracingOptions = {}): Tracing {
  const env = options.env ?? process.env;
  const disabled = env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true';
  // A caller's exporter replaces the configured one; with `alsoFromEnv` an explicit OTEL_TRACES_EXPORTER adds its own (the demo).
  const fromEnv =
    options.alsoFromEnv === true && env.OTEL_TRACES_EXPORTER !== undefined && env.OTEL_TRACES_EXPORTER.trim() !== '' && !disabled
      ? traceExportersOf(config, env)
      : [];
  const exporters = options.exporter === undefined ? (disabled ? [] : traceExportersOf(config, env)) : [options.exporter, ...fromEnv];
  if (exporters.length === 0) return NOOP;

  const kind = options.processor ?? (options.exporter === undefined ? 'batch' : 'simple');
  // The console exporter prints as spans end; batching only delays it.
  const spanProcessors: SpanProcessor[] = exporters.map((exporter) =>
    kind === 'batch' && !(exporter instanceof ConsoleSpanExporter) ? new BatchSpanProcessor({ exporter }) : new SimpleSpanProcessor({ exporter }),
  );
  const { sampler, ...sampling } = samplerFromEnv(config, env);
  const provider = new TracerProvider({
    resource: telemetryResource(options.identity ?? telemetryIdentity(config, env)),
    sampler,
    spanProcessors,
  });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  // One registration per process: a previous one (a test that did not shut down) is replaced.
  trace.disable();
  context.disable();
  propagation.disable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);

  let stopping: Promise<void> | undefined;
  return {
    enabled: true,
    exporters: exporterNames(exporters),
    sampling,
    forceFlush: () => provider.forceFlush(),
    shutdown: () => {
      stopping ??= (async () => {
        try {
          await provider.forceFlush();
          await provider.shutdown();
        } finally {
          trace.disable();
          propagation.disable();
          context.disable();
        }
      })();
      return stopping;
    },
  };
}

/**
 * The pipeline's tracer, looked up per use: a tracer cached across a
 * re-registration (tests set up tracing more than once) would keep the old
 * provider.
 */
export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

/** The error.type of a failure: the RouterError code, else the class name. */
export function errorType(err: unknown): string {
  if (err instanceof RouterError) return err.code;
  if (err instanceof Error) return err.name || 'Error';
  return 'unknown';
}

/**
 * Marks a span failed: status ERROR (its description is the error type, never
 * a message), `error.type`, and an exception event. RouterError messages are
 * PHI-free by design and are kept; for any other error only the class name is
 * recorded, since a foreign message (a JSON parser's, a library's) may quote
 * the note.
 */
export function recordFailure(span: Span, err: unknown, type: string = errorType(err)): void {
  span.setAttribute(ATTR_ERROR_TYPE, type);
  span.setStatus({ code: SpanStatusCode.ERROR, message: type });
  if (err instanceof RouterError) span.recordException({ name: err.name, message: err.message });
  else span.recordException({ name: err instanceof Error ? err.name || 'Error' : 'unknown' });
}

/** Marks a span failed with a code only (no exception to record), e.g. a dead-lettered note. */
export function markFailed(span: Span, type: string): void {
  span.setAttribute(ATTR_ERROR_TYPE, type);
  span.setStatus({ code: SpanStatusCode.ERROR, message: type });
}

type KafkaHeaders = Record<string, string | Buffer | Array<string | Buffer> | undefined>;

/** Reads W3C trace context from kafkajs message headers (values arrive as Buffers). */
export const kafkaHeaderGetter: TextMapGetter<KafkaHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const v = carrier[key];
    if (v === undefined) return undefined;
    if (Array.isArray(v)) return v.map((x) => x.toString());
    return v.toString();
  },
};

/** Writes W3C trace context into outgoing kafkajs message headers. */
export const kafkaHeaderSetter: TextMapSetter<KafkaHeaders> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};
