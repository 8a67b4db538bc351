import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface Readiness {
  ok: boolean;
  /** check name -> passing; /readyz names the failing ones */
  checks: Record<string, boolean>;
}

export interface TelemetryServerOptions {
  /** 0 = a free port (see `url`). */
  port: number;
  host?: string;
  metrics: { collectPrometheus(): Promise<string>; servesPrometheus?: boolean };
  ready: () => Readiness;
  /**
   * Start-up done (models loaded) for GET /startupz, the orchestrator's startup probe. Unlike /readyz it
   * ignores Kafka: a broker outage must not fail start-up and get a healthy process restarted. Default:
   * the `models` check of `ready()` when it has one, else `ready().ok`.
   */
  started?: () => boolean;
}

export interface TelemetryServer {
  /** http://host:port with the bound port */
  url: string;
  close(): Promise<void>;
}

/**
 * Readiness of a RouterService: `kafka` (connected and not stopping: the
 * service's `isReady`, false once close() begins) and `models` (the
 * caller's flag, e.g. set once the encoder is loaded).
 */
export function routerReadiness(service: { readonly isReady: boolean }, modelsLoaded: () => boolean): () => Readiness {
  return () => {
    const checks = { kafka: service.isReady, models: modelsLoaded() };
    return { ok: Object.values(checks).every(Boolean), checks };
  };
}

function startedFromReadiness(readiness: Readiness): boolean {
  return readiness.checks.models ?? readiness.ok;
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * GET /metrics (Prometheus text), /healthz (200 while the process is alive),
 * /startupz (200 once start-up is done, i.e. models loaded; else 503),
 * /readyz (200 when every check passes, else 503 with the failing checks).
 */
export async function startTelemetryServer(options: TelemetryServerOptions): Promise<TelemetryServer> {
  const host = options.host ?? '0.0.0.0';
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      if (options.metrics.servesPrometheus === false)
        send(res, 404, 'text/plain; charset=utf-8', 'metrics are not exported as prometheus (OTEL_METRICS_EXPORTER)\n');
      else send(res, 200, PROMETHEUS_CONTENT_TYPE, await options.metrics.collectPrometheus());
    } else if (path === '/healthz') {
      send(res, 200, 'application/json', JSON.stringify({ status: 'ok' }));
    } else if (path === '/startupz') {
      let started: boolean;
      try {
        started = options.started !== undefined ? options.started() : startedFromReadiness(options.ready());
      } catch {
        started = false;
      }
      send(res, started ? 200 : 503, 'application/json', JSON.stringify({ status: started ? 'started' : 'starting' }));
    } else if (path === '/readyz') {
      let readiness: Readiness;
      try {
        readiness = options.ready();
      } catch {
        readiness = { ok: false, checks: { ready_callback: false } };
      }
      const failing = Object.entries(readiness.checks)
        .filter(([, ok]) => !ok)
        .map(([name]) => name);
      const ok = readiness.ok && failing.length === 0;
      send(res, ok ? 200 : 503, 'application/json', JSON.stringify({ status: ok ? 'ready' : 'not_ready', checks: readiness.checks, failing }));
    } else {
      send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'metrics collection failed\n');
      else res.destroy();
    });
  });
  // Scrapers keep connections alive; close() must not wait for them.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${address.port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
