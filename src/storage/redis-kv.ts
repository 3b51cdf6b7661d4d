import { Redis } from 'ioredis';
import type { Bus, FastStore, KvStore, Subscription } from './kv.js';

const connectionOptions = {
  // Fail fast while disconnected instead of queueing: callers fall back to Postgres and health turns
  // NOT_SERVING, rather than requests hanging until Redis returns.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2_000,
  retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  lazyConnect: true,
};

export class RedisKv implements KvStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

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

  async del(...keys: string[]): Promise<void> {
    if (keys.length) await this.redis.del(...keys.map((k) => this.prefix + k));
  }

  async clear(): Promise<void> {
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await this.redis.del(...keys);
    } while (cursor !== '0');
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }
}

/** One subscriber connection per process, fanned out in memory to every local listener of a channel. */
/**
 * One local subscriber. A class rather than closures: tsx (esbuild keepNames) gives every named closure a
 * `name` property, which costs a properties store per closure, and an idle watcher holds its subscription
 * for its whole life.
 */
class LocalSubscription implements Subscription {
  constructor(
    private readonly owner: { release(s: LocalSubscription): Promise<void> },
    readonly channel: string,
    readonly onMessage: (message: string) => void,
    readonly processWide: boolean,
  ) {}

  close(): Promise<void> {
    return this.owner.release(this);
  }
}

export class RedisBus implements Bus {
  private readonly listeners = new Map<string, Set<LocalSubscription>>();
  private readonly reconnectListeners = new Set<() => void>();

  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    private readonly prefix: string,
  ) {
    sub.on('message', (channel: string, message: string) => {
      const subs = this.listeners.get(channel.slice(this.prefix.length));
      if (subs) for (const s of [...subs]) s.onMessage(message);
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

  /** Per channel, how many of its local subscribers are process-wide (not counted by subscribedChannels). */
  private readonly processWide = new Map<string, number>();

  async subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    const processWide = opts?.processWide === true;
    if (processWide) this.processWide.set(channel, (this.processWide.get(channel) ?? 0) + 1);
    let subs = this.listeners.get(channel);
    if (!subs) {
      subs = new Set();
      this.listeners.set(channel, subs);
      await this.sub.subscribe(this.prefix + channel);
    }
    const sub = new LocalSubscription(this, channel, onMessage, processWide);
    subs.add(sub);
    return sub;
  }

  /** LocalSubscription.close. */
  async release(sub: LocalSubscription): Promise<void> {
    const { channel } = sub;
    const subs = this.listeners.get(channel);
    if (!subs?.has(sub)) return;
    if (sub.processWide) {
      const n = (this.processWide.get(channel) ?? 1) - 1;
      if (n > 0) this.processWide.set(channel, n);
      else this.processWide.delete(channel);
    }
    subs.delete(sub);
    if (subs.size === 0) {
      this.listeners.delete(channel);
      await this.sub.unsubscribe(this.prefix + channel).catch(() => {});
    }
  }

  subscribedChannels(): number {
    let n = 0;
    for (const [channel, subs] of this.listeners) if (subs.size > (this.processWide.get(channel) ?? 0)) n++;
    return n;
  }
}

export async function redisStore(url: string, prefix: string): Promise<FastStore> {
  // Auto-pipelining: commands issued in the same tick (many concurrent calls' GETs, SETs and PUBLISHes)
  // go out in one socket write instead of one write each; order and replies are unchanged.
  const main = new Redis(url, { ...connectionOptions, enableAutoPipelining: true });
  // A subscriber connection must queue its SUBSCRIBE commands across reconnects, so it keeps the offline queue.
  const sub = new Redis(url, { ...connectionOptions, enableOfflineQueue: true, maxRetriesPerRequest: null });
  // Errors surface to callers through rejected commands; the event only needs a listener so it is not fatal.
  main.on('error', () => {});
  sub.on('error', () => {});
  await Promise.all([main.connect(), sub.connect()]);
  return {
    kind: 'redis',
    kv: new RedisKv(main, prefix),
    bus: new RedisBus(main, sub, prefix),
    close: async () => {
      main.disconnect();
      sub.disconnect();
    },
  };
}
