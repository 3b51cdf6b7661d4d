import { Redis } from 'ioredis';
import type { Bus, FastStore, KvStore, Subscription } from './kv.js';
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
