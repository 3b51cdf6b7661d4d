import type { Bus } from './ports/bus.js';

/**
 * A small in-process cache in front of Redis or Postgres for values that change rarely and are read on every
 * call (API-key principals, model type versions). Bounded (least recently used entries go first), every
 * entry expires after `ttlMs`, and invalidations bump a generation so that a fill which started reading
 * before an invalidation cannot store what it read (`token()` before the read, `set(…, token)` after).
 *
 * Being per process, it needs invalidations from the other replicas: see `invalidateOnBus`. The bus is
 * at-most-once, so the TTL is what bounds staleness when a message is lost; a bus reconnect (messages may
 * have been lost while it was away) clears everything.
 */
export class LocalCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
  private generation = 0;

  constructor(private readonly opts: { maxEntries: number; ttlMs: number; now?: () => number }) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    // Most recently used last: Map iteration order is insertion order.
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /** Take this before reading the value from its source; pass it to `set`. */
  token(): number {
    return this.generation;
  }

  /** Stores `value` unless something was invalidated since `token` was taken. */
  set(key: string, value: V, token: number): void {
    if (token !== this.generation) return;
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt: this.now() + this.opts.ttlMs });
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.generation++;
    this.entries.delete(key);
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The message on an invalidation channel that clears a whole cache. */
export const INVALIDATE_ALL = '*' as const;

/** How a message on an invalidation channel names what to drop: keys, or the whole cache. */
export type KeysOf = (message: string) => readonly string[] | typeof INVALIDATE_ALL;

/** The plain form: each message is one key to drop (or INVALIDATE_ALL). */
const oneKey: KeysOf = (message) => (message === INVALIDATE_ALL ? INVALIDATE_ALL : [message]);

/**
 * Subscribes `cache` to `channel`: each message names keys to drop (or INVALIDATE_ALL), published by whichever
 * replica made the change. A reconnect of the bus clears the cache, as messages may have been lost meanwhile.
 */
export async function invalidateOnBus(bus: Bus, channel: string, cache: LocalCache<unknown>, keysOf: KeysOf = oneKey): Promise<() => Promise<void>> {
  const drop = (message: string) => {
    const keys = keysOf(message);
    if (keys === INVALIDATE_ALL) cache.clear();
    else for (const key of keys) cache.delete(key);
  };
  const sub = await bus.subscribe(channel, drop, { processWide: true });
  const off = bus.onReconnect(() => cache.clear());
  return async () => {
    off();
    await sub.close();
  };
}
