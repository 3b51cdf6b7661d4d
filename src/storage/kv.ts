/**
 * The fast path and the bus. Two implementations share this contract (test/storage/kv.contract.test.ts):
 * Redis for real deployments and an in-process one for the embedded default. Nothing stored here is the
 * record: any of it may vanish at any moment (flush, restart) and callers rebuild it from Postgres.
 */
export interface KvStore {
  get(key: string): Promise<string | null>;
  /** ttlMs 0 or undefined: no expiry. */
  set(key: string, value: string, ttlMs?: number): Promise<void>;
  /** Sets only when absent; true when this call set it. */
  setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean>;
  del(...keys: string[]): Promise<void>;
  /** Deletes every key this store owns (its prefix); tests use it to simulate a flushed Redis. */
  clear(): Promise<void>;
  ping(): Promise<void>;
}

export interface Subscription {
  close(): Promise<void>;
}

/** Publish/subscribe between server replicas: at-most-once, so subscribers fill gaps from Postgres. */
export interface Bus {
  publish(channel: string, message: string): Promise<void>;
  /**
   * `processWide`: a subscription the process holds for its whole life (cache invalidations opened at
   * startup), which subscribedChannels leaves out.
   */
  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription>;
  /** Channels with at least one local subscriber other than process-wide ones (for leak checks). */
  subscribedChannels(): number;
  /**
   * Called after the bus reconnects: messages published while it was away are gone, so listeners catch up
   * from Postgres. Returns an unregister function.
   */
  onReconnect(fn: () => void): () => void;
}

export interface FastStore {
  kind: 'redis' | 'memory';
  kv: KvStore;
  bus: Bus;
  close(): Promise<void>;
}
