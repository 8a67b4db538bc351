import { resolve } from 'node:path';
import { loadConfig } from '../config/load.js';
import {
  calibrationEntry,
  measureCalibration,
  readCalibrationData,
  writeCalibrationEntry,
  type CalibrateProgress,
  type CalibrationMeta,
} from '../eval/calibrate.js';
import { loadEncoder, resolveExistingModelDir } from '../pipeline/compose.js';
import { createLlmTagger, OpenAiChatTagger } from '../taggers/llm/index.js';
import { createLogger } from '../telemetry/logger.js';

export interface CalibrateCommandOptions {
  config: string | undefined;
  data: string;
  format: 'iob' | 'standoff';
  out?: string;
  domain?: string;
  limit?: number;
  seed: number;
  bootstrap: number;
}

function progressLine(p: CalibrateProgress): string {
  const pct = p.total > 0 ? Math.floor((100 * p.done) / p.total) : 100;
  const left = Number.isFinite(p.etaSeconds) ? `about ${Math.ceil(p.etaSeconds)} s left` : 'time left unknown';
  return `calibrate: ${p.done}/${p.total} sentences (${pct}%), ${p.rate.toFixed(1)} sentences/s, ${left}\n`;
}

/**
 * `bioner-router calibrate --config FILE --data PATH --format iob|standoff
 * [--out FILE] [--domain NAME]`: the encoder of `encoder.*` and the LLM
 * adapter of `llm.*` over a labeled set, the domain's calibration entry
 * written or merged into `--out` (default routing.calibrationFile).
 * Progress goes to stderr (counts and rates only); the last stdout line is a
 * JSON summary. SIGINT stops the measurement and writes what was measured,
 * marked partial (exit 130); a second SIGINT exits at once (the file is
 * replaced by a rename, so it is never half written).
 */
export async function calibrateCommand(opts: CalibrateCommandOptions): Promise<void> {
  const config = await loadConfig(opts.config);
  const logger = createLogger(config.logging.level);
  const domain = opts.domain ?? config.routing.domain;
  const out = resolve(opts.out ?? config.routing.calibrationFile);
  const data = await readCalibrationData(opts.data, opts.format, opts.limit);
  const sentences = data.units.reduce((n, u) => n + u.sentences.length, 0);
  const inDocs = data.unit === 'document' ? ` in ${data.units.length} documents` : '';
  process.stderr.write(
    `calibrate: ${sentences} of ${data.available} sentences${inDocs}; loading the encoder (${config.encoder.modelDir}) and the ${config.llm.adapter} LLM adapter\n`,
  );
  const encoder = await loadEncoder(config.encoder);
  const llm = await createLlmTagger(config.llm, { modelDir: await resolveExistingModelDir(config.llm.modelDir), encoder: config.encoder, logger });

  const controller = new AbortController();
  let interrupted = false;
  const onSigint = (): void => {
    if (interrupted) {
      process.stderr.write('calibrate: second SIGINT, exiting without writing\n');
      process.exit(130);
    }
    interrupted = true;
    process.stderr.write('calibrate: SIGINT, stopping; writing what was measured (marked partial)\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let lastReport = 0;
  try {
    const measured = await measureCalibration(data.units, {
      taggers: { encoder, llm },
      concurrency: config.processing.concurrency,
      seed: opts.seed,
      signal: controller.signal,
      onProgress: (p) => {
        // About once a second, and at the end.
        const now = Date.now();
        if (now - lastReport >= 1000 || p.done === p.total) {
          lastReport = now;
          process.stderr.write(progressLine(p));
        }
      },
    });
    const routes: CalibrationMeta['routes'] = {
      encoder: { model: encoder.model.id, version: encoder.model.version, adapter: 'onnx' },
      llm: {
        model: llm.model.id,
        adapter: config.llm.adapter,
        ...(config.llm.model === undefined ? {} : { served_model: config.llm.model }),
        ...(config.llm.adapter === 'openai'
          ? { endpoint: config.llm.endpoint, structured_outputs: config.llm.structuredOutputs, word_split: config.llm.wordSplit, logprobs: config.llm.logprobs }
          : {}),
      },
    };
    const meta: CalibrationMeta = {
      data: opts.data,
      format: opts.format,
      unit: data.unit,
      available: data.available,
      seed: opts.seed,
      resamples: opts.bootstrap,
      routes,
      interrupted,
    };
    if (llm instanceof OpenAiChatTagger) {
      meta.realignment = { ...llm.stats };
      meta.scores = { ...llm.scoreStats };
    }
    const entry = calibrationEntry(measured, meta);
    await writeCalibrationEntry(out, domain, entry);
    const routesOut = entry.routes as Record<'encoder' | 'llm', { f1: Record<string, number | null> }>;
    process.stderr.write(`calibrate: wrote ${domain} to ${out}${measured.partial ? ' (partial)' : ''}\n`);
    process.stdout.write(
      `${JSON.stringify({ domain, out, partial: measured.partial, sentences: entry.sentences, f1: { encoder: routesOut.encoder.f1.all, llm: routesOut.llm.f1.all }, llm_gain: entry.llm_gain })}\n`,
    );
    if (interrupted) process.exitCode = 130;
  } finally {
    process.off('SIGINT', onSigint);
    await llm.close();
    await encoder.close();
  }
}
