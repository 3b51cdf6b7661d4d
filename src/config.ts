import { z } from 'zod';

const logLevels = ['debug', 'info', 'warn', 'error', 'silent'] as const;

const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:50051');

const url = (protocols: string[]) =>
  z
    .string()
    .url()
    .refine((u) => protocols.some((p) => u.startsWith(`${p}://`)), `must start with ${protocols.join(':// or ')}://`);

const duration = (fallback: string) =>
  z
    .string()
    .regex(/^\d+(ms|s|m|h|d)$/, 'must be a duration such as 500ms, 30s, 10m, 24h or 30d')
    .default(fallback)
    .transform(parseDuration);

/** The environment parley reads; every variable is optional and has an embedded-friendly default. */
export const envSchema = z.object({
  PARLEY_LISTEN: listen.default('127.0.0.1:50051'),
  DATABASE_URL: url(['postgres', 'postgresql']).optional(),
  REDIS_URL: url(['redis', 'rediss']).optional(),
  PARLEY_DATA_DIR: z.string().min(1).default('.parley'),
  PARLEY_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  PARLEY_LOG_LEVEL: z.enum(logLevels).default('info'),
  PARLEY_REDIS_PREFIX: z.string().default('parley:'),
  PARLEY_PROMPT_CACHE_TTL: duration('1h'),
  PARLEY_SHUTDOWN_GRACE: duration('10s'),
  PARLEY_WATCH_BUFFER: z.coerce.number().int().min(1).max(1_000_000).default(1024),
  PARLEY_MAX_MESSAGE_BYTES: z.coerce.number().int().min(1024).max(256 * 1024 * 1024).default(32 * 1024 * 1024),
  PARLEY_ACCOUNT_MAX_STREAMS: z.coerce.number().int().min(1).max(10_000_000).default(1000),
  PARLEY_ACCOUNT_MAX_UTTERANCE_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024 * 1024).default(32 * 1024 * 1024),
  // At most 1 MiB, as the unary writes' utterances: one committed utterance must fit a watch update well under
  // the 4 MiB a gRPC client receives by default.
  PARLEY_MAX_UTTERANCE_BYTES: z.coerce.number().int().min(1024).max(1024 * 1024).default(1024 * 1024),
  PARLEY_CLIENT_STREAM_IDLE: duration('5m').refine((ms) => ms >= 1000, 'must be at least 1s'),
  PARLEY_ACCOUNT_RATE: z.coerce.number().positive().max(1_000_000_000).default(1000),
  PARLEY_ACCOUNT_BURST: z.coerce.number().int().min(1).max(1_000_000_000).default(2000),
  PARLEY_MAX_STREAMS_PER_CONNECTION: z.coerce.number().int().min(1).max(2 ** 31 - 1).default(1000),
  // TLS and mutual TLS on the gRPC port: PEM files, re-read on SIGHUP and when they change.
  PARLEY_TLS_CERT: z.string().min(1).optional(),
  PARLEY_TLS_KEY: z.string().min(1).optional(),
  PARLEY_TLS_CLIENT_CA: z.string().min(1).optional(),
  PARLEY_TLS_RELOAD_INTERVAL: duration('1m').refine((ms) => ms === 0 || ms >= 1000, 'must be 0s (reload on SIGHUP only) or at least 1s'),
  // Metrics: the Prometheus endpoint's own address; unset, there is none.
  PARLEY_METRICS_LISTEN: listen.optional(),
  // Redis Cluster: REDIS_URL names a node of a cluster (more seeds optional; credentials and TLS from REDIS_URL).
  PARLEY_REDIS_CLUSTER: z.enum(['true', 'false']).default('false'),
  PARLEY_REDIS_CLUSTER_SEEDS: z
    .string()
    .regex(/^[A-Za-z0-9.-]+:\d{1,5}(,[A-Za-z0-9.-]+:\d{1,5}){0,31}$/, 'must be host:port[,host:port…] (at most 32)')
    .optional(),
});

export interface Config {
  listen: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  dataDir: string;
  adminToken: string | undefined;
  logLevel: (typeof logLevels)[number];
  redisPrefix: string;
  promptCacheTtlMs: number;
  shutdownGraceMs: number;
  maxMessageBytes: number;
  /** Live updates a watcher may fall behind by before it is cut off with RESOURCE_EXHAUSTED. */
  watchBufferSize: number;
  /** Open streaming calls per account, per replica. */
  accountMaxStreams: number;
  /** StreamUtterance bytes received and not yet committed, summed over an account's open utterances, per replica. */
  accountMaxUtteranceBytes: number;
  /** Bytes of text of one streamed utterance. */
  maxUtteranceBytes: number;
  /** A client stream (StreamUtterance, Chat's requests) that sends nothing this long is ended. */
  clientStreamIdleMs: number;
  /** Requests per second per account, per replica (token bucket refill rate), and the bucket's size. */
  accountRequestRate: number;
  accountRequestBurst: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may have open at once. */
  maxStreamsPerConnection: number;
  // TLS and mutual TLS on the gRPC port
  /** Unset: plaintext (h2c). */
  tls: TlsConfig | undefined;
  // Metrics
  /** host:port of the Prometheus endpoint (GET /metrics); undefined: no endpoint. */
  metricsListen: string | undefined;
  // Redis Cluster
  /** REDIS_URL is a node of a Redis Cluster; `seeds` are more nodes (host:port) to find it through. */
  redisCluster: { seeds: string[] } | undefined;
}

export interface TlsConfig {
  certFile: string;
  keyFile: string;
  /** Set: mutual TLS, every client must present a certificate this CA bundle verifies. */
  clientCaFile: string | undefined;
  /** How often the files are checked for a change (0: only on SIGHUP). */
  reloadIntervalMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

/** Parses the environment; throws a ConfigError naming every bad variable (never echoing its value). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const picked = Object.fromEntries(
    Object.keys(envSchema.shape)
      .filter((k) => env[k] !== undefined && env[k] !== '')
      .map((k) => [k, env[k]]),
  );
  const parsed = envSchema.safeParse(picked);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  // A brace in the prefix would make the hash tag of every key the prefix's: the whole data set in one slot.
  if (e.PARLEY_REDIS_CLUSTER === 'true' && /[{}]/.test(e.PARLEY_REDIS_PREFIX)) {
    throw new ConfigError(['PARLEY_REDIS_PREFIX: must not contain { or } with PARLEY_REDIS_CLUSTER=true (keys carry their own hash tags)']);
  }
  if (e.PARLEY_REDIS_CLUSTER === 'true' && !e.REDIS_URL) throw new ConfigError(['PARLEY_REDIS_CLUSTER: needs REDIS_URL naming a node of the cluster']);
  if (e.PARLEY_REDIS_CLUSTER_SEEDS && e.PARLEY_REDIS_CLUSTER !== 'true') throw new ConfigError(['PARLEY_REDIS_CLUSTER_SEEDS: only with PARLEY_REDIS_CLUSTER=true']);
  return {
    listen: e.PARLEY_LISTEN,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    dataDir: e.PARLEY_DATA_DIR,
    adminToken: e.PARLEY_ADMIN_TOKEN,
    logLevel: e.PARLEY_LOG_LEVEL,
    redisPrefix: e.PARLEY_REDIS_PREFIX,
    promptCacheTtlMs: e.PARLEY_PROMPT_CACHE_TTL,
    shutdownGraceMs: e.PARLEY_SHUTDOWN_GRACE,
    maxMessageBytes: e.PARLEY_MAX_MESSAGE_BYTES,
    watchBufferSize: e.PARLEY_WATCH_BUFFER,
    accountMaxStreams: e.PARLEY_ACCOUNT_MAX_STREAMS,
    accountMaxUtteranceBytes: e.PARLEY_ACCOUNT_MAX_UTTERANCE_BYTES,
    maxUtteranceBytes: e.PARLEY_MAX_UTTERANCE_BYTES,
    clientStreamIdleMs: e.PARLEY_CLIENT_STREAM_IDLE,
    accountRequestRate: e.PARLEY_ACCOUNT_RATE,
    accountRequestBurst: e.PARLEY_ACCOUNT_BURST,
    maxStreamsPerConnection: e.PARLEY_MAX_STREAMS_PER_CONNECTION,
    // TLS and mutual TLS on the gRPC port
    tls: tlsConfig(e),
    // Metrics
    metricsListen: e.PARLEY_METRICS_LISTEN,
    // Redis Cluster
    redisCluster: e.PARLEY_REDIS_CLUSTER === 'true' ? { seeds: e.PARLEY_REDIS_CLUSTER_SEEDS?.split(',') ?? [] } : undefined,
  };
}

/** A certificate without its key (or the reverse) is a mistake, not a request for plaintext. */
function tlsConfig(e: z.infer<typeof envSchema>): TlsConfig | undefined {
  const problems: string[] = [];
  if (e.PARLEY_TLS_CERT && !e.PARLEY_TLS_KEY) problems.push('PARLEY_TLS_KEY: must be set with PARLEY_TLS_CERT (the private key of that certificate)');
  if (e.PARLEY_TLS_KEY && !e.PARLEY_TLS_CERT) problems.push('PARLEY_TLS_CERT: must be set with PARLEY_TLS_KEY (the certificate of that key)');
  if (e.PARLEY_TLS_CLIENT_CA && !(e.PARLEY_TLS_CERT && e.PARLEY_TLS_KEY)) problems.push('PARLEY_TLS_CLIENT_CA: needs PARLEY_TLS_CERT and PARLEY_TLS_KEY (mutual TLS is TLS first)');
  if (problems.length) throw new ConfigError(problems);
  if (!e.PARLEY_TLS_CERT || !e.PARLEY_TLS_KEY) return undefined;
  return { certFile: e.PARLEY_TLS_CERT, keyFile: e.PARLEY_TLS_KEY, clientCaFile: e.PARLEY_TLS_CLIENT_CA, reloadIntervalMs: e.PARLEY_TLS_RELOAD_INTERVAL };
}

const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `30s` → 30000. Accepts exactly the forms the schema's regex admits. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw new Error(`not a duration: ${text}`);
  return Number(m[1]) * unitMs[m[2] as keyof typeof unitMs];
}
