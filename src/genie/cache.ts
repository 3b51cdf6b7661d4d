import { z } from 'zod';
import { unavailable } from '../errors.js';
import { decodeJson, encodeJson, zodCodec } from '../json-codec.js';
import { CACHE_MISS, type KvStore } from '../ports/kv.js';
import type { Bus } from '../ports/bus.js';
import type { Codec } from '../ports/unit-of-work.js';
import { busMessageCodec, commitMessage, sessionChannel, type EphemeralEvent, type SessionCommit } from './events.js';
import { dialogueRowSchema, storedSessionSchema, type DialogueRow, type StoredSession } from './store.js';

/** The hash tag keeps every key of one session in one Redis Cluster slot. */
export const hotKey = (sessionId: string) => `genie:{${sessionId}}:hot`;

export interface HotCopy {
  session: StoredSession;
  dialogue: DialogueRow[];
}

const hotCopySchema: z.ZodType<HotCopy> = z.object({ session: storedSessionSchema, dialogue: z.array(dialogueRowSchema) });
const hotCopyCodec: Codec<HotCopy> = zodCodec(hotCopySchema);

/**
 * The hot copy of each session (as stored, before upgrades) and the session channels. Nothing here is the
 * record: a miss, a flushed Redis or an unreachable one reads through to Postgres. Work after a commit
 * (evict, publish) throws on failure; the use cases run it through afterCommit, which contains it.
 */
export class GenieCache {
  constructor(
    private readonly kv: KvStore,
    private readonly bus: Bus,
  ) {}

  /** The hot copy, or on a miss the token that `put` needs (see KvStore.readCached); a bad copy is a miss. */
  async get(sessionId: string): Promise<{ copy: HotCopy | undefined; token: string | undefined }> {
    const { value, token } = await this.kv.readCached(hotKey(sessionId)).catch(() => CACHE_MISS);
    if (!value) return { copy: undefined, token };
    try {
      return { copy: decodeJson(hotCopyCodec, value), token };
    } catch {
      return { copy: undefined, token: undefined };
    }
  }

  /** Fills the hot copy unless a write fenced it since `token` was read; a failed fill is only a lost fill. */
  async put(copy: HotCopy, token: string | undefined, ttlMs: number): Promise<void> {
    await this.kv.fill(hotKey(copy.session.id), encodeJson(hotCopyCodec, copy), token, ttlMs).catch(() => false);
  }

  /** Called after every commit (through afterCommit; see KvStore.fence for what a failure leaves). */
  async evict(sessionId: string): Promise<void> {
    await this.kv.fence(hotKey(sessionId));
  }

  /** Eviction for deletions, which must not leave a copy behind: UNAVAILABLE when the store cannot be reached. */
  async evictOrFail(sessionId: string): Promise<void> {
    try {
      // A fence, not a plain delete: a read that started before the deletion must not fill the copy back.
      await this.kv.fence(hotKey(sessionId));
    } catch {
      throw unavailable('the session cache is unreachable; nothing was deleted, retry later', 'CACHE_UNAVAILABLE');
    }
  }

  /**
   * At-most-once fan-out after commit, one message per revision (all of its events), so a watcher sees a
   * revision whole; the event log in Postgres is what a watcher replays when a message is lost.
   */
  async publish(sessionId: string, commit: SessionCommit): Promise<void> {
    if (commit.events.length === 0) return;
    await this.bus.publish(sessionChannel(sessionId), encodeJson(busMessageCodec, commitMessage(commit)));
  }

  /** Uncommitted news (token deltas, aborted utterances): live only, never replayed, so a lost one is lost. */
  async publishEphemeral(sessionId: string, message: EphemeralEvent): Promise<void> {
    await this.bus.publish(sessionChannel(sessionId), encodeJson(busMessageCodec, message)).catch(() => {});
  }
}
