import type { Knex } from 'knex';
import { alreadyExists, notFound } from '../errors.js';
import type { Actor } from '../genie/dialogue-format.js';
import type { ModelTypeDef, ModelTypeRow } from '../genie/model-type.js';
import { isUniqueViolation, type Db } from './db.js';
import { asDate, asJson } from './rows.js';

/** A session as stored: possibly at an older schema version than its type's latest. */
export interface StoredSession {
  id: string;
  accountId: string;
  modelType: string;
  schemaVersion: number;
  state: string;
  actor: string;
  actorInput: string;
  fields: Record<string, unknown>;
  revision: number;
  dialogueLength: number;
  forkedFromSessionId: string | undefined;
  forkedFromRevision: number | undefined;
  /** Retention: the purge deletes the session after this time. */
  expireTime: Date | undefined;
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
}

export type SessionEventKind =
  | 'session_created'
  | 'dialogue_appended'
  | 'state_changed'
  | 'fields_updated'
  | 'secondary_put'
  | 'session_deleted';

export interface SessionEvent {
  sessionId: string;
  revision: number;
  kind: SessionEventKind;
  payload: Record<string, unknown>;
}

export interface SecondaryMeta {
  key: string;
  sizeBytes: number;
  revision: number;
  createdAt: Date;
}

/** The new state of a session that a write decided on; the repo numbers the revision. */
export interface SessionWrite {
  schemaVersion: number;
  state: string;
  actor: string;
  actorInput: string;
  fields: Record<string, unknown>;
  expireTime: Date | undefined;
  dialogue: Array<{ actor: Actor; actorText: string; event: string; timestamp: Date }>;
  secondary?: { key: string; value: Buffer };
  events: Array<{ kind: SessionEventKind; payload: Record<string, unknown> }>;
  deleted?: boolean;
}

export interface WriteResult {
  session: StoredSession;
  appended: DialogueRow[];
  /**
   * The session's whole dialogue as committed, read inside the transaction: a write that committed must
   * answer OK, so nothing it answers with may depend on a read after the commit (which could fail).
   */
  dialogue: DialogueRow[];
  events: SessionEvent[];
}

type Q = Knex | Knex.Transaction;

const deletedEvent = { kind: 'session_deleted' as const, payload: {} };

const modelTypeFromRow = (r: any): ModelTypeRow => ({
  name: r.name,
  schemaVersion: r.schema_version,
  jsonSchema: r.json_schema === null ? undefined : asJson(r.json_schema),
  stateMachine: asJson(r.state_machine),
  upgrades: asJson(r.upgrades),
  cacheTtlSeconds: r.cache_ttl_seconds,
  sessionTtlSeconds: r.session_ttl_seconds ?? 0,
  createdAt: asDate(r.created_at),
});

const sessionFromRow = (r: any): StoredSession => ({
  id: r.id,
  accountId: r.account_id,
  modelType: r.model_type,
  schemaVersion: r.schema_version,
  state: r.state,
  actor: r.actor,
  actorInput: r.actor_input,
  fields: asJson(r.fields),
  revision: Number(r.revision),
  dialogueLength: r.dialogue_length,
  forkedFromSessionId: r.forked_from_session_id ?? undefined,
  forkedFromRevision: r.forked_from_revision === null || r.forked_from_revision === undefined ? undefined : Number(r.forked_from_revision),
  expireTime: r.expire_time ? asDate(r.expire_time) : undefined,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

const dialogueFromRow = (r: any): DialogueRow => ({
  seq: r.seq,
  actor: r.actor,
  actorText: r.actor_text,
  event: r.event,
  timestamp: asDate(r.timestamp),
  revision: Number(r.revision),
});

/** Postgres wants jsonb parameters as text; a bare JS array would be sent as a Postgres array. */
const json = (v: unknown) => JSON.stringify(v);

export class GenieRepo {
  constructor(private readonly db: Db) {}

  // ---------------------------------------------------------------------------------------------------
  // Model types

  /**
   * Inserts a new version of a type. `check` sees the latest registered version under a per-name lock, so
   * two registrations of one name cannot both build on the same previous version.
   */
  async registerModelType(
    accountId: string,
    def: ModelTypeDef,
    check: (previous: ModelTypeRow | undefined) => void,
  ): Promise<ModelTypeRow> {
    try {
      return await this.db.transaction(async (trx) => {
        await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`genie_model_type:${accountId}:${def.name}`]);
        const prev = await trx('genie_model_types')
          .where({ account_id: accountId, name: def.name })
          .orderBy('schema_version', 'desc')
          .first();
        check(prev ? modelTypeFromRow(prev) : undefined);
        const [row] = await trx('genie_model_types')
          .insert({
            account_id: accountId,
            name: def.name,
            schema_version: def.schemaVersion,
            json_schema: def.jsonSchema === undefined ? null : json(def.jsonSchema),
            state_machine: json(def.stateMachine),
            upgrades: json(def.upgrades),
            cache_ttl_seconds: def.cacheTtlSeconds,
            session_ttl_seconds: def.sessionTtlSeconds,
          })
          .returning('*');
        return modelTypeFromRow(row);
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists`model type ${def.name} version ${def.schemaVersion}`;
      throw err;
    }
  }

  /** Every registered version of a type, oldest first. */
  async modelTypeVersions(accountId: string, name: string, q: Q = this.db): Promise<ModelTypeRow[]> {
    const rows = await q('genie_model_types').where({ account_id: accountId, name }).orderBy('schema_version', 'asc');
    return rows.map(modelTypeFromRow);
  }

  /** Every version of every type of an account, by name then version. */
  async allModelTypes(accountId: string): Promise<ModelTypeRow[]> {
    const rows = await this.db('genie_model_types').where({ account_id: accountId }).orderBy([{ column: 'name' }, { column: 'schema_version' }]);
    return rows.map(modelTypeFromRow);
  }

  async listModelTypes(
    accountId: string,
    name: string | undefined,
    after: { name: string; schemaVersion: number } | undefined,
    limit: number,
  ): Promise<ModelTypeRow[]> {
    const q = this.db('genie_model_types').where({ account_id: accountId });
    if (name) q.andWhere({ name });
    if (after) q.andWhereRaw('(name, schema_version) > (?, ?)', [after.name, after.schemaVersion]);
    const rows = await q.orderBy([{ column: 'name' }, { column: 'schema_version' }]).limit(limit);
    return rows.map(modelTypeFromRow);
  }

  // ---------------------------------------------------------------------------------------------------
  // Sessions: writes

  /**
   * Inserts a session at revision 1. With `fork`, the source's dialogue up to its length at the forked
   * revision and the secondary values stored by then are copied in the same transaction.
   */
  async createSession(
    s: Omit<StoredSession, 'revision' | 'dialogueLength' | 'createdAt' | 'updatedAt'>,
    fork?: { sessionId: string; revision: number; dialogueLength: number },
  ): Promise<WriteResult> {
    return this.db.transaction(async (trx) => {
      const now = new Date();
      const dialogueLength = fork?.dialogueLength ?? 0;
      const [row] = await trx('genie_sessions')
        .insert({
          id: s.id,
          account_id: s.accountId,
          model_type: s.modelType,
          schema_version: s.schemaVersion,
          state: s.state,
          actor: s.actor,
          actor_input: s.actorInput,
          fields: json(s.fields),
          revision: 1,
          dialogue_length: dialogueLength,
          forked_from_session_id: s.forkedFromSessionId ?? null,
          forked_from_revision: s.forkedFromRevision ?? null,
          expire_time: s.expireTime ?? null,
          created_at: now,
          updated_at: now,
        })
        .returning('*');
      const session = sessionFromRow(row);
      await this.insertRevision(trx, session);
      if (fork) {
        await trx.raw(
          `insert into genie_dialogue (session_id, seq, actor, actor_text, event, timestamp, revision)
           select ?, seq, actor, actor_text, event, timestamp, 1 from genie_dialogue where session_id = ? and seq <= ?`,
          [s.id, fork.sessionId, fork.dialogueLength],
        );
        await trx.raw(
          `insert into genie_secondary (session_id, key, value, size_bytes, revision, created_at)
           select ?, key, value, size_bytes, 1, created_at from genie_secondary where session_id = ? and revision <= ?`,
          [s.id, fork.sessionId, fork.revision],
        );
      }
      const payload: Record<string, unknown> = { model_type: s.modelType, schema_version: s.schemaVersion, state: s.state, fields: s.fields };
      if (fork) Object.assign(payload, { forked_from_session_id: fork.sessionId, forked_from_revision: fork.revision });
      const events = await this.insertEvents(trx, s.id, 1, [{ kind: 'session_created', payload }]);
      const dialogue = fork ? await this.dialogue(s.id, dialogueLength, trx) : [];
      return { session, appended: [], dialogue, events };
    });
  }

  /**
   * The one write path of a session: locks its row, lets `decide` look at the current state (and read more
   * through the same transaction) and return the new one, then commits it as exactly one new revision with
   * its snapshot, dialogue appends, secondary value and event-log rows. Racing writers queue on the lock.
   */
  async writeSession(
    accountId: string,
    id: string,
    decide: (current: StoredSession, q: Knex.Transaction) => Promise<SessionWrite>,
    /** A transaction to write in (e.g. one holding a request-id claim); by default, a new one. */
    outer?: Knex.Transaction,
  ): Promise<WriteResult> {
    const inTransaction = <T>(work: (trx: Knex.Transaction) => Promise<T>): Promise<T> => (outer ? work(outer) : this.db.transaction(work));
    return inTransaction(async (trx) => {
      const row = await trx('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').forUpdate().first();
      if (!row) throw notFound`session ${id}`;
      const current = sessionFromRow(row);
      const w = await decide(current, trx);
      const revision = current.revision + 1;
      const now = new Date();
      const appended: DialogueRow[] = w.dialogue.map((d, i) => ({ ...d, seq: current.dialogueLength + i + 1, revision }));
      if (w.deleted) {
        const session = await this.tombstone(trx, id, revision, now);
        return { session, appended: [], dialogue: [], events: await this.insertEvents(trx, id, revision, [deletedEvent]) };
      }
      const [updated] = await trx('genie_sessions')
        .where({ id })
        .update({
          schema_version: w.schemaVersion,
          state: w.state,
          actor: w.actor,
          actor_input: w.actorInput,
          fields: json(w.fields),
          revision,
          dialogue_length: current.dialogueLength + appended.length,
          expire_time: w.expireTime ?? null,
          updated_at: now,
        })
        .returning('*');
      const session = sessionFromRow(updated);
      await this.insertRevision(trx, session);
      if (appended.length) {
        await trx('genie_dialogue').insert(
          appended.map((d) => ({
            session_id: id,
            seq: d.seq,
            actor: d.actor,
            actor_text: d.actorText,
            event: d.event,
            timestamp: d.timestamp,
            revision,
          })),
        );
      }
      if (w.secondary) {
        await trx('genie_secondary').insert({
          session_id: id,
          key: w.secondary.key,
          value: w.secondary.value,
          size_bytes: w.secondary.value.length,
          revision,
          created_at: now,
        });
      }
      const events = await this.insertEvents(trx, id, revision, w.events);
      const dialogue = [...(await this.dialogue(id, current.dialogueLength, trx)), ...appended];
      return { session, appended, dialogue, events };
    });
  }

  /**
   * Turns a session into a tombstone at `revision`: the row keeps only its id, owner, type and revision
   * (so a watcher learns of the deletion and nothing can write to the id again), and every copy of its
   * content goes: fields and last utterance, revisions, dialogue, secondary values and the event log, whose
   * payloads repeat all of them. The caller then logs the one session_deleted event at `revision`.
   */
  async tombstone(trx: Knex.Transaction, id: string, revision: number, now: Date): Promise<StoredSession> {
    await trx('session_events').where({ session_id: id }).delete();
    await trx('genie_secondary').where({ session_id: id }).delete();
    await trx('genie_dialogue').where({ session_id: id }).delete();
    await trx('genie_session_revisions').where({ session_id: id }).delete();
    const [row] = await trx('genie_sessions')
      .where({ id })
      .update({ state: '', actor: '', actor_input: '', fields: '{}', dialogue_length: 0, expire_time: null, revision, updated_at: now, deleted_at: now })
      .returning('*');
    return sessionFromRow(row);
  }

  private async insertRevision(trx: Knex.Transaction, s: StoredSession): Promise<void> {
    await trx('genie_session_revisions').insert({
      session_id: s.id,
      revision: s.revision,
      schema_version: s.schemaVersion,
      state: s.state,
      actor: s.actor,
      actor_input: s.actorInput,
      fields: json(s.fields),
      dialogue_length: s.dialogueLength,
      created_at: s.updatedAt,
    });
  }

  private async insertEvents(
    trx: Knex.Transaction,
    sessionId: string,
    revision: number,
    events: SessionWrite['events'],
  ): Promise<SessionEvent[]> {
    if (events.length === 0) return [];
    await trx('session_events').insert(
      events.map((e) => ({ session_id: sessionId, revision, kind: e.kind, payload: json(e.payload) })),
    );
    return events.map((e) => ({ sessionId, revision, kind: e.kind, payload: e.payload }));
  }

  // ---------------------------------------------------------------------------------------------------
  // Sessions: reads

  /**
   * The current session with its dialogue. `whileLocked` runs before the read's share lock is released:
   * a writer cannot commit in between, so a cache filled there cannot be older than the writer's eviction.
   */
  async currentSession(
    accountId: string,
    id: string,
    whileLocked?: (s: StoredSession, dialogue: DialogueRow[], q: Knex.Transaction) => Promise<void>,
  ): Promise<{ session: StoredSession; dialogue: DialogueRow[] } | undefined> {
    return this.db.transaction(async (trx) => {
      const row = await trx('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').forShare().first();
      if (!row) return undefined;
      const session = sessionFromRow(row);
      const dialogue = await this.dialogue(id, session.dialogueLength, trx);
      if (whileLocked) await whileLocked(session, dialogue, trx);
      return { session, dialogue };
    });
  }

  /** The session as it was at `revision`; undefined when the session or that revision does not exist. */
  async sessionAt(accountId: string, id: string, revision: number): Promise<{ session: StoredSession; dialogue: DialogueRow[] } | undefined> {
    const head = await this.db('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').first();
    if (!head) return undefined;
    const r = await this.db('genie_session_revisions').where({ session_id: id, revision }).first();
    if (!r) return undefined;
    const session: StoredSession = {
      ...sessionFromRow(head),
      schemaVersion: r.schema_version,
      state: r.state,
      actor: r.actor,
      actorInput: r.actor_input,
      fields: asJson(r.fields),
      revision: Number(r.revision),
      dialogueLength: r.dialogue_length,
      updatedAt: asDate(r.created_at),
    };
    return { session, dialogue: await this.dialogue(id, session.dialogueLength) };
  }

  async sessionExists(accountId: string, id: string): Promise<boolean> {
    const row = await this.db('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').first('id');
    return !!row;
  }

  async dialogue(sessionId: string, upToSeq: number, q: Q = this.db): Promise<DialogueRow[]> {
    const rows = await q('genie_dialogue').where({ session_id: sessionId }).andWhere('seq', '<=', upToSeq).orderBy('seq');
    return rows.map(dialogueFromRow);
  }

  /**
   * Sessions by creation order after `afterSeq`. `states`, when given, lists the stored (version, states)
   * pairs that match per type; an empty list matches nothing.
   */
  async listSessions(
    accountId: string,
    filter: { modelType?: string | undefined; states?: Array<{ modelType: string; schemaVersion: number; states: string[] }> | undefined },
    afterSeq: number,
    limit: number,
  ): Promise<Array<{ seq: number; session: StoredSession; last: DialogueRow | undefined }>> {
    const q = this.db('genie_sessions as s')
      .leftJoin('genie_dialogue as d', (j) => j.on('d.session_id', 's.id').andOn('d.seq', 's.dialogue_length'))
      .where('s.account_id', accountId)
      .whereNull('s.deleted_at')
      .andWhere('s.seq', '>', afterSeq);
    if (filter.modelType) q.andWhere('s.model_type', filter.modelType);
    if (filter.states) {
      const states = filter.states;
      if (states.length === 0) return [];
      q.andWhere((w) => {
        for (const s of states) {
          w.orWhere((o) => o.where('s.model_type', s.modelType).andWhere('s.schema_version', s.schemaVersion).whereIn('s.state', s.states));
        }
      });
    }
    const rows = await q
      .select('s.*', 'd.seq as d_seq', 'd.actor as d_actor', 'd.actor_text as d_actor_text', 'd.event as d_event', 'd.timestamp as d_timestamp', 'd.revision as d_revision')
      .orderBy('s.seq')
      .limit(limit);
    return rows.map((r: any) => ({
      seq: Number(r.seq),
      session: sessionFromRow(r),
      last:
        r.d_seq === null || r.d_seq === undefined
          ? undefined
          : dialogueFromRow({ seq: r.d_seq, actor: r.d_actor, actor_text: r.d_actor_text, event: r.d_event, timestamp: r.d_timestamp, revision: r.d_revision }),
    }));
  }

  // ---------------------------------------------------------------------------------------------------
  // Retention

  /**
   * Tombstones up to `batchSize` sessions past their retention at `now` in one short transaction: past
   * their expire_time, or idle (no commit) for longer than the latest version of their type's
   * session_ttl_seconds. SKIP LOCKED passes over sessions a write holds right now (they are not idle).
   */
  async purgeExpiredBatch(now: Date, batchSize: number): Promise<Array<{ id: string; events: SessionEvent[] }>> {
    return this.db.transaction(async (trx) => {
      const doomed = await trx('genie_sessions as s')
        .select('s.id', 's.revision')
        .whereNull('s.deleted_at')
        .andWhere((w) =>
          w.where('s.expire_time', '<=', now).orWhereExists(
            trx('genie_model_types as t')
              .whereRaw('t.account_id = s.account_id and t.name = s.model_type and t.session_ttl_seconds > 0')
              .whereRaw(
                't.schema_version = (select max(v.schema_version) from genie_model_types v where v.account_id = s.account_id and v.name = s.model_type)',
              )
              .whereRaw("s.updated_at <= ?::timestamptz - t.session_ttl_seconds * interval '1 second'", [now]),
          ),
        )
        .orderBy('s.seq')
        .limit(batchSize)
        .forUpdate('s')
        .skipLocked();
      const out: Array<{ id: string; events: SessionEvent[] }> = [];
      for (const d of doomed as Array<{ id: string; revision: number | string }>) {
        const revision = Number(d.revision) + 1;
        await this.tombstone(trx, d.id, revision, now);
        out.push({ id: d.id, events: await this.insertEvents(trx, d.id, revision, [deletedEvent]) });
      }
      return out;
    });
  }

  /** Removes up to `batchSize` tombstones of sessions deleted before `cutoff`; returns how many went. */
  async dropTombstonesBatch(cutoff: Date, batchSize: number): Promise<number> {
    return this.db.transaction(async (trx) => {
      const ids = (await trx('genie_sessions').where('deleted_at', '<', cutoff).orderBy('deleted_at').limit(batchSize).forUpdate().skipLocked().pluck('id')) as string[];
      if (ids.length === 0) return 0;
      await trx('session_events').whereIn('session_id', ids).del();
      await trx('genie_sessions').whereIn('id', ids).del();
      return ids.length;
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Secondary storage

  async secondaryExists(sessionId: string, key: string, q: Q = this.db): Promise<boolean> {
    return !!(await q('genie_secondary').where({ session_id: sessionId, key }).first('key'));
  }

  async secondary(sessionId: string, key: string): Promise<(SecondaryMeta & { value: Buffer }) | undefined> {
    const r = await this.db('genie_secondary').where({ session_id: sessionId, key }).first();
    if (!r) return undefined;
    return { ...metaFromRow(r), value: Buffer.from(r.value) };
  }

  async listSecondary(sessionId: string, afterKey: string | undefined, limit: number): Promise<SecondaryMeta[]> {
    const q = this.db('genie_secondary').where({ session_id: sessionId }).select('key', 'size_bytes', 'revision', 'created_at');
    if (afterKey !== undefined) q.andWhere('key', '>', afterKey);
    const rows = await q.orderBy('key').limit(limit);
    return rows.map(metaFromRow);
  }
}

const metaFromRow = (r: any): SecondaryMeta => ({
  key: r.key,
  sizeBytes: r.size_bytes,
  revision: Number(r.revision),
  createdAt: asDate(r.created_at),
});
