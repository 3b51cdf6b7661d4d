import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { CACHE_MISS, FENCE_TTL_MS, type CachedRead, type KvStore } from '../ports/kv.js';
import { type Bus, type Subscription } from '../ports/bus.js';
import { type FastStore } from '../ports/fast-store.js';
import { LocalFanout } from './local-fanout.js';

const connectionOptions = {
  // Fail fast while disconnected instead of queueing: callers fall back to Postgres and health turns
  // NOT_SERVING, rather than requests hanging until Redis returns.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2_000,
  retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  lazyConnect: true,
};

// A cached copy is a hash: d (the copy), g (how many fences the key has had) and e (the epoch it was filled
// in). The epoch key names the current epoch as `<run id>:<random>`; a copy from any other epoch reads as a
// miss. Fills, fences and epoch changes are scripts (atomic in Redis); a read is two plain commands sent
// together (see readCached). Every script touches one key, so a Redis Cluster can run it (the copy's key
// carries its session's hash tag; the epoch key lives in a slot of its own).
//
// A fill checks the generation only. It tags the copy with the epoch of its token rather than checking that
// epoch is still current: reads serve only copies of the current epoch, so a fill with an old token lands a
// copy nobody will serve, which is as good as refusing it.
const FILL = `
if (redis.call('HGET', KEYS[1], 'g') or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[3], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;
const FENCE = `
redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('HDEL', KEYS[1], 'd')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;
// Keeps the epoch when asked to and it was made by this very run of Redis; otherwise starts a new one.
const EPOCH = `
local cur = redis.call('GET', KEYS[1])
if ARGV[3] ~= '1' and cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return cur end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]`;

type Scripted = Redis & {
  parleyFill(key: string, epoch: string, generation: string, value: string, ttlMs: number): Promise<number>;
  parleyFence(key: string, ttlMs: number): Promise<number>;
  parleyEpoch(epochKey: string, runId: string, fresh: string, renew: '0' | '1'): Promise<string>;
};

/** While it cannot vouch for its copies, the store retries re-validation this often. */
const REVALIDATE_RETRY_MS = 250;

export class RedisKv implements KvStore {
  private readonly redis: Scripted;
  /**
   * Whether copies may be served. Off from the moment the connection closes or a fence fails (a fence may
   * have been lost, or Redis may come back restarted, flushed, or restored from an old snapshot) until a
   * re-validation has started a new epoch, which turns every copy filled before it into a miss.
   */
  private trusted = false;
  /** Faults seen so far; a re-validation restores trust only if none happened while it ran. */
  private faults = 0;
  private validating: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand('parleyFill', { numberOfKeys: 1, lua: FILL });
    redis.defineCommand('parleyFence', { numberOfKeys: 1, lua: FENCE });
    redis.defineCommand('parleyEpoch', { numberOfKeys: 1, lua: EPOCH });
    this.redis = redis as Scripted;
    redis.on('close', () => this.distrust());
    redis.on('ready', () => this.revalidate());
  }

  /** Establishes the epoch before the first read (keeping the current one if Redis has not restarted). */
  async start(): Promise<void> {
    await this.validate(false);
  }

  stop(): void {
    this.closed = true;
    clearTimeout(this.retry);
  }

  private get epochKey(): string {
    return `${this.prefix}cache:epoch`;
  }

  private distrust(): void {
    this.trusted = false;
    this.faults++;
    this.revalidate();
  }

  private revalidate(): void {
    if (this.closed || this.validating) return;
    this.validating = this.validate(true)
      .then(() => {}, () => {})
      .finally(() => {
        this.validating = undefined;
        if (!this.trusted && !this.closed) {
          clearTimeout(this.retry);
          this.retry = setTimeout(() => this.revalidate(), REVALIDATE_RETRY_MS).unref();
        }
      });
  }

  /** `renew`: start a new epoch whatever the current one is (after any fault). */
  private async validate(renew: boolean): Promise<string> {
    const faults = this.faults;
    const info = await this.redis.info('server');
    const runId = /run_id:(\w+)/.exec(info)?.[1] ?? 'unknown';
    const epoch = await this.redis.parleyEpoch(this.epochKey, runId, `${runId}:${randomBytes(6).toString('hex')}`, renew ? '1' : '0');
    if (this.faults === faults) this.trusted = true;
    return epoch;
  }

  async readCached(key: string): Promise<CachedRead> {
    if (!this.trusted) return CACHE_MISS;
    // One round trip (auto-pipelining sends both in one write, and Redis runs them in order) and no script:
    // cheap plain commands on the hot path. Not atomic, and need not be: a copy tagged with the epoch read
    // first was filled in that epoch, so serving it is what an atomic read at the GET would have done.
    const [epoch, [value, generation, filledIn]] = await Promise.all([
      this.redis.get(this.epochKey),
      this.redis.hmget(this.prefix + key, 'd', 'g', 'e'),
    ]);
    if (epoch === null) {
      // No epoch: Redis was flushed under us (a restart closes the connection, which distrusts first). The
      // copies went with the fences, and tokens of the old epoch cannot fill; a new epoch is enough.
      return { value: null, token: `${await this.validate(false)}|` };
    }
    return { value: filledIn === epoch ? (value ?? null) : null, token: `${epoch}|${generation ?? ''}` };
  }

  async fill(key: string, value: string, token: string | undefined, ttlMs: number): Promise<boolean> {
    if (!this.trusted || token === undefined) return false;
    const bar = token.lastIndexOf('|');
    return (await this.redis.parleyFill(this.prefix + key, token.slice(0, bar), token.slice(bar + 1), value, ttlMs)) === 1;
  }

  async fence(key: string): Promise<void> {
    try {
      await this.redis.parleyFence(this.prefix + key, FENCE_TTL_MS);
    } catch (err) {
      // The old copy may still be there for every replica; stop serving copies until a new epoch voids it.
      this.distrust();
      throw err;
    }
  }

  async get(key: string): Promise<string | null> {
    return this.redis.get(this.prefix + key);
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    if (ttlMs) await this.redis.set(this.prefix + key, value, 'PX', ttlMs);
    else await this.redis.set(this.prefix + key, value);
  }

  async setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean> {
    const r = ttlMs
      ? await this.redis.set(this.prefix + key, value, 'PX', ttlMs, 'NX')
      : await this.redis.set(this.prefix + key, value, 'NX');
    return r === 'OK';
  }

  // One DEL per key: keys of different sessions sit in different cluster slots, and auto-pipelining still
  // sends them in one write.
  async del(...keys: string[]): Promise<void> {
    await Promise.all(keys.map((k) => this.redis.del(this.prefix + k)));
  }

  async clear(): Promise<void> {
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}*`, 'COUNT', 1000);
      cursor = next;
      await Promise.all(keys.map((k) => this.redis.del(k)));
    } while (cursor !== '0');
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }
}

/** One subscriber connection per process, fanned out in memory to every local listener of a channel. */
export class RedisBus implements Bus {
  // One Redis SUBSCRIBE per channel, however many local subscribers it has.
  private readonly fanout = new LocalFanout({
    onFirst: (channel) => this.sub.subscribe(this.prefix + channel).then(() => undefined),
    onLast: (channel) => this.sub.unsubscribe(this.prefix + channel).then(() => undefined, () => undefined),
  });
  private readonly reconnectListeners = new Set<() => void>();

  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    private readonly prefix: string,
  ) {
    sub.on('message', (channel: string, message: string) => {
      for (const s of this.fanout.subscribers(channel.slice(this.prefix.length))) s.onMessage(message);
    });
    // The bus may be built on a connection that is already up; only later 'ready's are reconnects.
    let connectedOnce = sub.status === 'ready';
    // ioredis re-subscribes on reconnect; after its 'ready' the channels are live again, so a catch-up
    // read now cannot miss anything published from here on.
    sub.on('ready', () => {
      if (connectedOnce) {
        const resync = () => {
          for (const fn of [...this.reconnectListeners]) fn();
        };
        resync();
        // 'ready' can precede the re-sent SUBSCRIBEs taking effect; a second catch-up closes that window.
        setTimeout(resync, 250).unref();
      }
      connectedOnce = true;
    });
  }

  onReconnect(fn: () => void): () => void {
    this.reconnectListeners.add(fn);
    return () => this.reconnectListeners.delete(fn);
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.pub.publish(this.prefix + channel, message);
  }

  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    return this.fanout.subscribe(channel, onMessage, opts?.processWide === true);
  }

  subscribedChannels(): number {
    return this.fanout.subscribedChannels();
  }
}

/** What the store reports of its connections: `onError` hears every error event of either connection. */
export interface RedisObserver {
  onError?(connection: 'main' | 'sub', err: Error): void;
}

export async function redisStore(url: string, prefix: string, observer: RedisObserver = {}): Promise<FastStore> {
  // Auto-pipelining: commands issued in the same tick (many concurrent calls' GETs, SETs and PUBLISHes)
  // go out in one socket write instead of one write each; order and replies are unchanged.
  // A command timeout, so a Redis that hangs (rather than refuses) fails calls over to Postgres too.
  const main = new Redis(url, { ...connectionOptions, enableAutoPipelining: true, commandTimeout: 2_000 });
  // A subscriber connection must queue its SUBSCRIBE commands across reconnects, so it keeps the offline queue.
  const sub = new Redis(url, { ...connectionOptions, enableOfflineQueue: true, maxRetriesPerRequest: null });
  // Errors surface to callers through rejected commands; the event only needs a listener so it is not fatal.
  main.on('error', (err: Error) => observer.onError?.('main', err));
  sub.on('error', (err: Error) => observer.onError?.('sub', err));
  await Promise.all([main.connect(), sub.connect()]);
  const kv = new RedisKv(main, prefix);
  await kv.start();
  return {
    kind: 'redis',
    kv,
    bus: new RedisBus(main, sub, prefix),
    close: async () => {
      kv.stop();
      main.disconnect();
      sub.disconnect();
    },
  };
}
