import { decodeJson, encodeJson, zodCodec } from '../json-codec.js';
import { CACHE_MISS, type KvStore } from '../ports/kv.js';
import { promptCacheKey } from './rules.js';
import { promptRowSchema, type PromptRow } from './store.js';

const rowCodec = zodCodec(promptRowSchema);

/**
 * Session key → prompt, the PromptHelper cache. Best effort by design: a Redis failure reads as a miss and
 * a failed fill is dropped, because Postgres always has the answer. Fills are fenced (KvStore.readCached),
 * so a fill racing an UpdatePrompt cannot leave the previous version behind.
 */
export class PromptCache {
  constructor(
    private readonly kv: KvStore,
    private readonly ttlMs: number,
  ) {}

  /** The cached prompt, or on a miss the token that `put` needs (see KvStore.readCached). */
  async get(sessionKey: string): Promise<{ row: PromptRow | undefined; token: string | undefined }> {
    const { value, token } = await this.kv.readCached(promptCacheKey(sessionKey)).catch(() => CACHE_MISS);
    if (!value) return { row: undefined, token };
    try {
      return { row: decodeJson(rowCodec, value), token };
    } catch {
      // A copy this version cannot read is a miss (Postgres has the row); no token, so no fill over it.
      return { row: undefined, token: undefined };
    }
  }

  /** Fills unless an update or delete fenced the key since `token` was read; a failed fill is only a lost fill. */
  async put(row: PromptRow, token: string | undefined): Promise<void> {
    await this.kv.fill(promptCacheKey(row.sessionKey), encodeJson(rowCodec, row), token, this.ttlMs).catch(() => false);
  }

  /** Called after every commit that changes or deletes a prompt (through afterCommit; see KvStore.fence). */
  async evict(sessionKey: string): Promise<void> {
    await this.kv.fence(promptCacheKey(sessionKey));
  }
}
