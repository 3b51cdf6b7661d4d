import { AppError } from '../errors.js';
import type { Bus, KvStore } from './kv.js';
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

  async get(sessionId: string): Promise<HotCopy | undefined> {
    const raw = await this.kv.get(hotKey(sessionId)).catch(() => null);
    if (!raw) return undefined;
    const h = JSON.parse(raw) as HotCopy;
    h.session.createdAt = new Date(h.session.createdAt);
    h.session.updatedAt = new Date(h.session.updatedAt);
    for (const d of h.dialogue) d.timestamp = new Date(d.timestamp);
    return h;
  }

  async put(copy: HotCopy, ttlMs: number): Promise<void> {
    await this.kv.set(hotKey(copy.session.id), JSON.stringify(copy), ttlMs).catch(() => {});
  }

  /**
   * Called after every commit. A failed eviction is swallowed rather than failing an RPC whose change is
   * already committed (a retry would apply it twice); the TTL bounds how long a stale copy can live.
   */
  async evict(sessionId: string): Promise<void> {
    await this.kv.del(hotKey(sessionId)).catch(() => {});
  }

  /** Eviction for deletions, which must not leave a copy behind: UNAVAILABLE when the store cannot be reached. */
  async evictOrFail(sessionId: string): Promise<void> {
    try {
      await this.kv.del(hotKey(sessionId));
    } catch {
      throw new AppError('UNAVAILABLE', 'the session cache is unreachable; nothing was deleted, retry later');
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
