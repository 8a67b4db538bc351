import { startLlmServer } from '../taggers/llm/reference-server.js';
import { createLogger } from '../telemetry/logger.js';

/** `bioner-router serve-llm --model DIR --port P [--host H] [--api-key-file F] [--served-model-name N] [--lora-modules N=DIR,...]`: prints the bound URL on one stdout line. */
export async function serveLlmCommand(opts: {
  model: string;
  port: number;
  host: string;
  apiKeyFile?: string;
  /** The base model's name in requests (vLLM --served-model-name). */
  servedName?: string;
  /** More bundles under their own names (vLLM --lora-modules name=path). */
  loraModules?: Record<string, string>;
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}): Promise<void> {
  const logger = createLogger(opts.logLevel ?? 'info');
  const server = await startLlmServer({
    modelDir: opts.model,
    port: opts.port,
    host: opts.host,
    apiKeyFile: opts.apiKeyFile,
    servedName: opts.servedName,
    loraModules: opts.loraModules,
    logger,
  });
  process.stdout.write(`${server.url}\n`);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) process.exit(130);
    logger.info('serve-llm stopping', { signal });
    void server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
