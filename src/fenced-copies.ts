import { unavailable } from './errors.js';
import { decodeJson, encodeJson } from './json-codec.js';
import { CACHE_MISS, type KvStore } from './ports/kv.js';
import type { Codec } from './ports/unit-of-work.js';
import { noTelemetry, type CacheName, type Telemetry } from './ports/telemetry.js';

/**
 * Fenced JSON copies of rows (see KvStore.readCached): the one cache shape every aggregate uses. Best effort by
 * design: a store that fails reads as a miss and a failed fill is dropped, because Postgres has the answer. A
 * copy that does not decode (another version's, or corrupt) is a miss with no token, so nothing is filled
 * over it until it expires or is fenced. `evict` throws on failure: it runs after a commit, through
 * afterCommit, and the store distrusts its copies until it has re-validated. Every read is counted as a hit
 * or a miss of `cache`, and a failure read as a miss or dropped is reported to `telemetry`.
 */
export class FencedCopies<T> {
  constructor(
    private readonly kv: KvStore,
    private readonly keyOf: (id: string) => string,
    private readonly codec: Codec<T>,
    private readonly cache: CacheName,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {}

  /** The copy, or on a miss the token that `put` needs. */
  async get(id: string): Promise<{ value: T | undefined; token: string | undefined }> {
    const { value, token } = await this.kv.readCached(this.keyOf(id)).catch((err: unknown) => {
      this.telemetry.contained('cache_read', err);
      return CACHE_MISS;
    });
    let decoded: T | undefined;
    try {
      decoded = value ? decodeJson(this.codec, value) : undefined;
    } catch {
      this.telemetry.cacheRead(this.cache, false);
      return { value: undefined, token: undefined };
    }
    this.telemetry.cacheRead(this.cache, decoded !== undefined);
    return { value: decoded, token };
  }

  /** Fills unless a write fenced the key since `token` was read; a failed fill is only a lost fill. */
  async put(id: string, value: T, token: string | undefined, ttlMs: number): Promise<void> {
    await this.kv.fill(this.keyOf(id), encodeJson(this.codec, value), token, ttlMs).catch((err: unknown) => {
      this.telemetry.contained('cache_fill', err);
      return false;
    });
  }

  /** Drops the copy and voids every token handed out for it (after a commit that changed or deleted it). */
  async evict(id: string): Promise<void> {
    await this.kv.fence(this.keyOf(id));
  }

  /**
   * The exception to the after-commit rule, for deletions: the copy holds the content being deleted, and a
   * deletion that succeeded while its copy could not be fenced would leave that content readable until the
   * copy expires. So a deletion fences first and, when the store cannot be reached, fails with UNAVAILABLE
   * having deleted nothing; the caller retries. (It fences again after its commit, through afterCommit.)
   */
  evictBeforeDelete(id: string, what: string): Promise<void> {
    return fenceBeforeDelete(this.kv, this.keyOf(id), what);
  }
}

/** See FencedCopies.evictBeforeDelete: the fence before a deletion, UNAVAILABLE CACHE_UNAVAILABLE when it fails. */
export async function fenceBeforeDelete(kv: KvStore, key: string, what: string, opts?: { tombstone?: boolean }): Promise<void> {
  try {
    await kv.fence(key, opts);
  } catch {
    throw unavailable(`the ${what} cache is unreachable; nothing was deleted, retry later`, 'CACHE_UNAVAILABLE');
  }
}
