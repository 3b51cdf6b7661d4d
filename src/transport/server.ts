import type { Socket } from 'node:net';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { CallRegistry, guardRequests, implement, type ServiceBinding } from './rpc.js';
import { DescriptorIndex, addReflection, loadImage } from './reflection.js';
import { requestTypes } from './request-check.js';
import type { HealthMonitor } from './health.js';
import type { Limits } from './limits.js';
import type { Metrics } from '../metrics.js';

export type { ServiceBinding } from './rpc.js';

export interface GrpcServerOptions {
  maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: clients queue further streams on that connection. */
  maxStreamsPerConnection: number;
  logger: Logger;
  limits?: Limits;
  /** TLS (transport/tls.ts); unset: plaintext HTTP/2. */
  credentials?: ServerCredentials;
  metrics?: Metrics;
}

/** grpc-js server with our services, health and reflection, and a shutdown that drains before closing. */
export class GrpcServer {
  readonly calls = new CallRegistry();
  private readonly server: Server;
  /** Every connection's socket, so a forced shutdown can close them whatever the client does (see shutdown). */
  private readonly sockets = new Set<Socket>();

  constructor(
    bindings: ServiceBinding[],
    private readonly health: HealthMonitor,
    private readonly opts: GrpcServerOptions,
  ) {
    this.server = new Server({
      'grpc.max_receive_message_length': opts.maxMessageBytes,
      'grpc.max_send_message_length': opts.maxMessageBytes,
      // Ping idle connections so proxies and NATs keep long-lived watch streams open.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Accept client pings as often as every 10 s without calling it abuse.
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      // One connection cannot hold more streams than this, whichever accounts they belong to.
      'grpc.max_concurrent_streams': opts.maxStreamsPerConnection,
    });
    const env = { logger: opts.logger, calls: this.calls, limits: opts.limits, metrics: opts.metrics };
    const image = loadImage();
    const types = requestTypes(image);
    for (const b of bindings) {
      const definition = guardRequests(b.definition, types);
      this.server.addService(definition, implement(definition, b.handlers, env, b.authenticate));
    }
    health.addTo(this.server);
    addReflection(this.server, new DescriptorIndex(image), [
      ...bindings.map((b) => b.name),
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
    ]);
  }

  /** Binds `host:port` (port 0 picks a free one) and returns the bound port. */
  async listen(address: string): Promise<number> {
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(address, this.opts.credentials ?? ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.trackSockets();
    return port;
  }

  /**
   * grpc-js keeps its HTTP/2 servers to itself; their sockets are reached through its `http2Servers` map. When
   * that map is not there (another grpc-js), nothing is tracked and a forced shutdown is only grpc-js's own.
   */
  private trackSockets(): void {
    const servers = (this.server as unknown as { http2Servers?: Map<{ on: (event: 'connection', fn: (s: Socket) => void) => void }, unknown> }).http2Servers;
    if (!(servers instanceof Map)) return;
    for (const server of servers.keys()) {
      server.on('connection', (socket: Socket) => {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
      });
    }
  }

  /**
   * Graceful stop: refuse new calls, end open streams with UNAVAILABLE (clients resume elsewhere), give
   * in-flight unary calls up to graceMs, then cut whatever is left.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.health.stop();
    const closed = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.calls.endStreams();
    await this.calls.drain(graceMs);
    // A forced HTTP/2 session only half-closes its socket and waits for the client's side to close; a client that
    // keeps its end open (seen with clients that cancel a stream the server had just ended) would hold the
    // shutdown, and the process, for ever. After the force, whatever socket is left is destroyed.
    const forced = setTimeout(() => {
      this.server.forceShutdown();
      for (const socket of this.sockets) socket.destroy();
    }, 250);
    await closed;
    clearTimeout(forced);
  }
}
