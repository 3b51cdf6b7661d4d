import type { KvStore } from '../storage/kv.js';
import type { PromptRow } from '../storage/prompt-repo.js';
import { promptCacheKey } from './rules.js';

/**
 * Session key → prompt, the PromptHelper cache. Best effort by design: a Redis failure reads as a miss and
 * a failed fill is dropped, because Postgres always has the answer.
 */
export class PromptCache {
  constructor(
    private readonly kv: KvStore,
    private readonly ttlMs: number,
  ) {}

  async get(sessionKey: string): Promise<PromptRow | undefined> {
    const raw = await this.kv.get(promptCacheKey(sessionKey)).catch(() => null);
    if (!raw) return undefined;
    const p = JSON.parse(raw) as PromptRow & { createdAt: string; updatedAt: string };
    return { ...p, createdAt: new Date(p.createdAt), updatedAt: new Date(p.updatedAt) };
  }

  async put(row: PromptRow): Promise<void> {
    await this.kv.set(promptCacheKey(row.sessionKey), JSON.stringify(row), this.ttlMs).catch(() => {});
  }

  /** Unlike fills, evictions must not be lost: a stale entry would outlive the change that made it stale. */
  async evict(sessionKey: string): Promise<void> {
    await this.kv.del(promptCacheKey(sessionKey));
  }
}
