/**
 * A TCP proxy that injects faults between a client and a server, for the
 * fault suite and the soak run (the LLM server's side; the mock cluster has
 * its own fault commands). Byte-transparent, so it serves HTTP, keep-alive
 * included, without parsing it.
 *
 * - `delayMs`: every chunk from the server reaches the client this much later
 *   (a slow or queueing LLM server).
 * - `down`: open connections are cut and new ones are reset at once (a dead
 *   server whose port still answers is no different to the client).
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { ErrorCodes, RouterError } from '../errors.js';

export interface FaultProxyOptions {
  /** Where connections go. */
  targetHost: string;
  targetPort: number;
  /** 0 picks a free port. */
  port?: number;
  delayMs?: number;
}

export class FaultProxy {
  delayMs: number;
  private downNow = false;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly options: FaultProxyOptions,
  ) {
    this.delayMs = options.delayMs ?? 0;
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const server = createServer();
    const proxy = new FaultProxy(server, options);
    server.on('connection', (client) => proxy.onConnection(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new RouterError(ErrorCodes.INTERNAL, `fault proxy cannot listen: ${err.message}`, { stage: 'embedded', cause: err })),
      );
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Cuts every open connection and refuses new ones until `up()`. */
  down(): void {
    this.downNow = true;
    for (const s of this.sockets) s.destroy();
  }

  up(): void {
    this.downNow = false;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
  }

  private onConnection(client: Socket): void {
    this.track(client);
    if (this.downNow) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(this.options.targetPort, this.options.targetHost);
    this.track(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (this.delayMs <= 0) client.write(chunk);
      else setTimeout(() => client.writable && client.write(chunk), this.delayMs);
    });
    // Either side closing closes the other (after any delayed chunks).
    upstream.once('close', () => setTimeout(() => client.destroy(), this.delayMs));
    client.once('close', () => upstream.destroy());
  }
}
