import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { StartupError } from '../startup-errors.js';

export interface MetricsEndpoint {
  /** The bound port (useful with PARLEY_METRICS_LISTEN=…:0). */
  port: number;
  close(): Promise<void>;
}

// Bounded on purpose: it answers one path, reads no request body, and holds few connections briefly.
const MAX_CONNECTIONS = 16;
const MAX_HEADER_BYTES = 8 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * The Prometheus endpoint on its own address: `GET /metrics` (HEAD too) answers the exposition text; any
 * other method or path is 404 and the connection is closed, so a body sent with it is never read.
 */
export async function startMetricsEndpoint(address: string, metrics: Metrics, logger: Logger): Promise<MetricsEndpoint> {
  const { host, port } = splitAddress(address);
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    answer(req, res, metrics, logger);
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: Error & { code?: string }) => {
      const reason = err.code === 'EADDRINUSE' ? 'address already in use' : (err.code ?? err.message);
      reject(new StartupError(`cannot listen on ${address} (metrics endpoint): ${reason}`, { cause: err }));
    });
    server.listen(port, host, () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  const bound = server.address();
  const boundPort = typeof bound === 'object' && bound ? bound.port : port;
  logger.info('metrics endpoint listening', { address: `${address.replace(/:\d+$/, `:${boundPort}`)}/metrics` });
  return { port: boundPort, close: () => closeServer(server) };
}

function answer(req: IncomingMessage, res: ServerResponse, metrics: Metrics, logger: Logger): void {
  const path = (req.url ?? '').split('?', 1)[0];
  if ((req.method !== 'GET' && req.method !== 'HEAD') || path !== '/metrics') {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' }).end('not found\n');
    return;
  }
  metrics.scrape().then(
    (text) => {
      res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (err: unknown) => {
      logger.warn('metrics scrape failed', { error: err instanceof Error ? err.message : String(err) });
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('scrape failed\n');
    },
  );
}

/** `host:port` or `[v6]:port` (the config checked the form). */
function splitAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port: Number(address.slice(colon + 1)) };
}

function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Idle keep-alive connections (a scraper's) would hold close() open until they time out.
  server.closeAllConnections();
  return closed;
}
