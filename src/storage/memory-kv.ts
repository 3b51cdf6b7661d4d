import { FENCE_TTL_MS, type CachedRead, type Keep, type KvStore, type VersionedCopy, type VersionedRead } from '../ports/kv.js';
import { type Bus, type Subscription } from '../ports/bus.js';
import { type FastStore } from '../ports/fast-store.js';
import { LocalFanout } from './local-fanout.js';
import { MemoryDeltaLog } from './memory-deltas.js';

interface Entry {
  value: string;
  expiresAt: number;
}

/** The in-process store of the embedded default: one process, so a Map and local fan-out suffice. */
/** A fenced copy: `generation` counts the fences, so a token is the generation its reader saw. */
interface Cached {
  value: string | undefined;
  generation: number;
  expiresAt: number;
  /** A versioned copy (see KvStore.readVersioned); its items are the newest of its list. */
  versioned?: VersionedCopy | undefined;
  /** Deleted: no fill or advance lands until the entry expires. */
  tombstone?: boolean;
}

/** `copy` without its oldest items while it holds more than `keep` allows (its newest item always stays). */
function trimmed(copy: VersionedCopy, keep: Keep): VersionedCopy {
  let bytes = copy.items.reduce((n, i) => n + Buffer.byteLength(i), 0);
  let drop = 0;
  while (drop < copy.items.length - 1 && (copy.items.length - drop > keep.items || bytes > keep.bytes)) bytes -= Buffer.byteLength(copy.items[drop++]!);
  return drop ? { ...copy, first: copy.first + drop, items: copy.items.slice(drop) } : copy;
}

export class MemoryKv implements KvStore {
  private readonly entries = new Map<string, Entry>();
  private readonly cached = new Map<string, Cached>();
  private sweeps = 0;

  constructor(private readonly now: () => number = Date.now) {}

  // One process holds both the copies and every writer, so nothing is ever lost here: it always vouches.
  async readCached(key: string): Promise<CachedRead> {
    const c = this.live(key);
    return { value: c?.value ?? null, token: String(c?.generation ?? 0) };
  }

  async fill(key: string, value: string, token: string | undefined, ttlMs: number): Promise<boolean> {
    const c = this.live(key);
    if (token === undefined || token !== String(c?.generation ?? 0)) return false;
    this.cached.set(key, { value, generation: c?.generation ?? 0, expiresAt: this.now() + ttlMs });
    if (++this.sweeps % 1024 === 0) this.sweep();
    return true;
  }

  async fence(key: string, opts: { tombstone?: boolean } = {}): Promise<void> {
    const c = this.live(key);
    const tombstone = opts.tombstone || c?.tombstone;
    this.cached.set(key, { value: undefined, generation: (c?.generation ?? 0) + 1, expiresAt: this.now() + FENCE_TTL_MS, ...(tombstone && { tombstone }) });
    if (++this.sweeps % 1024 === 0) this.sweep();
  }

  async readVersioned(key: string, newest: number): Promise<VersionedRead> {
    const c = this.live(key);
    const token = String(c?.generation ?? 0);
    const v = c?.versioned;
    if (!v) return { copy: undefined, heldFrom: 0, token };
    const skip = Math.max(0, v.items.length - newest);
    return { copy: { ...v, first: v.first + skip, items: v.items.slice(skip) }, heldFrom: v.first, token };
  }

  async fillVersioned(key: string, copy: VersionedCopy, token: string | undefined, keep: Keep, ttlMs: number): Promise<boolean> {
    const c = this.live(key);
    if (token === undefined || token !== String(c?.generation ?? 0) || c?.tombstone) return false;
    if (c?.versioned && c.versioned.revision >= copy.revision) return false;
    this.cached.set(key, { value: undefined, generation: c?.generation ?? 0, expiresAt: this.now() + ttlMs, versioned: trimmed(copy, keep) });
    if (++this.sweeps % 1024 === 0) this.sweep();
    return true;
  }

  async advance(key: string, after: number, next: VersionedCopy, keep: Keep, ttlMs: number): Promise<void> {
    const c = this.live(key);
    if (c?.tombstone) return;
    const cur = c?.versioned;
    if (cur && cur.revision >= next.revision) return;
    const contiguous = cur && cur.revision === after && cur.first + cur.items.length === next.first;
    const copy = contiguous ? { ...next, first: cur.first, items: [...cur.items, ...next.items] } : next;
    this.cached.set(key, { value: undefined, generation: (c?.generation ?? 0) + 1, expiresAt: this.now() + ttlMs, versioned: trimmed(copy, keep) });
    if (++this.sweeps % 1024 === 0) this.sweep();
  }

  private live(key: string): Cached | undefined {
    const c = this.cached.get(key);
    if (c && c.expiresAt <= this.now()) {
      this.cached.delete(key);
      return undefined;
    }
    return c;
  }

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
    this.cached.clear();
  }

  async ping(): Promise<void> {}

  size(): number {
    this.sweep();
    return this.entries.size + this.cached.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(k);
    for (const [k, c] of this.cached) if (c.expiresAt <= now) this.cached.delete(k);
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
  return { kind: 'memory', kv: new MemoryKv(), bus: new MemoryBus(), deltas: new MemoryDeltaLog(), close: async () => {} };
}
