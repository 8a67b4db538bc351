import { constants } from 'node:os';
import { loadConfig } from '../config/load.js';
import { schemaRegistryOptions } from '../ingest/schema-registry.js';
import { kafkaSecurityOptions } from '../kafka/security.js';
import type { RouterService } from '../pipeline/service.js';
import { createLogger } from '../telemetry/logger.js';
import { createRouterMetrics, metricsExporterNames, serviceSources } from '../telemetry/metrics.js';
import { SERVICE_VERSION, telemetryIdentity } from '../telemetry/otel-env.js';
import { routerReadiness, startTelemetryServer, type Readiness } from '../telemetry/server.js';
import { setupTracing } from '../telemetry/tracing.js';
import { composeRouter } from '../pipeline/compose.js';

/** `bioner-router run --config FILE`: the long-running consumer. */
export async function runCommand(configFile: string | undefined): Promise<void> {
  const config = await loadConfig(configFile);
  // Certificates and SASL credentials are read once, here, so a missing secret fails before anything starts.
  const kafkaSecurity = await kafkaSecurityOptions(config.kafka);
  // The same for the Schema Registry's credential and CA files (the service reads them again when it starts, after the models load).
  await schemaRegistryOptions(config.schemaRegistry);
  const logger = createLogger(config.logging.level);
  if (configFile === undefined) logger.info('no --config file: using defaults and BIONER_* environment overrides');
  // Resolved once (OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES over the config) so traces and metrics name the same service.
  const identity = telemetryIdentity(config.telemetry);
  if (identity.resourceAttributesIgnored === true)
    logger.warn('OTEL_RESOURCE_ATTRIBUTES is malformed and was ignored (expected key=value pairs, comma-separated, percent-encoded)');
  // Before anything that may create spans; flushed and stopped last on exit.
  const tracing = setupTracing(config.telemetry, { identity });
  const sampling = tracing.sampling;
  if (sampling?.ignored !== undefined) logger.warn('unsupported OTEL_TRACES_SAMPLER ignored', { sampler: sampling.ignored, using: sampling.name });
  logger.info('tracing', {
    enabled: tracing.enabled,
    exporters: tracing.exporters?.join(',') ?? 'none',
    serviceName: identity.serviceName,
    sampler: sampling?.name,
    sampleRatio: sampling?.ratio,
  });
  const metricsExporters = metricsExporterNames();
  logger.info('metrics', { exporters: metricsExporters.join(',') || 'none' });
  const metrics = createRouterMetrics({ ...identity, runtime: true, exporters: metricsExporters });
  // The server starts before the models load, so /healthz answers at once and /readyz says what is missing.
  let service: RouterService | undefined;
  let modelsLoaded = false;
  const ready = (): Readiness =>
    service === undefined ? { ok: false, checks: { kafka: false, models: modelsLoaded } } : routerReadiness(service, () => modelsLoaded)();
  // /startupz (the startup probe) turns 200 once the models are loaded, whatever Kafka is doing.
  const server =
    config.telemetry.port === -1
      ? undefined
      : await startTelemetryServer({ port: config.telemetry.port, host: config.telemetry.host, metrics, ready, started: () => modelsLoaded });
  if (server !== undefined) logger.info('telemetry server listening', { url: server.url, paths: '/metrics /healthz /startupz /readyz' });
  const parts = await composeRouter(config, {
    logger,
    hooks: metrics.hooks,
    kafkaSecurity,
    onLoaded: (part, detail) => logger.info(part === 'encoder' ? 'encoder loaded' : part === 'llm' ? 'llm tagger ready' : 'router ready', detail),
  });
  modelsLoaded = true;
  const running = parts.service;
  service = running;
  metrics.observe(serviceSources(running, parts.llm));
  metrics.observe({ build: () => ({ serviceVersion: SERVICE_VERSION, encoderModel: parts.encoder.model, llmModel: parts.llm?.model }) });
  const cap = parts.cap;
  if (cap !== null) metrics.observe({ llmCap: () => cap.snapshot() });

  let exiting = false;
  const shutdown = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Past the drain budget (plus time to disconnect) exit anyway; the orchestrator's grace period must be longer.
    setTimeout(() => process.exit(code === 0 ? 1 : code), config.shutdown.drainTimeoutMs + 10_000).unref();
    void parts
      .close()
      .then(() => server?.close())
      .then(() => metrics.shutdown())
      // Export the spans of the last notes; a collector that is down holds the exit up for at most 3 s.
      .then(() => Promise.race([tracing.shutdown().catch(() => undefined), new Promise<void>((r) => setTimeout(r, 3000).unref())]))
      .then(
        () => process.exit(running.drained ? code : 1),
        () => process.exit(1),
      );
  };
  running.onFatal = () => {
    logger.error('consumer stopped for good; exiting so the process is restarted');
    shutdown(1);
  };
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn('second signal: exiting without draining', { signal });
      process.exit(128 + constants.signals[signal]);
    }
    logger.info('draining before exit', { signal });
    shutdown(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await running.start();
}
