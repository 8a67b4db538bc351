import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

/**
 * An in-test Confluent Schema Registry: exactly the REST endpoints the
 * router's client calls, with global ids, subjects, versions and basic auth,
 * plus fault switches. Not a registry: no compatibility checks (unless told
 * to refuse), no deletes, no config endpoints.
 *
 *   GET  /schemas/ids/{id}              -> {schema[, schemaType]} | 404 (40403)
 *   POST /subjects/{subject}/versions   -> {id} (same schema: same id)
 *   POST /subjects/{subject}            -> {subject, id, version, schema} | 404 (40401 subject, 40403 schema)
 */
export interface TestRegistryOptions {
  /** Basic-auth credentials every request must carry (401 otherwise). */
  username?: string;
  password?: string;
  /** Serve https with this PEM key and certificate. */
  tls?: { key: string; cert: string };
}

export interface RegistryRequest {
  method: string;
  path: string;
  /** HTTP status answered; 0 when the connection was reset instead. */
  status: number;
}

/** `reset`: connections are destroyed without an answer (ECONNRESET); `unavailable`: HTTP 503; false: healthy. */
export type RegistryFault = 'reset' | 'unavailable' | false;

export interface TestRegistry {
  url: string;
  requests: RegistryRequest[];
  /** Id -> schema text (as registered) and type. */
  schemas: Map<number, { schema: string; schemaType?: string }>;
  /** Subject -> ids of its versions, version 1 first. */
  subjects: Map<string, number[]>;
  /** Applies to every request, or only to those whose path matches `scope`. */
  setFault(fault: RegistryFault, scope?: RegExp): void;
  /** Answer 409 to registrations (an incompatible schema). */
  refuseRegistrations(refuse: boolean): void;
  /** Registers directly (as a producer would have); returns the id. */
  register(subject: string, schema: string, schemaType?: string): number;
  close(): Promise<void>;
}

const canonical = (schema: string): string => {
  try {
    return JSON.stringify(JSON.parse(schema));
  } catch {
    return schema;
  }
};

export async function startTestRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const schemas = new Map<number, { schema: string; schemaType?: string }>();
  const subjects = new Map<string, number[]>();
  const requests: RegistryRequest[] = [];
  const sockets = new Set<Socket>();
  let fault: RegistryFault = false;
  let faultScope: RegExp | undefined;
  let refuse = false;
  // Real registries start ids above 0; a gap makes an off-by-one in the framing show.
  let nextId = 101;

  const idFor = (schema: string, schemaType?: string): number => {
    const c = canonical(schema);
    for (const [id, s] of schemas) if (canonical(s.schema) === c && (s.schemaType ?? 'AVRO') === (schemaType ?? 'AVRO')) return id;
    const id = nextId++;
    schemas.set(id, schemaType === undefined ? { schema } : { schema, schemaType });
    return id;
  };
  const register = (subject: string, schema: string, schemaType?: string): number => {
    const id = idFor(schema, schemaType);
    const versions = subjects.get(subject) ?? [];
    if (!versions.includes(id)) versions.push(id);
    subjects.set(subject, versions);
    return id;
  };

  const answer = (req: IncomingMessage, res: ServerResponse, status: number, body: unknown): void => {
    requests.push({ method: req.method ?? '', path: req.url ?? '', status });
    res.writeHead(status, { 'content-type': 'application/vnd.schemaregistry.v1+json' });
    res.end(JSON.stringify(body));
  };

  const readBody = (req: IncomingMessage): Promise<unknown> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown);
        } catch {
          resolve(undefined);
        }
      });
    });

  const handler: RequestListener = (req, res) => {
    void (async () => {
      const faulty = faultScope === undefined || faultScope.test(req.url ?? '');
      if (faulty && fault === 'reset') {
        requests.push({ method: req.method ?? '', path: req.url ?? '', status: 0 });
        req.socket.destroy();
        return;
      }
      if (faulty && fault === 'unavailable') return answer(req, res, 503, { error_code: 50003, message: 'Error while forwarding the request to the leader' });
      if (options.username !== undefined) {
        const expected = `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}`;
        if (req.headers.authorization !== expected) return answer(req, res, 401, { error_code: 401, message: 'Unauthorized' });
      }
      const url = new URL(req.url ?? '/', 'http://registry');
      const byId = /^\/schemas\/ids\/(\d+)$/.exec(url.pathname);
      if (req.method === 'GET' && byId !== null) {
        const found = schemas.get(Number(byId[1]));
        if (found === undefined) return answer(req, res, 404, { error_code: 40403, message: `Schema ${byId[1]} not found` });
        return answer(req, res, 200, found);
      }
      const versions = /^\/subjects\/([^/]+)\/versions$/.exec(url.pathname);
      const subjectOnly = /^\/subjects\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'POST' && (versions !== null || subjectOnly !== null)) {
        const body = (await readBody(req)) as { schema?: unknown; schemaType?: unknown } | undefined;
        if (typeof body?.schema !== 'string') return answer(req, res, 422, { error_code: 42201, message: 'Invalid schema' });
        try {
          JSON.parse(body.schema);
        } catch {
          return answer(req, res, 422, { error_code: 42201, message: 'Invalid schema' });
        }
        const schemaType = typeof body.schemaType === 'string' ? body.schemaType : undefined;
        if (versions !== null) {
          if (refuse) return answer(req, res, 409, { error_code: 409, message: 'Schema being registered is incompatible with an earlier schema' });
          return answer(req, res, 200, { id: register(decodeURIComponent(versions[1]), body.schema, schemaType) });
        }
        const subject = decodeURIComponent((subjectOnly as RegExpExecArray)[1]);
        const ids = subjects.get(subject);
        if (ids === undefined) return answer(req, res, 404, { error_code: 40401, message: `Subject '${subject}' not found.` });
        const c = canonical(body.schema);
        const at = ids.findIndex((id) => canonical(schemas.get(id)?.schema ?? '') === c);
        if (at < 0) return answer(req, res, 404, { error_code: 40403, message: 'Schema not found' });
        return answer(req, res, 200, { subject, id: ids[at], version: at + 1, schema: body.schema });
      }
      return answer(req, res, 404, { error_code: 404, message: 'HTTP 404 Not Found' });
    })();
  };
  const server: Server = options.tls === undefined ? createServer(handler) : createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler);
  server.on(options.tls === undefined ? 'connection' : 'secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    requests,
    schemas,
    subjects,
    setFault(next, scope) {
      fault = next;
      faultScope = scope;
      // Kept-alive connections would otherwise still reach a healthy handler state.
      if (next === 'reset') for (const s of sockets) s.destroy();
    },
    refuseRegistrations(next) {
      refuse = next;
    },
    register,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
