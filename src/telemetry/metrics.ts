import { ValueType, type Attributes, type ObservableResult } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { hrTime } from '@opentelemetry/core';
import { emptyResource } from '@opentelemetry/resources';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import {
  AggregationTemporality,
  ConsoleMetricExporter,
  DataPointType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type CollectionResult,
  type DataPoint,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import { ConfigError } from '../errors.js';
import type { Route } from '../types.js';
import type { RoutingRecord } from '../route/record.js';
import type { PipelineHooks } from './hooks.js';
import { DEFAULT_SERVICE_NAME, SERVICE_VERSION, telemetryIdentity, telemetryResource } from './otel-env.js';
import { startRuntimeMetrics, type BuildInfo } from './runtime-metrics.js';

/**
 * Prometheus exposition names of every series this module exports (verified
 * by serializing a real collection; see test/unit/telemetry-config.test.ts).
 * Counters get `_total`; histograms expose `_bucket`, `_sum`, `_count`.
 * Every label is a low-cardinality code: never a note id, text or patient id.
 */
export const METRIC_SERIES = {
  /** counter {outcome="published"|"dead_lettered", policy} (policy "none" for dead-lettered records: no decision was published) */
  notes: 'bioner_notes_total',
  /** counter {} records fetched from the input topic */
  notesReceived: 'bioner_notes_received_total',
  /** counter {route="encoder"|"llm"|"encoder_fallback", policy} sentences, from the published decision record */
  sentences: 'bioner_sentences_total',
  /** counter {code, stage} DLQ records */
  dlq: 'bioner_dlq_total',
  /** histogram (ms) {route, ok="true"|"false"} one observation per tagger call */
  taggerDuration: 'bioner_tagger_duration_ms',
  /** histogram (ms) {policy} receipt to published record (`timings.total_ms`) */
  noteDuration: 'bioner_note_duration_ms',
  /** counter {policy} notes whose total_ms exceeded effective_budget_ms */
  budgetOverruns: 'bioner_budget_overruns_total',
  /** counter {code} LLM calls that fell back to the encoder (reason `llm_fallback:<CODE>`) */
  llmFallbacks: 'bioner_llm_fallbacks_total',
  /** histogram (ratio 0..1) {policy} sentences_llm / sentences per note */
  llmShare: 'bioner_route_llm_share',
  /** histogram (ms) {policy} effective_budget_ms per note */
  effectiveBudget: 'bioner_route_effective_budget_ms',
  /** counter {policy, sign="positive"|"negative"} sum of |estimated_gain| (expected F1 change); net = positive - negative */
  estimatedGain: 'bioner_route_estimated_gain_total',
  /** gauge {} LLM circuit breaker: 0 closed, 1 half-open, 2 open (absent when no LLM is configured) */
  circuitState: 'bioner_llm_circuit_state',
  /** gauge {} notes fetched and not yet finished */
  inFlight: 'bioner_notes_in_flight',
  /** gauge {} 1 while fetching is paused by the in-flight bound */
  paused: 'bioner_consumer_paused',
  /** gauge {topic, partition} records behind the high watermark, one series per partition this consumer owns (absent before its first batch; dropped when the partition is revoked) */
  consumerLag: 'bioner_consumer_lag',
  /** counter {outcome="propagated"|"skipped_no_key"} input tombstones (null values): propagated as a tombstone with the same key, or skipped (no key: nothing to delete) */
  tombstones: 'bioner_tombstones_total',
  /** counter {code} DLQ copies the broker refused with their value (too large), sent without it (header bioner.dlq.value.dropped.bytes) */
  dlqValueDropped: 'bioner_dlq_value_dropped_total',
  /** counter {code} input records (and the start-up registration) whose Schema Registry call failed: SCHEMA_REGISTRY_UNAVAILABLE (the partition waits), SCHEMA_NOT_FOUND (dead-lettered); at start-up also SCHEMA_INCOMPATIBLE */
  schemaRegistryErrors: 'bioner_schema_registry_errors_total',
  /** counter {policy, limit="sentence_share"|"tokens_per_minute"} notes whose LLM work routing.llmCap held back (reason `llm_cap:<limit>`) */
  llmCapped: 'bioner_llm_capped_total',
  /** gauge {limit} used fraction of each configured routing.llmCap limit over its sliding window (1 = at the cap; absent without a cap) */
  llmCapUsage: 'bioner_llm_cap_usage',
} as const;

/**
 * Observation points of the output side that PipelineHooks has no place for
 * (codes, counts and positions only, never keys or values). RouterService
 * calls them when its hooks object has them; `createRouterMetrics` does.
 */
export interface DeliveryHooks {
  /** An input tombstone: `propagated` when a tombstone with the same key was acknowledged on the output topic. */
  tombstone?(e: { topic: string; partition: number; offset: string; propagated: boolean }): void;
  /** A DLQ copy went out without its value (the broker refused it with the value). */
  dlqValueDropped?(e: { topic: string; partition: number; offset: string; code: string; bytes: number }): void;
  /** A Schema Registry call failed with this error code. */
  schemaRegistryFailed?(e: { code: string }): void;
}

/** Label values of `bioner_llm_circuit_state`. */
export const CIRCUIT_STATE_VALUES = { closed: 0, 'half-open': 1, open: 2 } as const;
export type CircuitStateLabel = keyof typeof CIRCUIT_STATE_VALUES;

/** Bucket bounds (ms) of the latency histograms: tagger calls and whole notes, up to the 5 s default budget and beyond. */
export const LATENCY_BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 750, 1000, 1500, 2500, 5000, 7500, 10000, 30000];
export const SHARE_BUCKETS = [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
export const BUDGET_BUCKETS_MS = [100, 250, 500, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 60000];

/** Where the observable gauges read from; each is optional and read at collection time. */
export interface MetricSources {
  circuitState?: () => CircuitStateLabel | undefined;
  inFlight?: () => number;
  paused?: () => boolean;
  /** One unlabelled total; null (no batch yet) reports nothing. Used only when consumerLagByPartition is not set. */
  consumerLag?: () => number | null;
  /** Lag per owned partition, keyed `topic/partition` (ConsumerLoop.lagByKey); each entry is one `{topic, partition}` series. */
  consumerLagByPartition?: () => ReadonlyMap<string, number>;
  /** The service version and loaded models, for bioner_build_info (runtime series only). */
  build?: () => BuildInfo;
  /** routing.llmCap's window (LlmCap.snapshot): the used fraction of each configured limit. */
  llmCap?: () => { usage: Partial<Record<LlmCapLimit, number>> };
}

/** Label values of `bioner_llm_cap_usage` and `bioner_llm_capped_total`. */
export const LLM_CAP_LIMITS = ['sentence_share', 'tokens_per_minute'] as const;
export type LlmCapLimit = (typeof LLM_CAP_LIMITS)[number];

export interface RouterMetricsOptions {
  /** As resolved by telemetryIdentity (pass its result so traces and metrics agree); default: resolved from process.env over `bioner-router`. */
  serviceName?: string;
  /** Extra resource attributes (service.version, deployment.environment, ...); never PHI. */
  resourceAttributes?: Attributes;
  /** Also export the runtime series (RUNTIME_SERIES: event loop, V8 heap and GC, RSS, build info); `run` and `demo` do. */
  runtime?: boolean;
  /** Where metrics go (metricsExporterNames: OTEL_METRICS_EXPORTER); default `prometheus` (the /metrics endpoint). */
  exporters?: readonly MetricsExporterName[];
}

export const METRICS_EXPORTERS = ['prometheus', 'otlp', 'console', 'none'] as const;
export type MetricsExporterName = (typeof METRICS_EXPORTERS)[number];

/**
 * OTEL_METRICS_EXPORTER (comma-separated `prometheus`, `otlp`, `console`,
 * `none`; default `prometheus`): `prometheus` is the pull endpoint /metrics;
 * `otlp` pushes OTLP/HTTP to OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT and
 * `console` prints, both every OTEL_METRIC_EXPORT_INTERVAL ms (default 60 s);
 * `none` anywhere means no export. Unknown names are refused at start-up.
 */
export function metricsExporterNames(env: Record<string, string | undefined> = process.env): MetricsExporterName[] {
  const raw = env.OTEL_METRICS_EXPORTER?.trim();
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return [];
  if (raw === undefined || raw === '') return ['prometheus'];
  const names = raw
    .split(',')
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== '');
  for (const n of names) {
    if (!(METRICS_EXPORTERS as readonly string[]).includes(n))
      throw new ConfigError('OTEL_METRICS_EXPORTER', `"${n}" is not one of ${METRICS_EXPORTERS.join(', ')}`);
  }
  const known = names as MetricsExporterName[];
  return known.includes('none') ? [] : [...new Set(known)];
}

/**
 * The runtime series (with `runtime: true`): OpenTelemetry's Node runtime
 * instrumentation names, as Prometheus exposes them, plus RSS and build info.
 */
export const RUNTIME_SERIES = {
  /** gauge (bytes) resident set size */
  rss: 'process_memory_usage',
  /** gauge {service_version, encoder_model, encoder_model_version, llm_model, llm_model_version} always 1 */
  buildInfo: 'bioner_build_info',
  /** gauge (ratio) event-loop utilisation */
  eventLoopUtilization: 'nodejs_eventloop_utilization',
  /** gauge (s) event-loop delay percentiles (p50, p90, p99, min, max, mean, stddev) */
  eventLoopDelayP99: 'nodejs_eventloop_delay_p99',
  /** gauge (bytes) {v8js_heap_space_name} V8 heap used */
  heapUsed: 'v8js_memory_heap_used',
  /** histogram (s) {v8js_gc_type} garbage-collection pauses */
  gcDuration: 'v8js_gc_duration',
} as const;

export interface RouterMetrics {
  hooks: PipelineHooks & DeliveryHooks;
  /** Sets (merges) the gauge sources; call again to replace one. */
  observe(sources: MetricSources): void;
  meterProvider: MeterProvider;
  /** False when OTEL_METRICS_EXPORTER leaves `prometheus` out: /metrics then answers 404. */
  servesPrometheus: boolean;
  /** Prometheus text exposition (format 0.0.4) of the current values. */
  collectPrometheus(): Promise<string>;
  shutdown(): Promise<void>;
}

/** Sources from a RouterService and, when present, an LLM tagger with an HTTP client. */
export function serviceSources(
  service: { stats: { inFlight: number; paused: boolean }; consumerLag(): number | null; consumerLagByPartition?(): ReadonlyMap<string, number> },
  llm?: { client?: { circuitState: CircuitStateLabel } | undefined } | undefined,
): MetricSources {
  const sources: MetricSources = {
    inFlight: () => service.stats.inFlight,
    paused: () => service.stats.paused,
  };
  if (service.consumerLagByPartition !== undefined) {
    const byPartition = service.consumerLagByPartition.bind(service);
    sources.consumerLagByPartition = () => byPartition();
  } else {
    sources.consumerLag = () => service.consumerLag();
  }
  if (llm?.client !== undefined) {
    const client = llm.client;
    sources.circuitState = () => client.circuitState;
  }
  return sources;
}

/** Codes come from our own enums; anything else is folded so a label can never carry free text. */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;
const TOKEN = /^[a-z][a-z0-9_-]{0,31}$/;
function code(value: string): string {
  return CODE.test(value) ? value : 'OTHER';
}
function token(value: string): string {
  return TOKEN.test(value) ? value : 'other';
}
// Kafka's own topic-name alphabet; anything else (never expected) is folded rather than exported.
const TOPIC = /^[a-zA-Z0-9._-]{1,249}$/;
const PARTITION = /^\d{1,6}$/;
/** `topic/partition` (ConsumerLoop's key) to labels; the topic cannot contain '/', so the last one splits. */
function partitionLabels(key: string): Attributes {
  const at = key.lastIndexOf('/');
  const topic = key.slice(0, Math.max(0, at));
  const partition = key.slice(at + 1);
  return { topic: TOPIC.test(topic) ? topic : 'other', partition: PARTITION.test(partition) ? partition : 'other' };
}
const ROUTES: readonly Route[] = ['encoder', 'llm', 'encoder_fallback'];
function route(value: string): string {
  return (ROUTES as readonly string[]).includes(value) ? value : 'other';
}

const LAG_SCOPE = { name: 'bioner-router' };
const LAG_DESCRIPTOR = {
  name: 'bioner.consumer.lag',
  description: 'Records behind the high watermark, per partition this consumer owns',
  unit: '',
  valueType: ValueType.INT,
};

/** `bioner_consumer_lag` built afresh at each collection from the current sources: only partitions owned now appear. */
function lagProducer(current: () => MetricSources): MetricProducer {
  return {
    async collect(): Promise<CollectionResult> {
      const s = current();
      const now = hrTime();
      const points: Array<DataPoint<number>> = [];
      if (s.consumerLagByPartition !== undefined) {
        for (const [key, value] of s.consumerLagByPartition()) points.push({ startTime: now, endTime: now, attributes: partitionLabels(key), value });
      } else {
        const total = s.consumerLag?.();
        if (total !== undefined && total !== null) points.push({ startTime: now, endTime: now, attributes: {}, value: total });
      }
      // The reader keeps only scopeMetrics from extra producers; the resource is the SDK's.
      return {
        resourceMetrics: {
          resource: emptyResource(),
          scopeMetrics:
            points.length === 0
              ? []
              : [
                  {
                    scope: LAG_SCOPE,
                    metrics: [
                      {
                        descriptor: LAG_DESCRIPTOR,
                        aggregationTemporality: AggregationTemporality.CUMULATIVE,
                        dataPointType: DataPointType.GAUGE,
                        dataPoints: points,
                      },
                    ],
                  },
                ],
        },
        errors: [],
      };
    },
  };
}

/** Failed LLM calls remembered per note until its record is published; bounded so dropped notes cannot grow it. */
const MAX_PENDING_FALLBACKS = 10_000;

export function createRouterMetrics(options: RouterMetricsOptions = {}): RouterMetrics {
  let sources: MetricSources = {};
  // The exporter is only a pull reader here: our telemetry server serves /metrics, so it never starts its own.
  // The lag gauge comes from its own producer: the SDK's cumulative storage keeps reporting the last value of
  // every attribute set an observable gauge ever saw, so a revoked partition's series would never go away.
  const reader = new PrometheusExporter({ preventServerStart: true, metricProducers: [lagProducer(() => sources)] });
  const exporters = options.exporters ?? ['prometheus'];
  // Push exporters (OTEL_METRICS_EXPORTER=otlp/console) read on a timer, with the same lag producer.
  const interval = Number(process.env.OTEL_METRIC_EXPORT_INTERVAL);
  const pushReaders = exporters
    .filter((e) => e !== 'prometheus')
    .map(
      (e) =>
        new PeriodicExportingMetricReader({
          exporter: e === 'otlp' ? new OTLPMetricExporter() : new ConsoleMetricExporter(),
          exportIntervalMillis: interval > 0 ? interval : 60_000,
          metricProducers: [lagProducer(() => sources)],
        }),
    );
  // A caller's serviceName is taken as already resolved; without one the OTEL_* env still wins over the default.
  const identity =
    options.serviceName === undefined ? telemetryIdentity({ serviceName: DEFAULT_SERVICE_NAME }) : { serviceName: options.serviceName, resourceAttributes: {} };
  const meterProvider = new MeterProvider({
    resource: telemetryResource({
      serviceName: identity.serviceName,
      resourceAttributes: { ...identity.resourceAttributes, ...(options.resourceAttributes ?? {}) },
    }),
    readers: [...(exporters.includes('prometheus') ? [reader] : []), ...pushReaders],
  });
  const serializer = new PrometheusSerializer();
  const meter = meterProvider.getMeter('bioner-router');
  const runtime =
    options.runtime === true ? startRuntimeMetrics(meterProvider, meter, () => sources.build?.() ?? { serviceVersion: SERVICE_VERSION }) : undefined;

  const notes = meter.createCounter('bioner.notes', { description: 'Input records finished, by outcome and routing policy' });
  const received = meter.createCounter('bioner.notes.received', { description: 'Input records fetched from Kafka' });
  const sentences = meter.createCounter('bioner.sentences', { description: 'Sentences tagged, by route (from the decision record)' });
  const dlq = meter.createCounter('bioner.dlq', { description: 'Dead-letter records, by error code and stage' });
  const taggerDuration = meter.createHistogram('bioner.tagger.duration_ms', {
    description: 'Tagger call wall time in ms, by route',
    unit: 'ms',
    advice: { explicitBucketBoundaries: LATENCY_BUCKETS_MS },
  });
  const noteDuration = meter.createHistogram('bioner.note.duration_ms', {
    description: 'Note latency from receipt to published record in ms, by policy',
    unit: 'ms',
    advice: { explicitBucketBoundaries: LATENCY_BUCKETS_MS },
  });
  const overruns = meter.createCounter('bioner.budget.overruns', { description: 'Notes whose total time exceeded their effective budget, by policy' });
  const fallbacks = meter.createCounter('bioner.llm.fallbacks', { description: 'LLM calls that fell back to the encoder, by error code' });
  const llmShare = meter.createHistogram('bioner.route.llm_share', {
    description: "Share of a note's sentences tagged by the LLM, by policy",
    advice: { explicitBucketBoundaries: SHARE_BUCKETS },
  });
  const effectiveBudget = meter.createHistogram('bioner.route.effective_budget_ms', {
    description: 'Effective (load-shed) budget per note in ms, by policy',
    unit: 'ms',
    advice: { explicitBucketBoundaries: BUDGET_BUCKETS_MS },
  });
  const gain = meter.createCounter('bioner.route.estimated_gain', {
    description: 'Sum of |estimated_gain| (expected F1 change) of published notes, by policy and sign',
  });
  const circuit = meter.createObservableGauge('bioner.llm.circuit_state', { description: 'LLM circuit breaker: 0 closed, 1 half-open, 2 open' });
  const inFlight = meter.createObservableGauge('bioner.notes.in_flight', { description: 'Notes fetched and not yet finished' });
  const paused = meter.createObservableGauge('bioner.consumer.paused', { description: '1 while fetching is paused by processing.maxInFlight' });
  const tombstones = meter.createCounter('bioner.tombstones', {
    description: 'Input tombstones (null values), by outcome: propagated to the output topic, or skipped without a key',
  });
  const dlqValueDropped = meter.createCounter('bioner.dlq.value_dropped', {
    description: 'DLQ copies sent without their value because the broker refused them with it, by error code',
  });
  const registryErrors = meter.createCounter('bioner.schema_registry.errors', { description: 'Failed Schema Registry calls, by error code' });
  const capped = meter.createCounter('bioner.llm.capped', { description: 'Notes whose LLM work the LLM cap (routing.llmCap) held back, by policy and limit' });
  const capUsage = meter.createObservableGauge('bioner.llm.cap_usage', {
    description: 'Used fraction of each routing.llmCap limit over its sliding window (1 = at the cap)',
  });

  let lastInFlight: { inFlight: number; paused: boolean } | undefined;
  circuit.addCallback((r: ObservableResult) => {
    const state = sources.circuitState?.();
    if (state !== undefined) r.observe(CIRCUIT_STATE_VALUES[state]);
  });
  capUsage.addCallback((r: ObservableResult) => {
    const usage = sources.llmCap?.().usage;
    if (usage === undefined) return;
    for (const limit of LLM_CAP_LIMITS) {
      const v = usage[limit];
      if (v !== undefined && Number.isFinite(v)) r.observe(v, { limit });
    }
  });
  inFlight.addCallback((r: ObservableResult) => {
    const v = sources.inFlight?.() ?? lastInFlight?.inFlight;
    if (v !== undefined) r.observe(v);
  });
  paused.addCallback((r: ObservableResult) => {
    const v = sources.paused?.() ?? lastInFlight?.paused;
    if (v !== undefined) r.observe(v ? 1 : 0);
  });

  // noteId is only a transient in-memory key (never a label): it ties a failed LLM call to its note's record.
  const pendingFallbacks = new Map<string, number>();

  const recordRouting = (routing: RoutingRecord, totalMs: number, fallbackSentences: number): void => {
    const policy = token(routing.policy);
    const fallback = Math.min(fallbackSentences, routing.sentencesEncoder);
    const counts: Record<Route, number> = { encoder: routing.sentencesEncoder - fallback, llm: routing.sentencesLlm, encoder_fallback: fallback };
    for (const r of ROUTES) if (counts[r] > 0) sentences.add(counts[r], { route: r, policy });
    noteDuration.record(Math.max(0, totalMs), { policy });
    if (routing.effectiveBudgetMs > 0) {
      effectiveBudget.record(routing.effectiveBudgetMs, { policy });
      if (totalMs > routing.effectiveBudgetMs) overruns.add(1, { policy });
    }
    if (routing.sentences > 0) llmShare.record(Math.min(1, Math.max(0, routing.sentencesLlm / routing.sentences)), { policy });
    if (Number.isFinite(routing.estimatedGain) && routing.estimatedGain !== 0) {
      gain.add(Math.abs(routing.estimatedGain), { policy, sign: routing.estimatedGain > 0 ? 'positive' : 'negative' });
    }
    for (const reason of routing.reasons) {
      if (reason.startsWith('llm_fallback:')) fallbacks.add(1, { code: code(reason.slice('llm_fallback:'.length)) });
      if (reason.startsWith('llm_cap:')) capped.add(1, { policy, limit: token(reason.slice('llm_cap:'.length)) });
    }
  };

  const hooks: PipelineHooks & DeliveryHooks = {
    noteReceived() {
      received.add(1);
    },
    routeDecided(e) {
      // A new attempt at the note (a retry) starts its fallback count afresh.
      pendingFallbacks.delete(e.noteId);
    },
    taggerCalled(e) {
      taggerDuration.record(Math.max(0, e.ms), { route: route(e.route), ok: e.ok ? 'true' : 'false' });
      if (e.route === 'llm' && !e.ok) {
        if (pendingFallbacks.size >= MAX_PENDING_FALLBACKS) {
          const oldest = pendingFallbacks.keys().next();
          if (oldest.done !== true) pendingFallbacks.delete(oldest.value);
        }
        pendingFallbacks.set(e.noteId, (pendingFallbacks.get(e.noteId) ?? 0) + e.sentences);
      }
    },
    notePublished(e) {
      const fallback = pendingFallbacks.get(e.noteId) ?? 0;
      pendingFallbacks.delete(e.noteId);
      notes.add(1, { outcome: 'published', policy: token(e.routing.policy) });
      recordRouting(e.routing, e.totalMs, fallback);
    },
    noteDeadLettered(e) {
      notes.add(1, { outcome: 'dead_lettered', policy: 'none' });
      dlq.add(1, { code: code(e.code), stage: token(e.stage) });
    },
    inFlightChanged(e) {
      lastInFlight = { inFlight: e.inFlight, paused: e.paused };
    },
    tombstone(e) {
      tombstones.add(1, { outcome: e.propagated ? 'propagated' : 'skipped_no_key' });
    },
    dlqValueDropped(e) {
      dlqValueDropped.add(1, { code: code(e.code) });
    },
    schemaRegistryFailed(e) {
      registryErrors.add(1, { code: code(e.code) });
    },
  };

  return {
    hooks,
    observe(next) {
      sources = { ...sources, ...next };
    },
    meterProvider,
    servesPrometheus: exporters.includes('prometheus'),
    async collectPrometheus() {
      const { resourceMetrics } = await reader.collect();
      return serializer.serialize(resourceMetrics);
    },
    async shutdown() {
      pendingFallbacks.clear();
      runtime?.stop();
      await meterProvider.shutdown();
    },
  };
}
