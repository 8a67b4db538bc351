import { constants } from 'node:os';
import { loadConfig } from '../config/load.js';
import { RouterService } from '../pipeline/service.js';
import { createLogger } from '../telemetry/logger.js';
import { setupTracing } from '../telemetry/tracing.js';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from './components.js';

/** `bioner-router run --config FILE`: the long-running consumer. */
export async function runCommand(configFile: string | undefined): Promise<void> {
  const config = await loadConfig(configFile);
  const logger = createLogger(config.logging.level);
  if (configFile === undefined) logger.info('no --config file: using defaults and BIONER_* environment overrides');
  // Before anything that may create spans; flushed and stopped last on exit.
  const tracing = setupTracing(config.telemetry);
  logger.info('tracing', { enabled: tracing.enabled, exporter: tracing.enabled ? config.telemetry.tracesExporter : 'none', sampleRatio: config.telemetry.sampleRatio });
  const encoder = await loadEncoder(config.encoder);
  logger.info('encoder loaded', { model: encoder.model.id, version: encoder.model.version, labels: encoder.labels.length, maxSequenceLength: encoder.maxSequenceLength });
  const llm = await loadLlm(config, logger);
  if (llm !== undefined) logger.info('llm tagger ready', { adapter: config.llm.adapter, model: llm.model.id, policy: config.routing.policy });
  const router = await loadRouter(config, logger);
  const service = new RouterService(config, createProcessor(config, encoder, {}, llm, router), logger);

  let exiting = false;
  const shutdown = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Past the drain budget (plus time to disconnect) exit anyway; the orchestrator's grace period must be longer.
    setTimeout(() => process.exit(code === 0 ? 1 : code), config.shutdown.drainTimeoutMs + 10_000).unref();
    void service
      .close()
      .then(() => encoder.close())
      .then(() => llm?.close())
      // Export the spans of the last notes; a collector that is down holds the exit up for at most 3 s.
      .then(() => Promise.race([tracing.shutdown().catch(() => undefined), new Promise<void>((r) => setTimeout(r, 3000).unref())]))
      .then(
        () => process.exit(service.drained ? code : 1),
        () => process.exit(1),
      );
  };
  service.onFatal = () => {
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
  await service.start();
}
