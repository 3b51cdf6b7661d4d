import { FencedCopies } from '../fenced-copies.js';
import { zodCodec } from '../json-codec.js';
import type { KvStore } from '../ports/kv.js';
import type { Telemetry } from '../ports/telemetry.js';
import { promptCacheKey } from './rules.js';
import { cachedPromptSchema, type PromptRow } from './store.js';

/**
 * Session key → prompt, the PromptHelper cache. Best effort by design: a Redis failure reads as a miss and
 * a failed fill is dropped, because Postgres always has the answer. Fills are fenced (KvStore.readCached),
 * so a fill racing an UpdatePrompt cannot leave the previous version behind.
 */
export class PromptCache {
  private readonly copies: FencedCopies<PromptRow>;

  constructor(
    kv: KvStore,
    private readonly ttlMs: number,
    telemetry?: Telemetry,
  ) {
    this.copies = new FencedCopies(kv, promptCacheKey, zodCodec(cachedPromptSchema), 'prompt', telemetry);
  }

  /** The cached prompt, or on a miss the token that `put` needs (see KvStore.readCached). */
  async get(sessionKey: string): Promise<{ row: PromptRow | undefined; token: string | undefined }> {
    const { value, token } = await this.copies.get(sessionKey);
    return { row: value, token };
  }

  /** Fills unless an update or delete fenced the key since `token` was read. */
  put(row: PromptRow, token: string | undefined): Promise<void> {
    return this.copies.put(row.sessionKey, row, token, this.ttlMs);
  }

  /** Called after every commit that changes or deletes a prompt (through afterCommit; see KvStore.fence). */
  evict(sessionKey: string): Promise<void> {
    return this.copies.evict(sessionKey);
  }

  /** Before a deletion: UNAVAILABLE CACHE_UNAVAILABLE when the copy cannot be fenced (see FencedCopies). */
  evictBeforeDelete(sessionKey: string): Promise<void> {
    return this.copies.evictBeforeDelete(sessionKey, 'prompt');
  }
}
