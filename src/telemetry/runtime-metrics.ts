import type { Meter, ObservableResult } from '@opentelemetry/api';
import { RuntimeNodeInstrumentation } from '@opentelemetry/instrumentation-runtime-node';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';

/** What the router runs: the build-info series carries it (no PHI: names and versions only). */
export interface BuildInfo {
  serviceVersion: string;
  encoderModel?: { id: string; version: string };
  llmModel?: { id: string; version?: string };
}

/**
 * Runtime metrics beside the pipeline's: OpenTelemetry's Node runtime
 * instrumentation (event-loop delay percentiles and utilisation, V8 heap and
 * heap spaces, GC durations by kind), the process's resident set size, and a
 * `bioner_build_info` gauge (1) whose labels name the service version and the
 * loaded models, so dashboards can break figures down by release and model.
 */
export function startRuntimeMetrics(meterProvider: MeterProvider, meter: Meter, info: () => BuildInfo): { stop(): void } {
  const runtime = new RuntimeNodeInstrumentation({ monitoringPrecision: 100 });
  runtime.setMeterProvider(meterProvider);
  runtime.enable();
  const rss = meter.createObservableGauge('process.memory.usage', { description: 'Resident set size of the router process', unit: 'By' });
  rss.addCallback((r: ObservableResult) => r.observe(process.memoryUsage.rss()));
  const build = meter.createObservableGauge('bioner.build.info', {
    description: 'Always 1; labels name the service version and the loaded encoder and LLM models',
  });
  build.addCallback((r: ObservableResult) => {
    const i = info();
    r.observe(1, {
      service_version: i.serviceVersion,
      encoder_model: i.encoderModel?.id ?? '',
      encoder_model_version: i.encoderModel?.version ?? '',
      llm_model: i.llmModel?.id ?? '',
      llm_model_version: i.llmModel?.version ?? '',
    });
  });
  return { stop: () => runtime.disable() };
}
