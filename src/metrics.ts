import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';
import { clip } from './errors.js';
import type { Bus, Subscription } from './ports/bus.js';
import {
  CACHE_NAMES,
  CONTAINED_FAILURES,
  WATCHER_KINDS,
  type CacheName,
  type ContainedFailure,
  type CutOffReason,
  type Telemetry,
  type WatcherKind,
} from './ports/telemetry.js';

/**
 * Every series parley exports, in one Prometheus registry per app (several servers in one process, as in
 * the tests, never share one). Every label value is fixed by the code that records it — a method path from
 * a service definition, a gRPC status name, a cache or limit name — never a request's value, so the number
 * of series is bounded whatever callers send. The domain reports through the Telemetry port (`telemetry`);
 * transport and storage call the methods below.
 */
export class Metrics {
  readonly registry = new Registry();
  /** What the domain reports (cache reads, contained failures, watchers), recorded here. */
  readonly telemetry: Telemetry;

  private readonly calls = new Counter({ name: 'parley_calls_total', help: 'Calls finished, by method and gRPC status code.', labelNames: ['method', 'code'] as const, registers: [this.registry] });
  private readonly callSeconds = new Histogram({
    name: 'parley_call_duration_seconds',
    help: 'How long calls took, by method (a stream: its whole life).',
    labelNames: ['method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  private readonly streams = new Gauge({ name: 'parley_streams_open', help: 'Streaming calls open now, by method.', labelNames: ['method'] as const, registers: [this.registry] });
  private readonly refusals = new Counter({ name: REFUSALS, help: 'Calls and messages refused by a per-account limit, by reason.', labelNames: ['reason'] as const, registers: [this.registry] });
  private readonly watchers = new Gauge({ name: 'parley_watchers_open', help: 'Watchers (WatchPrompt, WatchSession) open now.', labelNames: ['watcher'] as const, registers: [this.registry] });
  private readonly watcherBuffered = new Histogram({
    name: 'parley_watcher_buffered_updates',
    help: 'Undelivered live updates a watcher had buffered, observed each time one was buffered (how far behind watchers are).',
    labelNames: ['watcher'] as const,
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 10_000, 100_000],
    registers: [this.registry],
  });
  private readonly cutOffs = new Counter({ name: 'parley_watcher_cutoffs_total', help: 'Watchers the server cut off, by reason.', labelNames: ['watcher', 'reason'] as const, registers: [this.registry] });
  private readonly cacheReads = new Counter({ name: 'parley_cache_reads_total', help: 'Cache reads, by cache and result (hit or miss).', labelNames: ['cache', 'result'] as const, registers: [this.registry] });
  private readonly containedFailures = new Counter({
    name: 'parley_contained_failures_total',
    help: 'Cache and bus failures absorbed by design (the call went on without the cache or the bus), by what failed.',
    labelNames: ['what'] as const,
    registers: [this.registry],
  });
  private readonly busPublished = new Counter({ name: 'parley_bus_messages_published_total', help: 'Bus messages published.', registers: [this.registry] });
  private readonly busReceived = new Counter({ name: 'parley_bus_messages_received_total', help: 'Bus messages delivered to local subscribers (one per subscriber).', registers: [this.registry] });
  private readonly busReconnects = new Counter({ name: 'parley_bus_reconnects_total', help: 'Times the bus reconnected (watchers then catch up from Postgres).', registers: [this.registry] });
  private readonly redisErrors = new Counter({ name: 'parley_redis_errors_total', help: 'Errors reported by the Redis connections, by connection.', labelNames: ['connection'] as const, registers: [this.registry] });

  /** When each kind of contained failure was last logged, and how many went unlogged since. */
  private readonly failureLog = new Map<ContainedFailure, { at: number; unlogged: number }>();

  constructor(private readonly opts: { logger: Logger; processMetrics?: boolean; now?: () => number }) {
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
    // Series that exist from the start, so a dashboard shows 0 rather than nothing.
    for (const cache of CACHE_NAMES) for (const result of ['hit', 'miss']) this.cacheReads.inc({ cache, result }, 0);
    for (const what of CONTAINED_FAILURES) this.containedFailures.inc({ what }, 0);
    for (const watcher of WATCHER_KINDS) this.watchers.set({ watcher }, 0);
    for (const connection of ['main', 'sub']) this.redisErrors.inc({ connection }, 0);
    this.telemetry = {
      cacheRead: (cache: CacheName, hit: boolean) => this.cacheReads.inc({ cache, result: hit ? 'hit' : 'miss' }),
      contained: (what: ContainedFailure, err: unknown) => this.contained(what, err),
      watcherOpened: (kind: WatcherKind) => this.watchers.inc({ watcher: kind }),
      watcherClosed: (kind: WatcherKind) => this.watchers.dec({ watcher: kind }),
      watcherBuffered: (kind: WatcherKind, buffered: number) => this.watcherBuffered.observe({ watcher: kind }, buffered),
      watcherCutOff: (kind: WatcherKind, reason: CutOffReason) => this.cutOffs.inc({ watcher: kind, reason }),
    };
  }

  /** One finished call: its method path, its status name, how long it took. */
  callFinished(method: string, code: string, seconds: number): void {
    this.calls.inc({ method, code });
    this.callSeconds.observe({ method }, seconds);
  }

  streamOpened(method: string): void {
    this.streams.inc({ method });
  }

  streamClosed(method: string): void {
    this.streams.dec({ method });
  }

  refused(reason: string): void {
    this.refusals.inc({ reason });
  }

  redisError(connection: 'main' | 'sub'): void {
    this.redisErrors.inc({ connection });
  }

  /** Gauges of the Postgres pool, read when scraped: connections in use, and acquires waiting for one. */
  observePool(read: () => { used: number; pending: number }): void {
    new Gauge({
      name: 'parley_db_pool_connections_in_use',
      help: 'Postgres pool connections in use.',
      registers: [this.registry],
      collect() {
        this.set(read().used);
      },
    });
    new Gauge({
      name: 'parley_db_pool_acquires_pending',
      help: 'Queries waiting for a Postgres pool connection.',
      registers: [this.registry],
      collect() {
        this.set(read().pending);
      },
    });
  }

  /** `bus` with its messages (published, delivered) and reconnects counted. */
  observeBus(bus: Bus): Bus {
    return new ObservedBus(bus, this.busPublished, this.busReceived, this.busReconnects);
  }

  /** The exposition text of every series (Prometheus text format). */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The value of one counter or gauge series now (0 when it was never recorded); for tests and checks. */
  async value(name: string, labels: Readonly<Record<string, string>> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) throw new Error(`no metric ${name}`);
    const { values } = await metric.get();
    const want = Object.entries(labels);
    const found = values.find((v) => {
      const have = Object.entries(v.labels);
      return have.length === want.length && want.every(([k, x]) => Object.hasOwn(v.labels, k) && String(v.labels[k]) === x);
    });
    return found?.value ?? 0;
  }

  /**
   * A failure absorbed by design: counted every time, logged at warn the first time of its kind and then at
   * most once a minute (an outage of Redis fails every cache read; the counter has the totals, and each line
   * says how many went unlogged before it). The error's text is cut short: it is Redis's, never a request's.
   */
  private contained(what: ContainedFailure, err: unknown): void {
    this.containedFailures.inc({ what });
    const now = (this.opts.now ?? Date.now)();
    const last = this.failureLog.get(what);
    if (last && now - last.at < FAILURE_LOG_INTERVAL_MS) {
      last.unlogged++;
      return;
    }
    this.failureLog.set(what, { at: now, unlogged: 0 });
    const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.opts.logger.warn('cache or bus failure contained; the call went on without it', { what, error: clip(error, 200), unloggedBefore: last?.unlogged ?? 0 });
  }
}

/** The counter every limit refusal increments, labelled with its reason. */
export const REFUSALS = 'parley_limit_refusals_total';

const FAILURE_LOG_INTERVAL_MS = 60_000;

/** A Bus that counts what goes through it; everything else is the wrapped bus's. */
class ObservedBus implements Bus {
  constructor(
    private readonly bus: Bus,
    private readonly published: Counter,
    private readonly received: Counter,
    reconnects: Counter,
  ) {
    // The app's bus lives as long as the app: this listener is never removed.
    bus.onReconnect(() => reconnects.inc());
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.bus.publish(channel, message);
    this.published.inc();
  }

  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    const received = this.received;
    return this.bus.subscribe(
      channel,
      (message) => {
        received.inc();
        onMessage(message);
      },
      opts,
    );
  }

  subscribedChannels(): number {
    return this.bus.subscribedChannels();
  }

  onReconnect(fn: () => void): () => void {
    return this.bus.onReconnect(fn);
  }
}
