import type { Bus, FastStore, KvStore, Subscription } from './kv.js';
import { LocalFanout } from './local-fanout.js';

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

export class MemoryBus implements Bus {
  private readonly fanout = new LocalFanout();

  async publish(channel: string, message: string): Promise<void> {
    // Deliver asynchronously, as Redis would: a publisher never runs subscriber code on its own stack.
    for (const s of this.fanout.subscribers(channel)) queueMicrotask(() => s.onMessage(message));
  }

  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    return this.fanout.subscribe(channel, onMessage, opts?.processWide === true);
  }

  subscribedChannels(): number {
    return this.fanout.subscribedChannels();
  }

  /** An in-process bus never disconnects. */
  onReconnect(): () => void {
    return () => {};
  }
}

export function memoryStore(): FastStore {
  return { kind: 'memory', kv: new MemoryKv(), bus: new MemoryBus(), close: async () => {} };
}
