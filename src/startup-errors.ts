// Start-up failures as one line an operator can act on: which address is in use, which database does not
// exist, which Redis cannot be reached. Passwords in URLs never reach the line.

/** A failure already phrased for the operator (main prints `parley: <message>` and exits 1, no stack). */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

/** The URL with its password replaced by `***` (the user is kept); unparsable text is cut to its scheme. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    // Not a URL we can read: show the scheme only, since we cannot tell where a password would be.
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0];
    return scheme ? `${scheme}…` : '(unparsable URL)';
  }
}

type NodeError = Error & { code?: string; syscall?: string };

/** `connect ECONNREFUSED` rather than the full message with its address (the line names the URL already). */
function networkReason(err: NodeError): string | undefined {
  if (err.syscall && err.code) return `${err.syscall} ${err.code}`;
  if (typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code)) return err.code;
  return undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** Connects to Postgres once, so a server that is down or a database that does not exist is named clearly. */
export async function checkPostgres(url: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
  } catch (err) {
    throw postgresError(err, url);
  } finally {
    await client.end().catch(() => {});
  }
}

export function postgresError(err: unknown, url: string): StartupError {
  const e = err as NodeError;
  const where = maskUrl(url);
  if (e?.code === '3D000') {
    const name = /database "([^"]*)"/.exec(e.message)?.[1] ?? databaseName(url);
    return new StartupError(`Postgres database "${name}" does not exist (${where})`, { cause: err });
  }
  if (e?.code === '28P01' || e?.code === '28000') {
    return new StartupError(`Postgres at ${where} refused the login: ${oneLine(e.message)}`, { cause: err });
  }
  const net = e instanceof Error ? networkReason(e) : undefined;
  if (net) return new StartupError(`Postgres at ${where} is unreachable (${net})`, { cause: err });
  if (e instanceof Error && /timeout/i.test(e.message)) return new StartupError(`Postgres at ${where} is unreachable (${oneLine(e.message)})`, { cause: err });
  return new StartupError(`Postgres at ${where}: ${e instanceof Error ? oneLine(e.message) : String(err)}`, { cause: err });
}

function databaseName(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  } catch {
    return '?';
  }
}

/**
 * Connects to Redis once, without retrying, so one that is down fails start-up at once and by name (the
 * store's own connections retry forever, which is what they should do after start-up).
 */
export async function checkRedis(url: string, cluster?: { seeds: readonly string[] }): Promise<void> {
  if (cluster) return checkRedisCluster(url, cluster.seeds);
  await pingOnce(url).catch((err: unknown) => {
    throw redisError(err, url);
  });
}

/** One connection, one PING, no retries; rejects with the most telling error (the socket's, if any). */
async function pingOnce(url: string): Promise<void> {
  const { Redis } = await import('ioredis');
  let last: Error | undefined;
  const redis = new Redis(url, {
    lazyConnect: true,
    retryStrategy: () => null,
    reconnectOnError: () => false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 3_000,
  });
  redis.on('error', (err: Error) => (last = err));
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw last ?? err;
  } finally {
    redis.disconnect();
  }
}

/** As checkRedis, for a cluster: the slot map is read through `url` (or a seed), then every master must answer. */
async function checkRedisCluster(url: string, seeds: readonly string[]): Promise<void> {
  const { clusterClient, clusterMasters } = await import('./storage/redis-cluster.js');
  const once = { retryStrategy: () => null, reconnectOnError: () => false, maxRetriesPerRequest: 0, connectTimeout: 3_000 };
  const cluster = clusterClient(url, seeds, once, { clusterRetryStrategy: () => null, enableOfflineQueue: false });
  let last: Error | undefined;
  cluster.on('error', () => {});
  cluster.on('node error', (err: Error) => (last = err));
  try {
    await cluster.connect();
    await Promise.all(clusterMasters(cluster).map((m) => m.ping()));
  } catch (err) {
    // The cluster client reports "None of startup nodes is available"; a plain connection to REDIS_URL says
    // why (connect ECONNREFUSED, a refused login), else the last node's answer (cluster support disabled).
    throw redisError(await pingOnce(url).then(() => last ?? err, (direct: unknown) => direct), url, 'Redis Cluster');
  } finally {
    cluster.disconnect();
  }
}

export function redisError(err: unknown, url: string, what = 'Redis'): StartupError {
  const where = maskUrl(url);
  const e = err as NodeError;
  const net = e instanceof Error ? networkReason(e) : undefined;
  if (net) return new StartupError(`${what} at ${where} is unreachable (${net})`, { cause: err });
  const message = e instanceof Error ? oneLine(e.message) : String(err);
  if (/NOAUTH|WRONGPASS|invalid password|ERR AUTH/i.test(message)) return new StartupError(`${what} at ${where} refused the login: ${message}`, { cause: err });
  return new StartupError(`${what} at ${where} is unreachable (${message})`, { cause: err });
}

const listenReasons: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'address not available on this machine',
};

/** grpc-js reports a failed bind as `No address added out of total N resolved errors: [listen EADDRINUSE: …]`. */
export function listenError(err: unknown, address: string): StartupError | undefined {
  if (!(err instanceof Error) || !/No address added|No addresses resolved|resolution failed|bind/i.test(err.message)) return undefined;
  const code = /\b(E[A-Z]{3,})\b/.exec(err.message)?.[1];
  const reason = code ? (listenReasons[code] ?? code) : oneLine(err.message.replace(/^.*errors: \[|\]$/g, ''));
  return new StartupError(`cannot listen on ${address}: ${reason}`, { cause: err });
}

/** The one line for any failure of a command: known ones as phrased, anything else its message. */
export function describeFailure(err: unknown, debug: boolean): string {
  if (err instanceof StartupError || (err instanceof Error && err.name === 'DataDirLockedError')) return `parley: ${oneLine(err.message)}`;
  if (err instanceof Error) return debug && err.stack ? `parley: ${err.stack}` : `parley: ${oneLine(err.message) || err.name}`;
  return `parley: ${oneLine(String(err))}`;
}
