/** What `readCached` returns: the copy (null on a miss) and, on a miss, the token a fill must present. */
export interface CachedRead {
  value: string | null;
  /** Undefined: do not fill (the store cannot vouch for what it holds right now). */
  token: string | undefined;
}

export const CACHE_MISS: CachedRead = Object.freeze({ value: null, token: undefined });

/**
 * A versioned copy: a head (JSON) at a revision and a window of the newest items of an append-only list the
 * head belongs to (a session and its dialogue). Items are numbered from 1 by their position in the list.
 */
export interface VersionedCopy {
  head: string;
  revision: number;
  /** Position of items[0]; the items are consecutive. With no items, one past the list's last position. */
  first: number;
  items: string[];
}

/** What `readVersioned` returns: the copy (its newest items only) or, on a miss, the token a fill presents. */
export interface VersionedRead {
  copy: VersionedCopy | undefined;
  /** The position of the first item the copy holds (may be before `copy.first` when fewer were asked for). */
  heldFrom: number;
  token: string | undefined;
}

/** The bound of a versioned copy's items: at most `items` of them, and their UTF-8 bytes at most `bytes`. */
export interface Keep {
  items: number;
  bytes: number;
}

export const VERSIONED_MISS: VersionedRead = Object.freeze({ copy: undefined, heldFrom: 0, token: undefined });

/**
 * How long a fence outlives the copy it dropped: longer than any read that took a token before the fence
 * can take to reach its fill (a fence that expired would let such a fill land).
 */
export const FENCE_TTL_MS = 10 * 60_000;

/**
 * The fast path and the bus. Two implementations share this contract (test/storage/kv.contract.test.ts):
 * Redis for real deployments and an in-process one for the embedded default. Nothing stored here is the
 * record: any of it may vanish at any moment (flush, restart) and callers rebuild it from Postgres.
 */
export interface KvStore {
  /**
   * Fenced copies of Postgres rows. `readCached` returns the copy, or on a miss a token; a reader that then
   * reads Postgres hands the token to `fill`, which stores the copy only if no `fence` of the key came in
   * between. A writer fences after its commit, so a fill that read before the commit can never land after
   * the fence and leave the old copy behind. A miss with no token means "do not fill": the store cannot
   * vouch for its contents right now (Redis: after a reconnect, a restart, a flush or a failed fence, until
   * it has re-validated), and callers read through to Postgres.
   */
  readCached(key: string): Promise<CachedRead>;
  /**
   * Stores `value` unless the key was fenced since `token` was handed out; true when it did. A copy stored
   * with a token of a cache epoch that has since ended is never served.
   */
  fill(key: string, value: string, token: string | undefined, ttlMs: number): Promise<boolean>;
  /**
   * Drops the key's copy and voids every token handed out for it. When it throws, the store has already
   * stopped trusting its copies (every read misses) until it has re-validated; callers need not repair.
   */
  fence(key: string, opts?: { tombstone?: boolean }): Promise<void>;
  /**
   * Versioned copies: fenced like the copies above, and also ordered by revision. `readVersioned` returns the
   * head and at most `newest` of the newest items. `fillVersioned` stores a copy read from Postgres unless
   * the key was fenced (or tombstoned) since `token`, or holds the same or a newer revision. `advance` is
   * the write-through after a commit: it moves the copy from `after` to `next.revision`, appending
   * `next.items` when the copy is exactly at `after` with no gap in its items, replacing it otherwise, and
   * never moving it back (a late advance of an older revision changes nothing). Every copy keeps at most
   * what `keep` allows (its newest item always). `fence` with `tombstone` also refuses every later fill and advance until it expires (a
   * deleted head must not come back). `advance` throws like `fence` does, with the same consequence.
   */
  readVersioned(key: string, newest: number): Promise<VersionedRead>;
  fillVersioned(key: string, copy: VersionedCopy, token: string | undefined, keep: Keep, ttlMs: number): Promise<boolean>;
  advance(key: string, after: number, next: VersionedCopy, keep: Keep, ttlMs: number): Promise<void>;
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
