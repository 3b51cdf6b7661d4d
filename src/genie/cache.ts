import { fenceBeforeDelete } from '../fenced-copies.js';
import { decodeJson, encodeJson, zodCodec } from '../json-codec.js';
import { VERSIONED_MISS, type KvStore } from '../ports/kv.js';
import type { Bus } from '../ports/bus.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import type { Codec } from '../ports/unit-of-work.js';
import { busMessageCodec, commitMessage, sessionChannel, type SessionCommit } from './events.js';
import { dialogueRowSchema, hotSessionSchema, type DialogueRow, type StoredSession } from './store.js';

/** The hash tag keeps every key of one session in one Redis Cluster slot. */
export const hotKey = (sessionId: string) => `genie:{${sessionId}}:hot`;

/**
 * How many of the newest dialogue elements a hot copy keeps: what a gateway reads back for its next prompt,
 * and the bound of the copy whatever the dialogue's length (older elements are read from Postgres).
 */
export const HOT_ELEMENTS = 100;
/** And at most this much of their JSON (the newest element always stays, up to the 1 MiB an utterance may be). */
export const HOT_BYTES = 512 * 1024;
const KEEP = { items: HOT_ELEMENTS, bytes: HOT_BYTES };

export interface HotCopy {
  session: StoredSession;
  /** The newest elements the read asked for that the copy holds, oldest first. */
  dialogue: DialogueRow[];
  /** Whether `dialogue` is everything the read asked for (the newest min(asked, dialogue length) elements). */
  complete: boolean;
}

// A copy written before token counts were kept does not decode: a miss, read from Postgres.
const sessionCodec: Codec<StoredSession> = zodCodec(hotSessionSchema);
const elementCodec: Codec<DialogueRow> = zodCodec(dialogueRowSchema);

/**
 * The hot copy of each session (its head as stored, before upgrades, and its newest elements) and the
 * session channels. Nothing here is the record: a miss, a flushed Redis or an unreachable one reads through
 * to Postgres. After every commit the writer advances the copy to its revision (write-through, so the read
 * after a write is a hit; a late writer cannot move it back); a deletion tombstones it. Work after a commit
 * throws on failure; the use cases run it through afterCommit, which contains it.
 */
export class GenieCache {
  constructor(
    private readonly kv: KvStore,
    private readonly bus: Bus,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {}

  /**
   * The session and up to its `newest` elements (Infinity: all it holds), or on a miss the token that `put`
   * needs. A copy that does not decode is a miss without a token (nothing is filled over it).
   */
  async get(sessionId: string, newest: number): Promise<{ copy: HotCopy | undefined; token: string | undefined }> {
    const asked = Math.min(newest, HOT_ELEMENTS);
    const { copy, token } = await this.kv.readVersioned(hotKey(sessionId), asked).catch((err: unknown) => {
      this.telemetry.contained('cache_read', err);
      return VERSIONED_MISS;
    });
    if (!copy) {
      this.telemetry.cacheRead('genie_session', false);
      return { copy: undefined, token };
    }
    let hot: HotCopy;
    try {
      const session = decodeJson(sessionCodec, copy.head);
      const dialogue = copy.items.map((item) => decodeJson(elementCodec, item));
      const complete = dialogue.length === Math.min(newest, session.dialogueLength) && (dialogue.at(-1)?.seq ?? session.dialogueLength) === session.dialogueLength;
      hot = { session, dialogue, complete };
    } catch {
      this.telemetry.cacheRead('genie_session', false);
      return { copy: undefined, token: undefined };
    }
    this.telemetry.cacheRead('genie_session', true);
    return { copy: hot, token };
  }

  /** Fills the copy with what a read found in Postgres (its newest elements), unless a write came since `token`. */
  async put(session: StoredSession, newest: DialogueRow[], token: string | undefined, ttlMs: number): Promise<void> {
    // Only what the copy keeps is sent (the store trims the same way).
    const items: string[] = [];
    let bytes = 0;
    for (let i = newest.length - 1; i >= 0 && items.length < HOT_ELEMENTS; i--) {
      const item = encodeJson(elementCodec, newest[i]!);
      bytes += Buffer.byteLength(item);
      if (items.length && bytes > HOT_BYTES) break;
      items.push(item);
    }
    items.reverse();
    const copy = { head: encodeJson(sessionCodec, session), revision: session.revision, first: session.dialogueLength - items.length + 1, items };
    await this.kv.fillVersioned(hotKey(session.id), copy, token, KEEP, ttlMs).catch((err: unknown) => {
      this.telemetry.contained('cache_fill', err);
      return false;
    });
  }

  /** Called after every commit that changed the session from revision `after` (see KvStore.advance). */
  advance(after: number, session: StoredSession, appended: readonly DialogueRow[], ttlMs: number): Promise<void> {
    const copy = {
      head: encodeJson(sessionCodec, session),
      revision: session.revision,
      first: session.dialogueLength - appended.length + 1,
      items: appended.map((d) => encodeJson(elementCodec, d)),
    };
    return this.kv.advance(hotKey(session.id), after, copy, KEEP, ttlMs);
  }

  /** After a deletion committed: no copy of the session is served or filled again. */
  tombstone(sessionId: string): Promise<void> {
    return this.kv.fence(hotKey(sessionId), { tombstone: true });
  }

  /** Before a deletion: UNAVAILABLE CACHE_UNAVAILABLE when the copy cannot be tombstoned (see FencedCopies). */
  tombstoneBeforeDelete(sessionId: string): Promise<void> {
    return fenceBeforeDelete(this.kv, hotKey(sessionId), 'session', { tombstone: true });
  }

  /**
   * At-most-once fan-out after commit, one message per revision (all of its events), so a watcher sees a
   * revision whole; the event log in Postgres is what a watcher replays when a message is lost.
   */
  async publish(sessionId: string, commit: SessionCommit): Promise<void> {
    if (commit.events.length === 0) return;
    await this.bus.publish(sessionChannel(sessionId), encodeJson(busMessageCodec, commitMessage(commit)));
  }
}
