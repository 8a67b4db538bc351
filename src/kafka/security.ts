import { readFile } from 'node:fs/promises';
import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';
import type { RouterConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';

/** The kafkajs client options for TLS and SASL; both absent on defaults (the embedded mock broker has neither). */
export interface KafkaSecurityOptions {
  ssl?: ConnectionOptions | true;
  sasl?: SASLOptions;
}

/** Reads one mounted secret file; errors name the config field and the path, never the content. */
async function readSecretFile(field: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ConfigError(field, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** A username or password file: UTF-8, one trailing newline (LF or CRLF) dropped, must not be empty. */
async function readCredentialFile(field: string, path: string): Promise<string> {
  const text = (await readSecretFile(field, path)).toString('utf8').replace(/\r?\n$/, '');
  if (text.length === 0) throw new ConfigError(field, `${path} is empty`);
  return text;
}

async function readPemFile(field: string, path: string): Promise<Buffer> {
  const pem = await readSecretFile(field, path);
  if (pem.length === 0) throw new ConfigError(field, `${path} is empty`);
  return pem;
}

/**
 * Turns `kafka.tls` and `kafka.sasl` into kafkajs `ssl` and `sasl` client options,
 * reading certificates and credentials from their files once, at start-up.
 * `ssl: true` (Node's default CAs, full verification) when TLS is on with nothing to customise.
 */
export async function kafkaSecurityOptions(config: RouterConfig['kafka']): Promise<KafkaSecurityOptions> {
  const out: KafkaSecurityOptions = {};
  const tls = config.tls;
  if (tls.enabled) {
    const ssl: ConnectionOptions = {};
    if (tls.caFile !== undefined) ssl.ca = await readPemFile('kafka.tls.caFile', tls.caFile);
    if (tls.certFile !== undefined) ssl.cert = await readPemFile('kafka.tls.certFile', tls.certFile);
    if (tls.keyFile !== undefined) ssl.key = await readPemFile('kafka.tls.keyFile', tls.keyFile);
    if (!tls.rejectUnauthorized) ssl.rejectUnauthorized = false;
    if (tls.servername !== undefined) ssl.servername = tls.servername;
    out.ssl = Object.keys(ssl).length === 0 ? true : { ...ssl, rejectUnauthorized: tls.rejectUnauthorized };
  } else if (tls.caFile !== undefined || tls.certFile !== undefined || tls.keyFile !== undefined) {
    // validateConfig refuses this already; kept for callers that build the config object themselves.
    throw new ConfigError('kafka.tls.enabled', 'TLS files are set but kafka.tls.enabled is false');
  }
  const sasl = config.sasl;
  if (sasl !== undefined) {
    if (sasl.mechanism === 'plain' && !tls.enabled)
      throw new ConfigError('kafka.sasl.mechanism', 'plain requires kafka.tls.enabled: true (the password would cross the network in clear text)');
    const username = await readCredentialFile('kafka.sasl.usernameFile', sasl.usernameFile);
    const password = await readCredentialFile('kafka.sasl.passwordFile', sasl.passwordFile);
    out.sasl = { mechanism: sasl.mechanism, username, password };
  }
  return out;
}
