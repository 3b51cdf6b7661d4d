import { z } from 'zod';
import { FencedCopies } from '../fenced-copies.js';
import { encodeJson, zodCodec } from '../json-codec.js';
import type { KvStore } from '../ports/kv.js';
import type { Bus } from '../ports/bus.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
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
  private readonly copies: FencedCopies<HotCopy>;

  constructor(
    kv: KvStore,
    private readonly bus: Bus,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {
    this.copies = new FencedCopies(kv, hotKey, hotCopyCodec, 'genie_session', telemetry);
  }

  /** The hot copy, or on a miss the token that `put` needs (see KvStore.readCached); a bad copy is a miss. */
  async get(sessionId: string): Promise<{ copy: HotCopy | undefined; token: string | undefined }> {
    const { value, token } = await this.copies.get(sessionId);
    return { copy: value, token };
  }

  /** Fills the hot copy unless a write fenced it since `token` was read. */
  put(copy: HotCopy, token: string | undefined, ttlMs: number): Promise<void> {
    return this.copies.put(copy.session.id, copy, token, ttlMs);
  }

  /** Called after every commit (through afterCommit; see KvStore.fence for what a failure leaves). */
  evict(sessionId: string): Promise<void> {
    return this.copies.evict(sessionId);
  }

  /** Before a deletion: UNAVAILABLE CACHE_UNAVAILABLE when the copy cannot be fenced (see FencedCopies). */
  evictBeforeDelete(sessionId: string): Promise<void> {
    return this.copies.evictBeforeDelete(sessionId, 'session');
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
    await this.bus.publish(sessionChannel(sessionId), encodeJson(busMessageCodec, message)).catch((err: unknown) => this.telemetry.contained('bus_publish_ephemeral', err));
  }
}
