import { z } from 'zod';
import { isoDate } from '../json-codec.js';
import type { Tx } from '../ports/unit-of-work.js';
import { ACTORS, type Actor } from './dialogue-format.js';
import type { SessionCommit, SessionEvent } from './events.js';
import type { ModelTypeDef, ModelTypeRow } from './model-type.js';
import { DEFAULT_ENCODING, TOKENIZER_ENCODINGS, type TokenizerEncoding } from './tokens.js';
import { labelsOf, noLabels, type Labels } from '../labels.js';
import type { TimeOp } from '../filter.js';

/**
 * What the Genie use cases need from storage, and nothing more. Storage implements these over Postgres;
 * the unit tests implement them in memory. A method that takes a `Tx` runs inside the use case's unit of
 * work (its locks last until that commits); an optional `tx` absent reads outside any transaction. Stores
 * only read and write: every decision (and every error a client sees) is the use case's.
 */

/** A session as stored: possibly at an older schema version than its type's latest. */
export interface StoredSession {
  id: string;
  accountId: string;
  modelType: string;
  schemaVersion: number;
  state: string;
  actor: Actor | '';
  actorInput: string;
  fields: Record<string, unknown>;
  revision: number;
  dialogueLength: number;
  /** The sum of the token counts of the elements at positions 1..dialogueLength. */
  dialogueTokenCount: number;
  /** What every element's tokenCount counts in: fixed when the session is created. */
  tokenEncoding: TokenizerEncoding;
  forkedFromSessionId: string | undefined;
  forkedFromRevision: number | undefined;
  /** Retention: the purge deletes the session after this time. */
  expireTime: Date | undefined;
  /** The gateway's end user the session belongs to (set at creation, never changed); undefined: none. */
  endUserId: string | undefined;
  /** The developer's labels (null prototype); not versioned: a revision read shows the current ones. */
  labels: Labels;
  createdAt: Date;
  /** When this revision was committed. */
  updatedAt: Date;
}

export interface DialogueRow {
  seq: number;
  actor: Actor;
  actorText: string;
  event: string;
  timestamp: Date;
  revision: number;
  /** Tokens of actorText in the session's tokenEncoding, counted when the element was written. */
  tokenCount: number;
}

/** A speaker as stored. */
export const actorSchema = z.enum(ACTORS);
const actor = actorSchema;

export type { ModelTypeDef, ModelTypeRow, StateMachineDef, UpgradeStepDef } from './model-type.js';

const sessionShape = {
  id: z.string(),
  accountId: z.string(),
  modelType: z.string(),
  schemaVersion: z.number(),
  state: z.string(),
  actor: z.union([actor, z.literal('')]),
  actorInput: z.string(),
  fields: z.record(z.string(), z.unknown()),
  revision: z.number(),
  dialogueLength: z.number(),
  dialogueTokenCount: z.number(),
  tokenEncoding: z.enum(TOKENIZER_ENCODINGS),
  forkedFromSessionId: z.string().optional(),
  forkedFromRevision: z.number().optional(),
  expireTime: isoDate.optional(),
  endUserId: z.string().optional(),
  // A stored answer written before labels existed has none: it replays as no labels (a hot copy must have them).
  labels: z
    .record(z.string(), z.string())
    .optional()
    .transform((l) => (l ? labelsOf(Object.entries(l)) : noLabels())),
  createdAt: isoDate,
  updatedAt: isoDate,
};

/**
 * A session as JSON in a hot copy comes back through this schema: a copy without token counts (written
 * before they were kept) does not decode, so it is a miss and the read goes to Postgres.
 */
export const hotSessionSchema = z
  // Labels are required here: a copy without them was written by a server that did not know them, while
  // the row may hold some (set through a newer server). Read as none, they would be shown wrong and the
  // next write from that copy would store none; as a miss, the read goes to Postgres.
  .object({ ...sessionShape, labels: z.record(z.string(), z.string()).transform((l) => labelsOf(Object.entries(l))) })
  // JSON leaves unset fields out; the row type has every key.
  .transform((s): StoredSession => ({ ...s, forkedFromSessionId: s.forkedFromSessionId, forkedFromRevision: s.forkedFromRevision, expireTime: s.expireTime, endUserId: s.endUserId }));

/**
 * A session in a stored answer of a request id comes back through this one: answers stored before token
 * counts were kept replay with a count of 0 in the default encoding.
 */
export const storedSessionSchema = z
  .object({ ...sessionShape, dialogueTokenCount: z.number().default(0), tokenEncoding: z.enum(TOKENIZER_ENCODINGS).default(DEFAULT_ENCODING) })
  .transform((s): StoredSession => ({ ...s, forkedFromSessionId: s.forkedFromSessionId, forkedFromRevision: s.forkedFromRevision, expireTime: s.expireTime, endUserId: s.endUserId }));

export const dialogueRowSchema: z.ZodType<DialogueRow> = z.object({
  seq: z.number(),
  actor,
  actorText: z.string(),
  event: z.string(),
  timestamp: isoDate,
  revision: z.number(),
  tokenCount: z.number(),
});

export interface SecondaryMeta {
  key: string;
  sizeBytes: number;
  revision: number;
  createdAt: Date;
}

/** A new session (revision 1) as the use case decided it. */
export type NewSession = Omit<StoredSession, 'revision' | 'dialogueLength' | 'dialogueTokenCount' | 'createdAt' | 'updatedAt'>;

/** Where a fork copies its dialogue and secondary values from. */
export interface ForkSource {
  sessionId: string;
  revision: number;
  dialogueLength: number;
  /** The source's running total at that length (the fork keeps the source's encoding, so its counts hold). */
  dialogueTokenCount: number;
}

/** The new state of a session that a write decided on; the store numbers the revision. */
export interface SessionWrite {
  schemaVersion: number;
  state: string;
  actor: Actor | '';
  actorInput: string;
  fields: Record<string, unknown>;
  expireTime: Date | undefined;
  labels: Labels;
  /** Each element with its token count in the session's tokenEncoding. */
  dialogue: Array<{ actor: Actor; actorText: string; event: string; timestamp: Date; tokenCount: number }>;
  secondary?: { key: string; value: Buffer };
  events: SessionEvent[];
}

export interface WriteResult {
  session: StoredSession;
  /**
   * The session's latest dialogue element as committed, read inside the transaction: a write that
   * committed must answer OK, so nothing it answers with may depend on a read after the commit (which could
   * fail). Writes never read the whole dialogue: their answers do not carry it.
   */
  last: DialogueRow | undefined;
  /** What the revision logged; empty when nothing was committed. */
  commit: SessionCommit;
}

export interface ModelTypeStore {
  /** Holds a lock on (account, type name) until `tx` ends: registrations of one name queue on it. */
  lockModelTypeName(accountId: string, name: string, tx: Tx): Promise<void>;
  /** Inserts a version; undefined when that (name, version) exists already. */
  insertModelType(accountId: string, def: ModelTypeDef, tx: Tx): Promise<ModelTypeRow | undefined>;
  /** Every registered version of a type, oldest first. */
  modelTypeVersions(accountId: string, name: string, tx?: Tx): Promise<ModelTypeRow[]>;
  /** Every version of every type of an account, by name then version. */
  allModelTypes(accountId: string): Promise<ModelTypeRow[]>;
  listModelTypes(accountId: string, name: string | undefined, after: { name: string; schemaVersion: number } | undefined, limit: number): Promise<ModelTypeRow[]>;
}

/** What a tombstone removed: the session's content rows, and the stored answers that repeated them. */
export interface RemovedContent {
  dialogue: number;
  revisions: number;
  secondary: number;
  requestIds: number;
}

/** The filters of a session list; unset ones match everything. */
export interface SessionFilter {
  modelType?: string | undefined;
  /** What a filter by state matches (empty: nothing). */
  states?: StateFilter | undefined;
  endUserId?: string | undefined;
  /** Labels set to these values (all of them). */
  labels?: Array<{ key: string; value: string }>;
  /** Labels set, whatever their values. */
  hasLabels?: string[];
  /** Bounds on the creation or last update time (all of them). */
  times?: Array<{ column: 'created' | 'updated'; op: TimeOp; at: Date }>;
}

/** A list's order: creation sequence (the default), or creation or update time, each with seq as tiebreak. */
export interface SessionOrder {
  by: 'seq' | 'created' | 'updated';
  desc: boolean;
}

/** Where a page ends: the last session's seq and, in a time order, its time as Postgres' exact text. */
export interface SessionCursor {
  seq: number;
  at?: string | undefined;
}

/** The stored (version, states) pairs a list filtered by state matches, per type. */
export type StateFilter = Array<{ modelType: string; schemaVersion: number; states: string[] }>;

export interface SessionStore {
  /**
   * The live (not deleted) session, locked until `tx` ends: `update` for a writer (racing writers queue),
   * `share` for a reader that must see no commit before it is done (a cache fill).
   */
  lockSession(accountId: string, id: string, mode: 'update' | 'share', tx: Tx): Promise<StoredSession | undefined>;
  /** Inserts a session at revision 1, logging `events`; a fork copies its source's content up to `fork`. */
  insertSession(s: NewSession, fork: ForkSource | undefined, events: SessionEvent[], tx: Tx): Promise<WriteResult>;
  /** Commits `w` as the revision after `current` (locked in `tx`): snapshot, dialogue, secondary value, log. */
  commitRevision(current: StoredSession, w: SessionWrite, tx: Tx): Promise<WriteResult>;
  /**
   * Turns a session into a tombstone at the revision after `current`: only its id, owner, type and
   * revision stay (not its end user), every copy of its content goes (revisions, dialogue, secondary values, the event log,
   * stored answers of request ids), and `events` are logged at that revision.
   */
  tombstone(current: { id: string; revision: number }, events: SessionEvent[], now: Date, tx: Tx): Promise<WriteResult['commit'] & { removed: RemovedContent }>;
  /** The session as it was at `revision`; undefined when the session or that revision does not exist. */
  sessionAt(accountId: string, id: string, revision: number, tx?: Tx): Promise<{ session: StoredSession; dialogue: DialogueRow[] } | undefined>;
  sessionExists(accountId: string, id: string, tx?: Tx): Promise<boolean>;
  /** The live session, without lock or transaction; undefined when absent, deleted, or another account's. */
  readSession(accountId: string, id: string): Promise<StoredSession | undefined>;
  /**
   * Commits `w` as the revision after `current` in ONE statement, with no transaction and no lock, if and
   * only if the session is still live at current.revision and no version of its type newer than
   * `guard.latestSchemaVersion` is registered; undefined (nothing written) otherwise. `w.secondary` must be
   * unset. Same WriteResult as commitRevision.
   */
  commitIfAt(current: StoredSession, w: SessionWrite, guard: { latestSchemaVersion: number }): Promise<WriteResult | undefined>;
  /** The newest `n` elements at positions ≤ upToSeq, oldest first. */
  dialogueTail(sessionId: string, upToSeq: number, n: number, tx?: Tx): Promise<DialogueRow[]>;
  /** The element at 1-based position `seq`. */
  element(sessionId: string, seq: number, tx?: Tx): Promise<DialogueRow | undefined>;
  /** The elements at positions 1..upToSeq, oldest first. */
  dialogue(sessionId: string, upToSeq: number, tx?: Tx): Promise<DialogueRow[]>;
  /**
   * Up to `limit` elements after position `afterSeq` and at most `upToSeq`, oldest first, stopping before
   * `maxTextBytes` of text (but always with at least one element when any is left).
   */
  dialoguePage(sessionId: string, afterSeq: number, upToSeq: number, limit: number, maxTextBytes: number): Promise<DialogueRow[]>;
  /**
   * The revision, dialogue length and token encoding of a live session at `revision` (the current one when
   * undefined), without its content; undefined when the session or that revision does not exist.
   */
  dialogueHead(accountId: string, id: string, revision: number | undefined): Promise<{ revision: number; dialogueLength: number; tokenEncoding: TokenizerEncoding } | undefined>;
  /** The system elements at positions ≤ upToSeq, oldest first (an index finds them). */
  systemElements(sessionId: string, upToSeq: number): Promise<DialogueRow[]>;
  /**
   * Position, speaker and token count of up to `limit` elements before position `beforeSeq` (exclusive),
   * newest first, without their text.
   */
  tokenCountsBefore(sessionId: string, beforeSeq: number, limit: number): Promise<Array<{ seq: number; actor: Actor; tokenCount: number }>>;
  /** The elements at positions from..to, oldest first. */
  dialogueRange(sessionId: string, from: number, to: number): Promise<DialogueRow[]>;
  /** The dialogue length of a session at `revision` (the current one when undefined); undefined when absent. */
  dialogueLengthAt(accountId: string, id: string, revision: number | undefined): Promise<number | undefined>;
  /** Live sessions in `order` after `after` that pass every filter set; `at` is the cursor's time in a time order. */
  listSessions(
    accountId: string,
    filter: SessionFilter,
    order: SessionOrder,
    after: SessionCursor | undefined,
    limit: number,
  ): Promise<Array<{ seq: number; at: string | undefined; session: StoredSession; last: DialogueRow | undefined }>>;
  /** How many live sessions pass every filter set. */
  countSessions(accountId: string, filter: SessionFilter): Promise<number>;
  /** The ids of up to `limit` live sessions of one end user of an account, oldest first (no lock). */
  endUserSessions(accountId: string, endUserId: string, limit: number): Promise<string[]>;
  /**
   * Up to `limit` sessions past their retention at `now`, locked in `tx`: past their expire_time, or idle
   * (no commit) for longer than the latest version of their type's session_ttl_seconds. Sessions a write
   * holds right now are passed over (they are not idle).
   */
  lockExpired(now: Date, limit: number, tx: Tx): Promise<Array<{ id: string; revision: number }>>;
  /** Removes up to `limit` tombstones of sessions deleted before `cutoff`; returns how many went. */
  dropTombstones(cutoff: Date, limit: number): Promise<number>;
  secondaryExists(sessionId: string, key: string, tx?: Tx): Promise<boolean>;
  secondary(sessionId: string, key: string): Promise<(SecondaryMeta & { value: Buffer }) | undefined>;
  listSecondary(sessionId: string, afterKey: string | undefined, limit: number): Promise<SecondaryMeta[]>;
}

/** The session event log, for watchers replaying what they missed. */
export interface SessionEventLog {
  /** The owner and current revision of a session, deleted ones (tombstones) included. */
  head(sessionId: string): Promise<{ accountId: string; revision: number; deleted: boolean } | undefined>;
  /** The first `limit` logged revisions after `after`, whole, ascending (numbers may skip). */
  commitsAfter(sessionId: string, after: number, limit: number): Promise<SessionCommit[]>;
}
