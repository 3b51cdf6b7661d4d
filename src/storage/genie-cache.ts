import { unavailable } from '../errors.js';
import { CACHE_MISS, type KvStore } from '../ports/kv.js';
import { type Bus } from '../ports/bus.js';
import type { DialogueRow, SessionEvent, StoredSession } from './genie-repo.js';

/** The hash tag keeps every key of one session in one Redis Cluster slot. */
export const hotKey = (sessionId: string) => `genie:{${sessionId}}:hot`;
export const sessionChannel = (sessionId: string) => `genie:{${sessionId}}`;

/** What the bus carries on a session's channel. */
export interface LiveCommit {
  revision: number;
  events: Array<{ kind: SessionEvent['kind']; payload: Record<string, unknown> }>;
}

export type LiveEphemeral =
  | { delta: { utteranceId: string; actor: string; chunkIndex: number; text: string } }
  | { aborted: { utteranceId: string; reason: string } };

interface HotCopy {
  session: StoredSession;
  dialogue: DialogueRow[];
}

/**
 * The hot copy of each session (as stored, before upgrades) and the event fan-out. Nothing here is the
 * record: a miss, a flushed Redis or an unreachable one reads through to Postgres.
 */
export class GenieCache {
  constructor(
    private readonly kv: KvStore,
    private readonly bus: Bus,
  ) {}

  /** The hot copy, or on a miss the token that `put` needs (see KvStore.readCached). */
  async get(sessionId: string): Promise<{ copy: HotCopy | undefined; token: string | undefined }> {
    const { value, token } = await this.kv.readCached(hotKey(sessionId)).catch(() => CACHE_MISS);
    if (!value) return { copy: undefined, token };
    const h = JSON.parse(value) as HotCopy;
    h.session.createdAt = new Date(h.session.createdAt);
    h.session.updatedAt = new Date(h.session.updatedAt);
    for (const d of h.dialogue) d.timestamp = new Date(d.timestamp);
    return { copy: h, token };
  }

  /** Fills the hot copy unless a write fenced it since `token` was read; a failed fill is only a lost fill. */
  async put(copy: HotCopy, token: string | undefined, ttlMs: number): Promise<void> {
    await this.kv.fill(hotKey(copy.session.id), JSON.stringify(copy), token, ttlMs).catch(() => false);
  }

  /** Called after every commit (through afterCommit, which contains its failure; see KvStore.fence). */
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
  async publish(events: readonly SessionEvent[]): Promise<void> {
    const first = events[0];
    if (!first) return;
    const commit: LiveCommit = {
      revision: first.revision,
      events: events.map((e) => ({ kind: e.kind, payload: e.payload })),
    };
    await this.bus.publish(sessionChannel(first.sessionId), JSON.stringify(commit)).catch(() => {});
  }

  /** Uncommitted news (token deltas, aborted utterances): live only, never replayed. */
  async publishEphemeral(sessionId: string, message: LiveEphemeral): Promise<void> {
    await this.bus.publish(sessionChannel(sessionId), JSON.stringify(message)).catch(() => {});
  }
}
