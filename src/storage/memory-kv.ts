import type { Bus, FastStore, KvStore, Subscription } from './kv.js';

interface Entry {
  value: string;
  expiresAt: number;
}

/** The in-process store of the embedded default: one process, so a Map and local fan-out suffice. */
export class MemoryKv implements KvStore {
  private readonly entries = new Map<string, Entry>();
  private sweeps = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async get(key: string): Promise<string | null> {
    const e = this.entries.get(key);
    if (!e) return null;
    if (e.expiresAt <= this.now()) {
      this.entries.delete(key);
      return null;
    }
    return e.value;
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    this.entries.set(key, { value, expiresAt: ttlMs ? this.now() + ttlMs : Infinity });
    // Expired entries nobody reads again would otherwise stay forever; sweep now and then.
    if (++this.sweeps % 1024 === 0) this.sweep();
  }

  async setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean> {
    if ((await this.get(key)) !== null) return false;
    await this.set(key, value, ttlMs);
    return true;
  }

  async del(...keys: string[]): Promise<void> {
    for (const k of keys) this.entries.delete(k);
  }

  async clear(): Promise<void> {
    this.entries.clear();
  }

  async ping(): Promise<void> {}

  size(): number {
    this.sweep();
    return this.entries.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
  }
}

/** One local subscriber (a class rather than closures, as in redis-kv.ts). */
class LocalSubscription implements Subscription {
  constructor(
    private readonly owner: MemoryBus,
    readonly channel: string,
    readonly onMessage: (message: string) => void,
    readonly processWide: boolean,
  ) {}

  close(): Promise<void> {
    return this.owner.release(this);
  }
}

export class MemoryBus implements Bus {
  private readonly channels = new Map<string, Set<LocalSubscription>>();

  async publish(channel: string, message: string): Promise<void> {
    const subs = this.channels.get(channel);
    if (!subs) return;
    // Deliver asynchronously, as Redis would: a publisher never runs subscriber code on its own stack.
    for (const s of [...subs]) queueMicrotask(() => s.onMessage(message));
  }

  /** Per channel, how many of its local subscribers are process-wide (not counted by subscribedChannels). */
  private readonly processWide = new Map<string, number>();

  async subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    const processWide = opts?.processWide === true;
    if (processWide) this.processWide.set(channel, (this.processWide.get(channel) ?? 0) + 1);
    let subs = this.channels.get(channel);
    if (!subs) this.channels.set(channel, (subs = new Set()));
    const sub = new LocalSubscription(this, channel, onMessage, processWide);
    subs.add(sub);
    return sub;
  }

  /** LocalSubscription.close. */
  async release(sub: LocalSubscription): Promise<void> {
    const { channel } = sub;
    const subs = this.channels.get(channel);
    if (!subs?.has(sub)) return;
    if (sub.processWide) {
      const n = (this.processWide.get(channel) ?? 1) - 1;
      if (n > 0) this.processWide.set(channel, n);
      else this.processWide.delete(channel);
    }
    subs.delete(sub);
    if (subs.size === 0) this.channels.delete(channel);
  }

  subscribedChannels(): number {
    let n = 0;
    for (const [channel, subs] of this.channels) if (subs.size > (this.processWide.get(channel) ?? 0)) n++;
    return n;
  }

  /** An in-process bus never disconnects. */
  onReconnect(): () => void {
    return () => {};
  }
}

export function memoryStore(): FastStore {
  return { kind: 'memory', kv: new MemoryKv(), bus: new MemoryBus(), close: async () => {} };
}
