import './harden.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { openDb, migrate, pingDb, poolUsage, type Db } from './storage/db.js';
import type { FastStore } from './ports/fast-store.js';
import { memoryStore } from './storage/memory-kv.js';
import { redisStore, type RedisObserver } from './storage/redis-kv.js';
import { KnexAdminStore } from './storage/admin-store.js';
import { KnexPromptStore } from './storage/prompt-store.js';
import { KnexModelTypeStore, KnexSessionStore } from './storage/genie-store.js';
import { KnexTransferStore } from './storage/genie-transfer-store.js';
import { SessionTransfer } from './genie/transfer.js';
import { GenieCache } from './genie/cache.js';
import { GenieUseCases } from './genie/service.js';
import { genieHandlers } from './transport/genie-handlers.js';
import { genieStreamHandlers } from './transport/genie-stream-handlers.js';
import { transferHandlers } from './transport/transfer-handlers.js';
import { promptStreamHandlers } from './transport/prompt-stream-handlers.js';
import { GenieWatch } from './genie/watch.js';
import { UtteranceRelay } from './genie/utterance-relay.js';
import { KnexSessionEventLog } from './storage/genie-event-log.js';
import { GenieServiceService, type GenieServiceServer } from './gen/parley/genie/v1/genie.js';
import { AdminUseCases } from './admin/service.js';
import { PrincipalCache } from './admin/cache.js';
import { PromptCache } from './prompt/cache.js';
import { PromptUseCases } from './prompt/service.js';
import { PromptWatch } from './prompt/watch.js';
import { KnexUnitOfWork } from './storage/unit-of-work.js';
import { HealthMonitor } from './transport/health.js';
import { GrpcServer } from './transport/server.js';
import { bindService } from './transport/rpc.js';
import { adminAuth, apiKeyAuth } from './transport/authenticate.js';
import { adminHandlers } from './transport/admin-handlers.js';
import { promptHandlers } from './transport/prompt-handlers.js';
import { promptImportHandlers } from './transport/prompt-import-handlers.js';
import { AdminServiceService, type AdminServiceServer } from './gen/parley/admin/v1/admin.js';
import { PromptServiceService, type PromptServiceServer } from './gen/parley/prompt/v1/prompt.js';
import { EndUserServiceService, type EndUserServiceServer } from './gen/parley/enduser/v1/enduser.js';
import { endUserHandlers } from './transport/enduser-handlers.js';
import { EndUserErasure } from './enduser/erasure.js';
import { Metrics } from './metrics.js';
import { Limits, type LimitsConfig } from './transport/limits.js';
import { Maintenance } from './maintenance/purge.js';
import { ServerTls } from './transport/tls.js';
import { noTelemetry, type Telemetry } from './ports/telemetry.js';
import { startMetricsEndpoint } from './transport/metrics-endpoint.js';

export interface App {
  config: Config;
  db: Db;
  store: FastStore;
  health: HealthMonitor;
  server: GrpcServer;
  /** Per-account limits of this replica, and what they hold now. */
  limits: Limits;
  /** This app's Prometheus registry and what records into it (calls, streams, caches, bus, pool, refusals…). */
  metrics: Metrics;
  /** The bound port of the metrics endpoint; undefined when PARLEY_METRICS_LISTEN is unset. */
  metricsPort: number | undefined;
  /** The bound port (useful with PARLEY_LISTEN=…:0). */
  port: number;
  /** TLS of the gRPC port (reload on SIGHUP); undefined when serving plaintext. */
  tls: ServerTls | undefined;
  stop(): Promise<void>;
}

export async function openStorage(config: Config, redisObserver?: RedisObserver): Promise<{ db: Db; store: FastStore }> {
  const db = openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const store = config.redisUrl ? await redisStore(config.redisUrl, config.redisPrefix, { cluster: config.redisCluster, observer: redisObserver }) : memoryStore();
  return { db, store };
}

/** The prompt use cases over opened storage (one store); the server and `parley purge` both build them here. */
export function promptUseCases(db: Db, store: FastStore, config: Config, telemetry: Telemetry = noTelemetry): PromptUseCases {
  const prompts = new KnexPromptStore(db);
  return new PromptUseCases({
    store: prompts,
    directory: prompts,
    cache: new PromptCache(store.kv, config.promptCacheTtlMs, telemetry),
    unitOfWork: new KnexUnitOfWork(db),
    bus: store.bus,
    telemetry,
  });
}

export function limitsConfig(config: Config): LimitsConfig {
  return {
    streamsPerAccount: config.accountMaxStreams,
    utteranceBytesPerAccount: config.accountMaxUtteranceBytes,
    utteranceBytesPerUtterance: config.maxUtteranceBytes,
    clientStreamIdleMs: config.clientStreamIdleMs,
    requestsPerSecond: config.accountRequestRate,
    requestBurst: config.accountRequestBurst,
  };
}

/** Genie's use cases over opened storage (not subscribed to the bus; startApp starts them). */
export function genieUseCases(db: Db, store: FastStore, telemetry: Telemetry = noTelemetry, cache = new GenieCache(store.kv, store.bus, telemetry)): GenieUseCases {
  return new GenieUseCases({ types: new KnexModelTypeStore(db), sessions: new KnexSessionStore(db), cache, unitOfWork: new KnexUnitOfWork(db), bus: store.bus, telemetry });
}

/** Retention over opened storage; the server's admin RPC and `parley purge` both build it here. */
/** ExportSession and ImportSession's use cases over Postgres. */
export function sessionTransfer(db: Db): SessionTransfer {
  return new SessionTransfer({ types: new KnexModelTypeStore(db), sessions: new KnexSessionStore(db), transfer: new KnexTransferStore(db), unitOfWork: new KnexUnitOfWork(db) });
}

export function maintenance(db: Db, store: FastStore, config: Config, prompts = promptUseCases(db, store, config), genie = genieUseCases(db, store)): Maintenance {
  return new Maintenance(prompts, genie);
}

/** The composition root: storage → domain → transport. Nothing else wires components together. */
export async function startApp(config: Config, logger: Logger): Promise<App> {
  // Bad TLS files stop start-up before any storage is opened.
  const tls = config.tls ? await ServerTls.load(config.tls, logger) : undefined;
  // Metrics next: storage reports into them from its first connection. Process metrics only when scraped.
  const metrics = new Metrics({ logger, processMetrics: config.metricsListen !== undefined });
  const { telemetry } = metrics;
  // Bound before storage opens, so an address in use stops start-up with nothing to close.
  const endpoint = config.metricsListen ? await startMetricsEndpoint(config.metricsListen, metrics, logger) : undefined;
  const { db, store: opened } = await openStorage(config, { onError: (connection) => metrics.redisError(connection) });
  const store: FastStore = { ...opened, bus: metrics.observeBus(opened.bus) };
  metrics.observePool(() => poolUsage(db));
  await migrate(db);

  const prompts = promptUseCases(db, store, config, telemetry);
  const admin = new AdminUseCases({
    store: new KnexAdminStore(db),
    unitOfWork: new KnexUnitOfWork(db),
    principals: new PrincipalCache(store.kv, store.bus, { telemetry }),
    telemetry,
    // A deleted user profile, LLM client or account takes its prompts with it (foreign keys).
    onPromptsDeleted: (gone) => prompts.forgetDeleted(gone),
  });
  await admin.start();

  const genieCache = new GenieCache(store.kv, store.bus, telemetry);
  const genie = genieUseCases(db, store, telemetry, genieCache);
  await genie.start();
  // A delta log outlives its last delta by more than a worker may stay silent mid-utterance.
  const relay = new UtteranceRelay(store.bus, store.deltas, 2 * config.clientStreamIdleMs, telemetry);
  const genieWatch = new GenieWatch(genie, new KnexSessionEventLog(db), relay, store.bus, config.watchBufferSize, telemetry);

  const limits = new Limits(limitsConfig(config), { logger, metrics });
  const callerAuth = apiKeyAuth((secret) => admin.principalOf(secret));
  const bindings = [
    bindService<AdminServiceServer>({ name: 'parley.admin.v1.AdminService', definition: AdminServiceService, handlers: adminHandlers(admin, maintenance(db, store, config, prompts, genie)), authenticate: adminAuth(config.adminToken) }),
    bindService<PromptServiceServer>({ name: 'parley.prompt.v1.PromptService', definition: PromptServiceService, handlers: { ...promptHandlers(prompts), ...promptStreamHandlers(new PromptWatch(prompts, store.bus, config.watchBufferSize, telemetry)), ...promptImportHandlers(prompts, limits) }, authenticate: callerAuth }),
    bindService<GenieServiceServer>({ name: 'parley.genie.v1.GenieService', definition: GenieServiceService, handlers: { ...genieHandlers(genie), ...genieStreamHandlers(genie, genieWatch, limits), ...transferHandlers(sessionTransfer(db), limits) }, authenticate: callerAuth }),
    // The gateway's own key erases its end users: the account's caller, not the admin token.
    bindService<EndUserServiceServer>({ name: 'parley.enduser.v1.EndUserService', definition: EndUserServiceService, handlers: endUserHandlers(new EndUserErasure(genie, prompts)), authenticate: callerAuth }),
  ];
  const health = new HealthMonitor(
    [
      { name: 'postgres', check: () => pingDb(db) },
      { name: 'redis', check: () => store.kv.ping() },
    ],
    bindings.map((b) => b.name),
  );
  await health.start();
  const server = new GrpcServer(bindings, health, { maxMessageBytes: config.maxMessageBytes, maxStreamsPerConnection: config.maxStreamsPerConnection, logger, limits, metrics, credentials: tls?.credentials });
  const port = await server.listen(config.listen);
  logger.info('listening', {
    address: config.listen.replace(/:\d+$/, `:${port}`),
    postgres: config.databaseUrl ? 'external' : 'embedded (PGlite)',
    redis: config.redisUrl ? (config.redisCluster ? 'external (cluster)' : 'external') : 'embedded (in-process)',
    ...(tls ? tls.describe() : { tls: 'off' }),
  });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= closeAll(
      [
        ['tls file polling', async () => tls?.close()],
        ['grpc server', () => server.shutdown(config.shutdownGraceMs)],
        ['metrics endpoint', async () => endpoint?.close()],
        ['api key revocation subscription', () => admin.stop()],
        ['model type subscription', () => genie.stop()],
        ['redis', () => store.close()],
        ['postgres pool', () => db.destroy()],
      ],
      config.shutdownGraceMs + CLOSE_DEADLINE_MS,
      logger,
    ));
  return { config, db, store, health, server, limits, metrics, metricsPort: endpoint?.port, port, tls, stop };
}

/**
 * How long closing may take beyond the grace period. A stop must end whatever is in flight: a hung Redis
 * (an UNSUBSCRIBE that never answers), a Postgres query that never returns or a stream that never ends
 * would otherwise keep the process alive with its connections open.
 */
export const CLOSE_DEADLINE_MS = 5_000;

/**
 * Runs the close steps in order, all within `deadlineMs`; past it, the steps still running are abandoned
 * and logged (the process exits after stop regardless; see main.ts), and the remaining steps still run
 * with no wait, so Redis connections are dropped even when an earlier step hung.
 */
async function closeAll(steps: Array<[string, () => Promise<void>]>, deadlineMs: number, logger: Logger): Promise<void> {
  const until = Date.now() + deadlineMs;
  const abandoned: string[] = [];
  for (const [name, run] of steps) {
    let timer: NodeJS.Timeout | undefined;
    const left = Math.max(until - Date.now(), 0);
    const done = await Promise.race([
      run().then(
        () => true,
        (err: unknown) => {
          logger.warn('shutdown step failed', { step: name, error: err instanceof Error ? err.message : String(err) });
          return true;
        },
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), left))),
    ]);
    clearTimeout(timer);
    if (!done) abandoned.push(name);
  }
  if (abandoned.length) logger.warn('shutdown deadline passed; forced close', { deadlineMs, stillOpen: abandoned });
}
