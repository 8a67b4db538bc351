import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { RouterConfig } from '../config/schema.js';
import { ConfigError, ErrorCodes, SchemaRegistryError, type Stage } from '../errors.js';

/**
 * A small Confluent Schema Registry client over node:http(s): the three calls
 * the router makes (GET /schemas/ids/{id}, POST /subjects/{subject}/versions,
 * POST /subjects/{subject}), basic auth, TLS, a timeout, and an id cache.
 *
 * Why not @kafkajs/confluent-schema-registry (checked, 3.9.0 and 4.1.0):
 * 4.x requires Node >= 22 (this package supports 20); 3.x, through mappersmith,
 * reports a refused connection as HTTP 400, so "registry down" (retriable:
 * the partition must wait) cannot be told from "the registry refused the
 * request"; its register() also reads and rewrites the subject's
 * compatibility level (GET/PUT /config/{subject}) and refuses subjects not on
 * BACKWARD, a side effect on a shared registry; and it pulls in ajv and
 * protobufjs for formats the router does not read. Node's global fetch cannot
 * take a CA bundle without the undici package, hence node:https.
 */

/** Magic byte of the Confluent wire format: 0, then a 4-byte big-endian schema id, then the Avro body. */
export const CONFLUENT_MAGIC = 0;
const HEADER_BYTES = 5;

/** The schema id and the Avro body of a Confluent-framed value, or undefined when it lacks the 5-byte header. */
export function parseConfluentFrame(value: Buffer): { schemaId: number; body: Buffer } | undefined {
  if (value.length < HEADER_BYTES || value[0] !== CONFLUENT_MAGIC) return undefined;
  return { schemaId: value.readUInt32BE(1), body: value.subarray(HEADER_BYTES) };
}

/** Prefixes an Avro body with the Confluent header for `schemaId`. */
export function frameConfluent(schemaId: number, body: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = CONFLUENT_MAGIC;
  header.writeUInt32BE(schemaId, 1);
  return Buffer.concat([header, body]);
}

export interface SchemaRegistryClientOptions {
  /** Registry root; a path prefix is kept (https://host/registry -> https://host/registry/schemas/ids/1). */
  url: string;
  auth?: { username: string; password: string };
  /** https only. */
  tls?: { ca?: Buffer; rejectUnauthorized: boolean };
  timeoutMs: number;
  /** Schemas kept by id (ids are immutable, so entries never go stale); the oldest is evicted past this. */
  cacheSize?: number;
}

/** A schema as the registry holds it (`schemaType` absent means AVRO). */
export interface RegisteredSchema {
  id: number;
  schema: string;
  schemaType: string;
  /** Names of referenced schemas; the router reads none. */
  references: number;
}

/** Counters for tests and telemetry; never schema or record content. */
export interface SchemaRegistryStats {
  requests: number;
  cacheHits: number;
  failures: number;
}

const CONTENT_TYPE = 'application/vnd.schemaregistry.v1+json';
const ACCEPT = 'application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json';
/** Answers are schemas, a few KiB; anything far larger is not a registry answer. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

interface Answer {
  status: number;
  body: unknown;
}

export class SchemaRegistryClient {
  readonly stats: SchemaRegistryStats = { requests: 0, cacheHits: 0, failures: 0 };
  private readonly base: URL;
  private readonly authorization: string | undefined;
  private readonly byId = new Map<number, Promise<RegisteredSchema>>();
  private readonly cacheSize: number;

  constructor(private readonly options: SchemaRegistryClientOptions) {
    this.base = new URL(options.url.endsWith('/') ? options.url : `${options.url}/`);
    this.authorization =
      options.auth === undefined ? undefined : `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`, 'utf8').toString('base64')}`;
    this.cacheSize = options.cacheSize ?? 1000;
  }

  /**
   * The schema with this id (GET /schemas/ids/{id}), cached; concurrent calls
   * for one id share one request. 404: SCHEMA_NOT_FOUND; unreachable, timeout,
   * 5xx, 429, 401, 403: SCHEMA_REGISTRY_UNAVAILABLE (retriable). Failures are
   * not cached, so a recovered registry is asked again.
   */
  schemaById(id: number): Promise<RegisteredSchema> {
    const cached = this.byId.get(id);
    if (cached !== undefined) {
      this.stats.cacheHits++;
      return cached;
    }
    const pending = this.fetchSchema(id);
    this.byId.set(id, pending);
    if (this.byId.size > this.cacheSize) {
      const oldest = this.byId.keys().next();
      if (oldest.done !== true) this.byId.delete(oldest.value);
    }
    pending.catch(() => {
      if (this.byId.get(id) === pending) this.byId.delete(id);
    });
    return pending;
  }

  /** Registers `schema` (Avro JSON text) under `subject` (POST /subjects/{subject}/versions) and returns its id; registering an existing schema returns the existing id. */
  async register(subject: string, schema: string): Promise<number> {
    const path = `subjects/${encodeURIComponent(subject)}/versions`;
    const answer = await this.call('POST', path, { schema }, 'publish');
    if (answer.status === 200) return this.idOf(answer.body, 'POST', path);
    throw this.failure('POST', path, answer, 'publish', { 409: ErrorCodes.SCHEMA_INCOMPATIBLE, 422: ErrorCodes.SCHEMA_INCOMPATIBLE });
  }

  /** The id of `schema` if it is registered under `subject` (POST /subjects/{subject}); SCHEMA_NOT_FOUND when the subject or the schema is not there. */
  async lookup(subject: string, schema: string): Promise<number> {
    const path = `subjects/${encodeURIComponent(subject)}`;
    const answer = await this.call('POST', path, { schema }, 'publish');
    if (answer.status === 200) return this.idOf(answer.body, 'POST', path);
    throw this.failure('POST', path, answer, 'publish', { 404: ErrorCodes.SCHEMA_NOT_FOUND, 422: ErrorCodes.SCHEMA_INCOMPATIBLE });
  }

  private async fetchSchema(id: number): Promise<RegisteredSchema> {
    const path = `schemas/ids/${id}`;
    const answer = await this.call('GET', path, undefined, 'decode');
    if (answer.status !== 200) throw this.failure('GET', 'schemas/ids/{id}', answer, 'decode', { 404: ErrorCodes.SCHEMA_NOT_FOUND });
    const body = answer.body as { schema?: unknown; schemaType?: unknown; references?: unknown } | null;
    if (body === null || typeof body !== 'object' || typeof body.schema !== 'string') {
      this.stats.failures++;
      throw new SchemaRegistryError(ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE, 'GET /schemas/ids/{id}: the answer has no "schema" string', {
        status: answer.status,
      });
    }
    return {
      id,
      schema: body.schema,
      schemaType: typeof body.schemaType === 'string' ? body.schemaType : 'AVRO',
      references: Array.isArray(body.references) ? body.references.length : 0,
    };
  }

  private idOf(body: unknown, method: string, path: string): number {
    const id = (body as { id?: unknown } | null)?.id;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      this.stats.failures++;
      throw new SchemaRegistryError(ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE, `${method} /${path}: the answer has no schema id`, { stage: 'publish' });
    }
    return id;
  }

  /** Maps an HTTP error answer to a typed error: `notRetriable` names the statuses that are the request's own fault; every other status means the registry is unwell or refuses us (retriable). */
  private failure(
    method: string,
    path: string,
    answer: Answer,
    stage: Stage,
    notRetriable: Partial<Record<number, typeof ErrorCodes.SCHEMA_NOT_FOUND | typeof ErrorCodes.SCHEMA_INCOMPATIBLE>>,
  ): SchemaRegistryError {
    this.stats.failures++;
    const registryCode = (answer.body as { error_code?: unknown } | null)?.error_code;
    // Registry messages can echo the submitted schema: only the status and the numeric error code are kept.
    const detail = `${method} /${path} answered HTTP ${answer.status}${typeof registryCode === 'number' ? ` (error_code ${registryCode})` : ''}`;
    const code = notRetriable[answer.status];
    if (code !== undefined) return new SchemaRegistryError(code, detail, { status: answer.status, stage, retriable: false });
    const hint = answer.status === 401 || answer.status === 403 ? '; check schemaRegistry.usernameFile/passwordFile' : '';
    return new SchemaRegistryError(ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE, `${detail}${hint}`, { status: answer.status, stage, retriable: true });
  }

  private call(method: 'GET' | 'POST', path: string, payload: unknown, stage: Stage): Promise<Answer> {
    const url = new URL(path, this.base);
    const body = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload), 'utf8');
    const headers: Record<string, string> = { accept: ACCEPT };
    if (body !== undefined) {
      headers['content-type'] = CONTENT_TYPE;
      headers['content-length'] = String(body.length);
    }
    if (this.authorization !== undefined) headers.authorization = this.authorization;
    const https = url.protocol === 'https:';
    const options: RequestOptions & { ca?: Buffer; rejectUnauthorized?: boolean } = { method, headers, timeout: this.options.timeoutMs };
    if (https && this.options.tls !== undefined) {
      if (this.options.tls.ca !== undefined) options.ca = this.options.tls.ca;
      options.rejectUnauthorized = this.options.tls.rejectUnauthorized;
    }
    this.stats.requests++;
    const shown = path.startsWith('schemas/ids/') ? 'schemas/ids/{id}' : path;
    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      const fail = (why: string, cause?: unknown): void => {
        if (settled) return;
        settled = true;
        this.stats.failures++;
        req.destroy();
        reject(new SchemaRegistryError(ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE, `${method} /${shown}: ${why}`, { stage, retriable: true, cause }));
      };
      // One deadline for connect, headers and body alike (the socket timeout alone only covers idle gaps).
      const deadline = setTimeout(() => fail(`no complete answer within schemaRegistry.timeoutMs (${this.options.timeoutMs} ms)`), this.options.timeoutMs);
      const req = (https ? httpsRequest : httpRequest)(url, options, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) fail(`answer larger than ${MAX_ANSWER_BYTES} bytes`);
          else chunks.push(chunk);
        });
        res.on('error', (err) => fail(`answer cut off (${(err as NodeJS.ErrnoException).code ?? err.name})`, err));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(deadline);
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = null;
          try {
            parsed = text === '' ? null : (JSON.parse(text) as unknown);
          } catch {
            // A proxy's HTML error page: the status still says what happened.
          }
          if (res.statusCode === 200 && parsed === null) {
            this.stats.failures++;
            reject(
              new SchemaRegistryError(ErrorCodes.SCHEMA_REGISTRY_UNAVAILABLE, `${method} /${shown}: HTTP 200 without a JSON answer`, {
                stage,
                retriable: true,
                status: 200,
              }),
            );
            return;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.on('timeout', () => fail(`no answer within schemaRegistry.timeoutMs (${this.options.timeoutMs} ms)`));
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(deadline);
        fail(`request failed (${err.code ?? err.name})`, err);
      });
      req.on('close', () => clearTimeout(deadline));
      req.end(body);
    });
  }
}

async function readSecret(field: string, path: string, trimNewline: boolean): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw new ConfigError(field, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (trimNewline) data = Buffer.from(data.toString('utf8').replace(/\r?\n$/, ''), 'utf8');
  if (data.length === 0) throw new ConfigError(field, `${path} is empty`);
  return data;
}

/**
 * Client options from `schemaRegistry`, reading the credential and CA files
 * once (as kafka.sasl/kafka.tls do); undefined when no url is configured.
 * Errors name the field and the path, never the content.
 */
export async function schemaRegistryOptions(config: RouterConfig['schemaRegistry']): Promise<SchemaRegistryClientOptions | undefined> {
  if (config.url === undefined) return undefined;
  const options: SchemaRegistryClientOptions = { url: config.url, timeoutMs: config.timeoutMs };
  if (config.usernameFile !== undefined || config.passwordFile !== undefined) {
    if (config.usernameFile === undefined || config.passwordFile === undefined) {
      throw new ConfigError(
        config.usernameFile === undefined ? 'schemaRegistry.usernameFile' : 'schemaRegistry.passwordFile',
        'schemaRegistry.usernameFile and schemaRegistry.passwordFile go together',
      );
    }
    const username = (await readSecret('schemaRegistry.usernameFile', config.usernameFile, true)).toString('utf8');
    const password = (await readSecret('schemaRegistry.passwordFile', config.passwordFile, true)).toString('utf8');
    // RFC 7617: a colon in the user-id would split differently on the server.
    if (username.includes(':'))
      throw new ConfigError('schemaRegistry.usernameFile', `${config.usernameFile} holds a username with a colon, which basic auth cannot carry`);
    options.auth = { username, password };
  }
  const ca = config.tls.caFile === undefined ? undefined : await readSecret('schemaRegistry.tls.caFile', config.tls.caFile, false);
  options.tls = { rejectUnauthorized: config.tls.rejectUnauthorized, ...(ca === undefined ? {} : { ca }) };
  return options;
}
