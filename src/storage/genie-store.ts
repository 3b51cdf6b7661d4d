import type { Knex } from 'knex';
import { z } from 'zod';
import { isoDate } from '../json-codec.js';
import type { Tx } from '../ports/unit-of-work.js';
import type { SessionEvent } from '../genie/events.js';
import type { Actor } from '../genie/dialogue-format.js';
import { TOKENIZER_ENCODINGS, type TokenizerEncoding } from '../genie/tokens.js';
import {
  actorSchema,
  type DialogueRow,
  type ForkSource,
  type ModelTypeDef,
  type ModelTypeRow,
  type ModelTypeStore,
  type StateMachineDef,
  type UpgradeStepDef,
  type NewSession,
  type SecondaryMeta,
  type SessionStore,
  type SessionWrite,
  type RemovedContent,
  type SessionCursor,
  type SessionFilter,
  type SessionOrder,
  type StoredSession,
  type WriteResult,
} from '../genie/store.js';
import type { Db } from './db.js';
import { KnexUnitOfWork } from './unit-of-work.js';
import { knexOf } from './knex-tx.js';
import { keysetPage } from './rows.js';
import { insertEvents, jsonb, storedEventsJson } from './genie-event-log.js';
import { labelsOf } from '../labels.js';

// Rows as the drivers return them, checked rather than cast (bigint columns may arrive as strings).
const int = z.coerce.number();
const nullable = <T extends z.ZodType>(schema: T) => schema.nullish().transform((v) => v ?? undefined);
const fields = jsonb(z.record(z.string(), z.unknown()));
const actorOrNone = z.union([actorSchema, z.literal('')]);

const modelTypeRow = z
  .object({
    name: z.string(),
    schema_version: int,
    json_schema: nullable(jsonb(z.record(z.string(), z.unknown()))),
    // Written only from validated definitions: their shape is the definition's.
    state_machine: jsonb(z.custom<StateMachineDef>((v) => typeof v === 'object' && v !== null)),
    upgrades: jsonb(z.array(z.custom<UpgradeStepDef>((v) => typeof v === 'object' && v !== null))),
    cache_ttl_seconds: int,
    session_ttl_seconds: nullable(int),
    tokenizer_encoding: z.string(),
    created_at: isoDate,
  })
  .transform(
    (r): ModelTypeRow => ({
      name: r.name,
      schemaVersion: r.schema_version,
      jsonSchema: r.json_schema,
      stateMachine: r.state_machine,
      upgrades: r.upgrades,
      cacheTtlSeconds: r.cache_ttl_seconds,
      sessionTtlSeconds: r.session_ttl_seconds ?? 0,
      tokenizerEncoding: r.tokenizer_encoding,
      createdAt: r.created_at,
    }),
  );

/** The columns a session's head row and each of its revisions' snapshots share. */
const versionedColumns = {
  schema_version: int,
  state: z.string(),
  actor: actorOrNone,
  actor_input: z.string(),
  fields,
  revision: int,
  dialogue_length: int,
  dialogue_token_count: int,
};

const versioned = (r: z.infer<z.ZodObject<typeof versionedColumns>>) => ({
  schemaVersion: r.schema_version,
  state: r.state,
  actor: r.actor,
  actorInput: r.actor_input,
  fields: r.fields,
  revision: r.revision,
  dialogueLength: r.dialogue_length,
  dialogueTokenCount: r.dialogue_token_count,
});

const sessionRow = z
  .object({
    id: z.string(),
    account_id: z.string(),
    model_type: z.string(),
    ...versionedColumns,
    token_encoding: z.enum(TOKENIZER_ENCODINGS),
    forked_from_session_id: nullable(z.string()),
    forked_from_revision: nullable(int),
    expire_time: nullable(isoDate),
    end_user_id: nullable(z.string()),
    labels: jsonb(z.record(z.string(), z.string())).transform((l) => labelsOf(Object.entries(l))),
    created_at: isoDate,
    updated_at: isoDate,
  })
  .transform(
    (r): StoredSession => ({
      id: r.id,
      accountId: r.account_id,
      modelType: r.model_type,
      ...versioned(r),
      tokenEncoding: r.token_encoding,
      forkedFromSessionId: r.forked_from_session_id,
      forkedFromRevision: r.forked_from_revision,
      expireTime: r.expire_time,
      endUserId: r.end_user_id,
      labels: r.labels,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    }),
  );

const dialogueRow = z
  .object({ seq: int, actor: actorSchema, actor_text: z.string(), event: z.string(), timestamp: isoDate, revision: int, token_count: int })
  .transform(
    (r): DialogueRow => ({ seq: r.seq, actor: r.actor, actorText: r.actor_text, event: r.event, timestamp: r.timestamp, revision: r.revision, tokenCount: r.token_count }),
  );
const countedRows = z.array(z.object({ seq: int, actor: actorSchema, token_count: int }));

const secondaryMetaRow = z
  .object({ key: z.string(), size_bytes: int, revision: int, created_at: isoDate })
  .transform((r): SecondaryMeta => ({ key: r.key, sizeBytes: r.size_bytes, revision: r.revision, createdAt: r.created_at }));

const listedRow = z.object({
  seq: int,
  k_at: z.string(),
  d_seq: nullable(int),
  d_actor: z.unknown(),
  d_actor_text: z.unknown(),
  d_event: z.unknown(),
  d_timestamp: z.unknown(),
  d_revision: z.unknown(),
  d_token_count: z.unknown(),
});

/** Postgres wants jsonb parameters as text; a bare JS array would be sent as a Postgres array. */
const json = (v: unknown) => JSON.stringify(v);

/** Genie's model types over Postgres. */
export class KnexModelTypeStore implements ModelTypeStore {
  constructor(private readonly db: Db) {}

  async lockModelTypeName(accountId: string, name: string, tx: Tx): Promise<void> {
    await knexOf(tx).raw('select pg_advisory_xact_lock(hashtext(?))', [`genie_model_type:${accountId}:${name}`]);
  }

  async insertModelType(accountId: string, def: ModelTypeDef, tx: Tx): Promise<ModelTypeRow | undefined> {
    const [row] = await knexOf(tx)('genie_model_types')
      .insert({
        account_id: accountId,
        name: def.name,
        schema_version: def.schemaVersion,
        json_schema: def.jsonSchema === undefined ? null : json(def.jsonSchema),
        state_machine: json(def.stateMachine),
        upgrades: json(def.upgrades),
        cache_ttl_seconds: def.cacheTtlSeconds,
        session_ttl_seconds: def.sessionTtlSeconds,
        tokenizer_encoding: def.tokenizerEncoding,
      })
      .onConflict(['account_id', 'name', 'schema_version'])
      .ignore()
      .returning('*');
    return row === undefined ? undefined : modelTypeRow.parse(row);
  }

  async modelTypeVersions(accountId: string, name: string, tx?: Tx): Promise<ModelTypeRow[]> {
    const rows = await knexOf(tx, this.db)('genie_model_types').where({ account_id: accountId, name }).orderBy('schema_version', 'asc');
    return rows.map((r) => modelTypeRow.parse(r));
  }

  async allModelTypes(accountId: string): Promise<ModelTypeRow[]> {
    const rows = await this.db('genie_model_types').where({ account_id: accountId }).orderBy([{ column: 'name' }, { column: 'schema_version' }]);
    return rows.map((r) => modelTypeRow.parse(r));
  }

  async listModelTypes(accountId: string, name: string | undefined, after: { name: string; schemaVersion: number } | undefined, limit: number): Promise<ModelTypeRow[]> {
    const q = this.db('genie_model_types').where({ account_id: accountId });
    if (name) q.andWhere({ name });
    if (after) q.andWhereRaw('(name, schema_version) > (?, ?)', [after.name, after.schemaVersion]);
    const rows = await q.orderBy([{ column: 'name' }, { column: 'schema_version' }]).limit(limit);
    return rows.map((r) => modelTypeRow.parse(r));
  }
}

/** Genie sessions over Postgres: heads, revisions, dialogue, secondary values and the event log. */
export class KnexSessionStore implements SessionStore {
  constructor(private readonly db: Db) {}

  async lockSession(accountId: string, id: string, mode: 'update' | 'share', tx: Tx): Promise<StoredSession | undefined> {
    const q = knexOf(tx)('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at');
    const row = await (mode === 'update' ? q.forUpdate() : q.forShare()).first();
    return row === undefined ? undefined : sessionRow.parse(row);
  }

  async readSession(accountId: string, id: string): Promise<StoredSession | undefined> {
    const row = await this.db('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').first();
    return row === undefined ? undefined : sessionRow.parse(row);
  }

  async insertSession(s: NewSession, fork: ForkSource | undefined, events: SessionEvent[], tx: Tx): Promise<WriteResult> {
    const trx = knexOf(tx);
    const now = new Date();
    const dialogueLength = fork?.dialogueLength ?? 0;
    // A fork keeps its source's encoding, so the counts it copies hold.
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
        dialogue_token_count: fork?.dialogueTokenCount ?? 0,
        token_encoding: s.tokenEncoding,
        forked_from_session_id: s.forkedFromSessionId ?? null,
        forked_from_revision: s.forkedFromRevision ?? null,
        expire_time: s.expireTime ?? null,
        end_user_id: s.endUserId ?? null,
        labels: json(s.labels),
        created_at: now,
        updated_at: now,
      })
      .returning('*');
    const session = sessionRow.parse(row);
    await insertRevision(trx, session);
    if (fork) {
      await trx.raw(
        `insert into genie_dialogue (session_id, seq, actor, actor_text, event, timestamp, revision, token_count)
         select ?, seq, actor, actor_text, event, timestamp, 1, token_count from genie_dialogue where session_id = ? and seq <= ?`,
        [s.id, fork.sessionId, fork.dialogueLength],
      );
      await trx.raw(
        `insert into genie_secondary (session_id, key, value, size_bytes, revision, created_at)
         select ?, key, value, size_bytes, 1, created_at from genie_secondary where session_id = ? and revision <= ?`,
        [s.id, fork.sessionId, fork.revision],
      );
    }
    await insertEvents(trx, s.id, 1, events);
    const last = dialogueLength ? await this.element(s.id, dialogueLength, tx) : undefined;
    return { session, last, commit: { revision: 1, events } };
  }

  async commitRevision(current: StoredSession, w: SessionWrite, tx: Tx): Promise<WriteResult> {
    const trx = knexOf(tx);
    const result = await commitStatement(trx, current, w);
    // The caller holds the session locked at current.revision: the statement's guard cannot fail.
    if (!result) throw new Error(`session ${current.id} is no longer live at revision ${current.revision}`);
    if (w.secondary) {
      const { key, value } = w.secondary;
      await trx('genie_secondary').insert({ session_id: current.id, key, value, size_bytes: value.length, revision: result.session.revision, created_at: result.session.updatedAt });
    }
    return result;
  }

  async commitIfAt(current: StoredSession, w: SessionWrite, guard: { latestSchemaVersion: number }): Promise<WriteResult | undefined> {
    if (w.secondary) throw new Error(`session ${current.id}: commitIfAt writes no secondary value (key ${w.secondary.key})`);
    return commitStatement(this.db, current, w, guard);
  }

  async tombstone(current: { id: string; revision: number }, events: SessionEvent[], now: Date, tx: Tx): Promise<WriteResult['commit'] & { removed: RemovedContent }> {
    const trx = knexOf(tx);
    const { id } = current;
    const revision = current.revision + 1;
    await trx('session_commits').where({ session_id: id }).delete();
    const removed = {
      secondary: await deleteCounted(trx, 'genie_secondary', id),
      dialogue: await deleteCounted(trx, 'genie_dialogue', id),
      revisions: await deleteCounted(trx, 'genie_session_revisions', id),
      // Stored answers of idempotent writes repeat the session's content (fields, actor_input): they go too.
      requestIds: await KnexUnitOfWork.forgetSubjects(tx, [id]),
    };
    // The end user goes with the content: an erased end user's id must not stay behind in tombstones.
    await trx('genie_sessions')
      .where({ id })
      .update({ state: '', actor: '', actor_input: '', fields: '{}', dialogue_length: 0, dialogue_token_count: 0, expire_time: null, end_user_id: null, labels: '{}', revision, updated_at: now, deleted_at: now });
    await insertEvents(trx, id, revision, events);
    return { revision, events, removed };
  }

  async sessionAt(accountId: string, id: string, revision: number, tx?: Tx): Promise<{ session: StoredSession; dialogue: DialogueRow[] } | undefined> {
    const q = knexOf(tx, this.db);
    const { rows } = (await q.raw(SESSION_AT, [revision, id, accountId])) as { rows: unknown[] };
    if (rows.length === 0) return undefined;
    const session = sessionRow.parse(rows[0]);
    return { session, dialogue: await this.dialogue(id, session.dialogueLength, tx) };
  }

  async sessionExists(accountId: string, id: string, tx?: Tx): Promise<boolean> {
    return !!(await knexOf(tx, this.db)('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').first('id'));
  }

  async element(sessionId: string, seq: number, tx?: Tx): Promise<DialogueRow | undefined> {
    const row = await knexOf(tx, this.db)('genie_dialogue').where({ session_id: sessionId, seq }).first();
    return row === undefined ? undefined : dialogueRow.parse(row);
  }

  async dialogue(sessionId: string, upToSeq: number, tx?: Tx): Promise<DialogueRow[]> {
    return this.dialogueRange(sessionId, 1, upToSeq, tx);
  }

  async dialogueTail(sessionId: string, upToSeq: number, n: number, tx?: Tx): Promise<DialogueRow[]> {
    if (n <= 0) return [];
    const rows = await knexOf(tx, this.db)('genie_dialogue').where({ session_id: sessionId }).andWhere('seq', '<=', upToSeq).orderBy('seq', 'desc').limit(n);
    return rows.map((r) => dialogueRow.parse(r)).reverse();
  }

  async dialoguePage(sessionId: string, afterSeq: number, upToSeq: number, limit: number, maxTextBytes: number): Promise<DialogueRow[]> {
    const rows = await this.db('genie_dialogue')
      .where({ session_id: sessionId })
      .andWhere('seq', '>', afterSeq)
      .andWhere('seq', '<=', upToSeq)
      .select('seq', this.db.raw('octet_length(actor_text) as text_bytes'))
      .orderBy('seq')
      .limit(limit);
    const sized = z.array(z.object({ seq: int, text_bytes: int })).parse(rows);
    let bytes = 0;
    let n = 0;
    for (const r of sized) {
      bytes += r.text_bytes;
      if (n > 0 && bytes > maxTextBytes) break;
      n++;
    }
    const first = sized[0];
    const last = sized[n - 1];
    return first && last ? this.dialogueRange(sessionId, first.seq, last.seq) : [];
  }

  async dialogueHead(accountId: string, id: string, revision: number | undefined): Promise<{ revision: number; dialogueLength: number; tokenEncoding: TokenizerEncoding } | undefined> {
    const q =
      revision === undefined
        ? this.db('genie_sessions as g').select('g.revision', 'g.dialogue_length', 'g.token_encoding')
        : this.db('genie_sessions as g')
            .join('genie_session_revisions as r', (j) => j.on('r.session_id', 'g.id').andOnVal('r.revision', revision))
            .select('r.revision', 'r.dialogue_length', 'g.token_encoding');
    const row = await q.where({ 'g.id': id, 'g.account_id': accountId }).whereNull('g.deleted_at').first();
    if (!row) return undefined;
    const r = z.object({ revision: int, dialogue_length: int, token_encoding: z.enum(TOKENIZER_ENCODINGS) }).parse(row);
    return { revision: r.revision, dialogueLength: r.dialogue_length, tokenEncoding: r.token_encoding };
  }

  async systemElements(sessionId: string, upToSeq: number): Promise<DialogueRow[]> {
    // Matches the partial index genie_dialogue_system.
    const rows = await this.db('genie_dialogue').where({ session_id: sessionId, actor: 'system' }).andWhere('seq', '<=', upToSeq).orderBy('seq');
    return rows.map((r) => dialogueRow.parse(r));
  }

  async tokenCountsBefore(sessionId: string, beforeSeq: number, limit: number): Promise<Array<{ seq: number; actor: Actor; tokenCount: number }>> {
    const rows = await this.db('genie_dialogue').where({ session_id: sessionId }).andWhere('seq', '<', beforeSeq).select('seq', 'actor', 'token_count').orderBy('seq', 'desc').limit(limit);
    return countedRows.parse(rows).map((r) => ({ seq: r.seq, actor: r.actor, tokenCount: r.token_count }));
  }

  /** The elements at positions from..to, oldest first. */
  async dialogueRange(sessionId: string, from: number, to: number, tx?: Tx): Promise<DialogueRow[]> {
    const rows = await knexOf(tx, this.db)('genie_dialogue').where({ session_id: sessionId }).andWhere('seq', '>=', from).andWhere('seq', '<=', to).orderBy('seq');
    return rows.map((r) => dialogueRow.parse(r));
  }

  async dialogueLengthAt(accountId: string, id: string, revision: number | undefined): Promise<number | undefined> {
    const head = await this.db('genie_sessions').where({ id, account_id: accountId }).whereNull('deleted_at').first('dialogue_length');
    if (!head) return undefined;
    const r = revision === undefined ? head : await this.db('genie_session_revisions').where({ session_id: id, revision }).first('dialogue_length');
    return r ? z.object({ dialogue_length: int }).parse(r).dialogue_length : undefined;
  }

  async listSessions(
    accountId: string,
    filter: SessionFilter,
    order: SessionOrder,
    after: SessionCursor | undefined,
    limit: number,
  ): Promise<Array<{ seq: number; at: string | undefined; session: StoredSession; last: DialogueRow | undefined }>> {
    const q = this.db('genie_sessions as s').leftJoin('genie_dialogue as d', (j) => j.on('d.session_id', 's.id').andOn('d.seq', 's.dialogue_length'));
    if (!this.filtered(q, accountId, filter)) return [];
    const column = order.by === 'created' ? 's.created_at' : order.by === 'updated' ? 's.updated_at' : undefined;
    const cmp = order.desc ? '<' : '>';
    const dir = order.desc ? 'desc' : 'asc';
    if (after && column && after.at !== undefined) q.andWhereRaw(`(${column}, s.seq) ${cmp} (?::timestamptz, ?)`, [after.at, after.seq]);
    else if (after) q.andWhere('s.seq', cmp, after.seq);
    const rows = await q
      .select(
        's.*',
        // Postgres' own text of the time keeps its microseconds, so the next page starts exactly after it.
        this.db.raw(`${column ?? 's.created_at'}::text as k_at`),
        'd.seq as d_seq',
        'd.actor as d_actor',
        'd.actor_text as d_actor_text',
        'd.event as d_event',
        'd.timestamp as d_timestamp',
        'd.revision as d_revision',
        'd.token_count as d_token_count',
      )
      .orderBy(column ? [{ column, order: dir }, { column: 's.seq', order: dir }] : [{ column: 's.seq', order: dir }])
      .limit(limit);
    return rows.map((row) => {
      const r = listedRow.parse(row);
      const last =
        r.d_seq === undefined
          ? undefined
          : dialogueRow.parse({
              seq: r.d_seq,
              actor: r.d_actor,
              actor_text: r.d_actor_text,
              event: r.d_event,
              timestamp: r.d_timestamp,
              revision: r.d_revision,
              token_count: r.d_token_count,
            });
      return { seq: r.seq, at: column ? r.k_at : undefined, session: sessionRow.parse(row), last };
    });
  }

  async countSessions(accountId: string, filter: SessionFilter): Promise<number> {
    const q = this.db('genie_sessions as s');
    if (!this.filtered(q, accountId, filter)) return 0;
    const row = await q.count({ n: '*' }).first();
    return z.object({ n: int }).parse(row).n;
  }

  /**
   * Adds `filter` to `q` (over `genie_sessions as s`): live sessions of the account, each restriction a
   * predicate one of the indexes serves (labels: GIN `@>` and `?`; times: the (account, time, seq) b-trees;
   * model type, state and end user: their (account, …, seq) b-trees). False when nothing can match.
   */
  private filtered(q: Knex.QueryBuilder, accountId: string, filter: SessionFilter): boolean {
    q.where('s.account_id', accountId).whereNull('s.deleted_at');
    if (filter.modelType) q.andWhere('s.model_type', filter.modelType);
    if (filter.endUserId) q.andWhere('s.end_user_id', filter.endUserId);
    if (filter.labels?.length) q.andWhereRaw('s.labels @> ?::jsonb', [json(Object.fromEntries(filter.labels.map((l) => [l.key, l.value])))]);
    // `jsonb ? text` written as the operator's function would bypass the index; the `?` is escaped for knex.
    for (const key of filter.hasLabels ?? []) q.andWhereRaw('s.labels \\? ?', [key]);
    for (const t of filter.times ?? []) q.andWhere(t.column === 'created' ? 's.created_at' : 's.updated_at', t.op, t.at);
    if (filter.states) {
      const states = filter.states;
      if (states.length === 0) return false;
      q.andWhere((w) => {
        for (const s of states) {
          w.orWhere((o) => {
            o.where('s.model_type', s.modelType).andWhere('s.schema_version', s.schemaVersion).whereIn('s.state', s.states);
          });
        }
      });
    }
    return true;
  }

  async endUserSessions(accountId: string, endUserId: string, limit: number): Promise<string[]> {
    const ids = await this.db('genie_sessions').where({ account_id: accountId, end_user_id: endUserId }).whereNull('deleted_at').orderBy('seq').limit(limit).pluck('id');
    return z.array(z.string()).parse(ids);
  }

  async lockExpired(now: Date, limit: number, tx: Tx): Promise<Array<{ id: string; revision: number }>> {
    const trx = knexOf(tx);
    const doomed = await trx('genie_sessions as s')
      .select('s.id', 's.revision')
      .whereNull('s.deleted_at')
      .andWhere((w) => {
        w.where('s.expire_time', '<=', now).orWhereExists(
          trx('genie_model_types as t')
            .whereRaw('t.account_id = s.account_id and t.name = s.model_type and t.session_ttl_seconds > 0')
            .whereRaw('t.schema_version = (select max(v.schema_version) from genie_model_types v where v.account_id = s.account_id and v.name = s.model_type)')
            .whereRaw("s.updated_at <= ?::timestamptz - t.session_ttl_seconds * interval '1 second'", [now]),
        );
      })
      .orderBy('s.seq')
      .limit(limit)
      .forUpdate('s')
      .skipLocked();
    return z.array(z.object({ id: z.string(), revision: int })).parse(doomed);
  }

  async dropTombstones(cutoff: Date, limit: number): Promise<number> {
    return this.db.transaction(async (trx) => {
      const ids = z
        .array(z.string())
        .parse(await trx('genie_sessions').where('deleted_at', '<', cutoff).orderBy('deleted_at').limit(limit).forUpdate().skipLocked().pluck('id'));
      if (ids.length === 0) return 0;
      await trx('session_commits').whereIn('session_id', ids).del();
      await trx('genie_sessions').whereIn('id', ids).del();
      return ids.length;
    });
  }

  async secondaryExists(sessionId: string, key: string, tx?: Tx): Promise<boolean> {
    return !!(await knexOf(tx, this.db)('genie_secondary').where({ session_id: sessionId, key }).first('key'));
  }

  async secondary(sessionId: string, key: string): Promise<(SecondaryMeta & { value: Buffer }) | undefined> {
    const r = await this.db('genie_secondary').where({ session_id: sessionId, key }).first();
    if (!r) return undefined;
    return { ...secondaryMetaRow.parse(r), value: Buffer.from(z.instanceof(Uint8Array).parse(r.value)) };
  }

  async listSecondary(sessionId: string, afterKey: string | undefined, limit: number): Promise<SecondaryMeta[]> {
    const rows = await keysetPage(this.db('genie_secondary').where({ session_id: sessionId }).select('key', 'size_bytes', 'revision', 'created_at'), 'key', afterKey, limit);
    return rows.map((r) => secondaryMetaRow.parse(r));
  }
}

/**
 * Deletes a session's rows of one table and counts them in the statement (RETURNING rather than the
 * affected-row count, which not every driver reports; counted in SQL so the rows never reach the process).
 */
async function deleteCounted(trx: Knex.Transaction, table: 'genie_secondary' | 'genie_dialogue' | 'genie_session_revisions', sessionId: string): Promise<number> {
  const { rows } = (await trx.raw(`WITH d AS (DELETE FROM ${table} WHERE session_id = ? RETURNING 1) SELECT count(*)::int AS n FROM d`, [sessionId])) as { rows: unknown[] };
  return z.array(z.object({ n: int })).parse(rows)[0]?.n ?? 0;
}

/** Revision 1 of a session: it appends nothing and has no previous revision, so it stores every column. */
async function insertRevision(trx: Knex.Transaction, s: StoredSession): Promise<void> {
  await trx('genie_session_revisions').insert({
    session_id: s.id,
    revision: s.revision,
    schema_version: s.schemaVersion,
    state: s.state,
    actor: s.actor,
    actor_input: s.actorInput,
    fields: json(s.fields),
    dialogue_length: s.dialogueLength,
    dialogue_token_count: s.dialogueTokenCount,
    created_at: s.updatedAt,
  });
}

/**
 * A session at one of its revisions: the head's identity laid under the revision's snapshot, with what the
 * revision does not repeat put back: a NULL actor_input is the text of the element at its dialogue_length,
 * and NULL fields are the latest stored ones before it (one step down the index of revisions with fields).
 */
const SESSION_AT = `
SELECT g.id, g.account_id, g.model_type, g.forked_from_session_id, g.forked_from_revision, g.expire_time, g.end_user_id, g.labels, g.created_at, g.token_encoding,
  r.schema_version, r.state, r.actor, r.revision, r.dialogue_length, r.dialogue_token_count, r.created_at AS updated_at,
  coalesce(r.actor_input, d.actor_text) AS actor_input,
  coalesce(r.fields, (
    SELECT f.fields FROM genie_session_revisions f
    WHERE f.session_id = r.session_id AND f.revision < r.revision AND f.fields IS NOT NULL
    ORDER BY f.revision DESC LIMIT 1)) AS fields
FROM genie_sessions g
JOIN genie_session_revisions r ON r.session_id = g.id AND r.revision = ?
LEFT JOIN genie_dialogue d ON r.actor_input IS NULL AND d.session_id = g.id AND d.seq = r.dialogue_length
WHERE g.id = ? AND g.account_id = ? AND g.deleted_at IS NULL`;

const lastColumns = z.object({
  l_seq: nullable(int),
  l_actor: z.unknown(),
  l_actor_text: z.unknown(),
  l_event: z.unknown(),
  l_timestamp: z.unknown(),
  l_revision: z.unknown(),
  l_token_count: z.unknown(),
});

/**
 * Commits `w` as the revision after `current` in one statement, so a write is one round trip: the head's
 * update is guarded by (id, account, revision, live) and every other row is inserted from what it returns,
 * so when the guard fails nothing is written and no row comes back (undefined). Every part of the statement
 * reads the snapshot it started with, so `prior` (the head before the update) and the session's last
 * element when nothing is appended are read as of `current`. The revision row leaves out what it would
 * repeat: actor_input when it is the text of the element at its dialogue_length, fields when they equal
 * the previous revision's.
 */
async function commitStatement(
  q: Knex | Knex.Transaction,
  current: StoredSession,
  w: SessionWrite,
  guard?: { latestSchemaVersion: number },
): Promise<WriteResult | undefined> {
  const id = current.id;
  const revision = current.revision + 1;
  const now = new Date();
  const appended: DialogueRow[] = w.dialogue.map((d, i) => ({ ...d, seq: current.dialogueLength + i + 1, revision }));
  const lastAppended = appended[appended.length - 1];
  const dialogueLength = current.dialogueLength + appended.length;
  const appendedTokens = appended.reduce((n, d) => n + d.tokenCount, 0);
  const bindings: Knex.RawBinding[] = [];
  const bind = (...v: Knex.RawBinding[]) => {
    bindings.push(...v);
    return v.map(() => '?').join(', ');
  };
  const parts: string[] = [
    `s AS (
      UPDATE genie_sessions SET schema_version = ${bind(w.schemaVersion)}, state = ${bind(w.state)}, actor = ${bind(w.actor)},
        actor_input = ${bind(w.actorInput)}, fields = ${bind(json(w.fields))}::jsonb, revision = ${bind(revision)},
        dialogue_length = ${bind(dialogueLength)}, dialogue_token_count = dialogue_token_count + ${bind(appendedTokens)},
        expire_time = ${bind(w.expireTime ?? null)}::timestamptz, labels = ${bind(json(w.labels))}::jsonb, updated_at = ${bind(now)}::timestamptz
      WHERE id = ${bind(id)} AND account_id = ${bind(current.accountId)} AND revision = ${bind(current.revision)} AND deleted_at IS NULL
      ${
        // A write decided on cached model type versions lands only if no newer version was registered since.
        guard
          ? `AND NOT EXISTS (SELECT 1 FROM genie_model_types t WHERE t.account_id = ${bind(current.accountId)} AND t.name = ${bind(current.modelType)} AND t.schema_version > ${bind(guard.latestSchemaVersion)})`
          : ''
      }
      RETURNING *)`,
    // Nothing appended: the answer's last element, and what a NULL actor_input would stand for.
    `last AS (SELECT seq, actor, actor_text, event, timestamp, revision, token_count FROM genie_dialogue
      WHERE ${lastAppended || current.dialogueLength === 0 ? 'false' : `session_id = ${bind(id)} AND seq = ${bind(current.dialogueLength)}`})`,
  ];
  const actorInput = lastAppended
    ? `CASE WHEN ${bind(lastAppended.actorText === w.actorInput)}::boolean THEN NULL ELSE s.actor_input END`
    : `CASE WHEN s.actor_input = (SELECT actor_text FROM last) THEN NULL ELSE s.actor_input END`;
  parts.push(`r AS (
    INSERT INTO genie_session_revisions (session_id, revision, schema_version, state, actor, actor_input, fields, dialogue_length, dialogue_token_count, created_at)
    SELECT s.id, s.revision, s.schema_version, s.state, s.actor, ${actorInput},
      CASE WHEN s.fields = (SELECT prior.fields FROM genie_sessions prior WHERE prior.id = s.id) THEN NULL ELSE s.fields END,
      s.dialogue_length, s.dialogue_token_count, s.updated_at
    FROM s)`);
  if (appended.length) {
    const rows = appended.map((d) => ({ seq: d.seq, actor: d.actor, actor_text: d.actorText, event: d.event, timestamp: d.timestamp.toISOString(), token_count: d.tokenCount }));
    parts.push(`d AS (
      INSERT INTO genie_dialogue (session_id, seq, actor, actor_text, event, timestamp, revision, token_count)
      SELECT s.id, x.seq, x.actor, x.actor_text, x.event, x.timestamp, s.revision, x.token_count
      FROM s, jsonb_to_recordset(${bind(json(rows))}::jsonb) AS x(seq int, actor text, actor_text text, event text, timestamp timestamptz, token_count int))`);
  }
  if (w.events.length) {
    const stored = storedEventsJson(w.events, new Map(appended.map((d) => [d.seq, d])));
    parts.push(`c AS (INSERT INTO session_commits (session_id, revision, events) SELECT s.id, s.revision, ${bind(stored)}::jsonb FROM s)`);
  }
  const sql = `WITH ${parts.join(',\n')}
    SELECT s.*, l.seq AS l_seq, l.actor AS l_actor, l.actor_text AS l_actor_text, l.event AS l_event, l.timestamp AS l_timestamp, l.revision AS l_revision,
      l.token_count AS l_token_count
    FROM s LEFT JOIN last l ON true`;
  const { rows } = (await q.raw(sql, bindings)) as { rows: unknown[] };
  const row = rows[0];
  if (row === undefined) return undefined;
  const l = lastColumns.parse(row);
  const last =
    lastAppended ??
    (l.l_seq === undefined
      ? undefined
      : dialogueRow.parse({
          seq: l.l_seq,
          actor: l.l_actor,
          actor_text: l.l_actor_text,
          event: l.l_event,
          timestamp: l.l_timestamp,
          revision: l.l_revision,
          token_count: l.l_token_count,
        }));
  return { session: sessionRow.parse(row), last, commit: { revision, events: w.events } };
}
