import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Tx } from '../ports/unit-of-work.js';
import {
  historyRowSchema,
  LOG_TABLES,
  ownedRefSchema,
  pluginUsageRowSchema,
  promptRowSchema,
  replayRevision,
  toolCallRowSchema,
  type HistoryRow,
  type ImportedLog,
  type ImportedPrompt,
  type LogEntry,
  type LogRows,
  type LogTable,
  type NewHistory,
  type NewPluginUsage,
  type NewPrompt,
  type NewToolCall,
  type OwnedRef,
  type PluginUsageRow,
  type PromptCursor,
  type PromptDirectory,
  type PromptFilter,
  type PromptOrder,
  type PromptPatch,
  type PromptRow,
  type PromptStore,
  type DeletedLogs,
  type GonePrompt,
  type PurgedBatch,
  type ReplayEntry,
  type ToolCallRow,
} from '../prompt/store.js';
import type { Db } from './db.js';
import { KnexUnitOfWork } from './unit-of-work.js';
import { knexOf, txOf } from './knex-tx.js';
import { asJson, keysetPage, firstRow } from './rows.js';

/** A row as the driver returns it; each is checked by its domain schema on the way out. */
type DbRow = Record<string, unknown>;

const bigint = (v: unknown) => Number(v);

const promptFromRow = (r: DbRow): PromptRow =>
  promptRowSchema.parse({
    id: r.id,
    accountId: r.account_id,
    userProfileId: r.user_profile_id,
    llmClientId: r.llm_client_id,
    name: r.name,
    description: r.description,
    version: r.version,
    annotations: asJson(r.annotations),
    tags: r.tags ?? [],
    sessionKey: r.session_key,
    ipAddress: r.ip_address,
    userAgent: r.user_agent,
    url: r.url,
    endUserId: r.end_user_id ?? '',
    labels: asJson(r.labels ?? {}),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    revision: bigint(r.revision),
  });

/** The columns every log row shares: `uid` is the id the API shows, `id` the creation order. */
const logColumns = (r: DbRow) => ({
  id: r.uid,
  seq: bigint(r.id),
  promptId: r.prompt_id,
  revision: bigint(r.revision),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

const historyFromRow = (r: DbRow): HistoryRow =>
  historyRowSchema.parse({ ...logColumns(r), request: asJson(r.request), response: asJson(r.response), messages: asJson(r.messages) });

const toolCallFromRow = (r: DbRow): ToolCallRow =>
  toolCallRowSchema.parse({
    ...logColumns(r),
    pluginId: r.plugin_id ?? undefined,
    functionName: r.function_name,
    functionArgs: r.function_args,
    request: asJson(r.request),
    response: asJson(r.response),
  });

const pluginUsageFromRow = (r: DbRow): PluginUsageRow =>
  pluginUsageRowSchema.parse({ ...logColumns(r), pluginId: r.plugin_id, inputText: r.input_text });

const logDecoders: { [T in LogTable]: (r: DbRow) => LogRows[T] } = {
  prompt_history: historyFromRow,
  prompt_tool_calls: toolCallFromRow,
  prompt_plugin_usage: pluginUsageFromRow,
};

/** A log entry tagged with its table, so the union stays discriminated. */
function logEntry(table: LogTable, r: DbRow): LogEntry {
  switch (table) {
    case 'prompt_history':
      return { table, row: historyFromRow(r) };
    case 'prompt_tool_calls':
      return { table, row: toolCallFromRow(r) };
    case 'prompt_plugin_usage':
      return { table, row: pluginUsageFromRow(r) };
  }
}

const ownedFromRow = (r: DbRow): OwnedRef =>
  ownedRefSchema.parse({
    id: r.id,
    accountId: r.account_id,
    name: r.name,
    description: r.description,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    revision: bigint(r.revision),
  });

/** jsonb columns go as JSON text (a driver would otherwise take an array for a Postgres array). */
const jsonColumns = (values: Record<string, unknown>): DbRow => Object.fromEntries(Object.entries(values).map(([k, v]) => [k, JSON.stringify(v)]));

async function insertRow(tx: Tx, table: LogTable, values: DbRow): Promise<DbRow> {
  const [r] = await knexOf(tx)(table).insert(values).returning('*');
  return r;
}

const patchColumns = (p: PromptPatch): DbRow => {
  const set: DbRow = {};
  if (p.name !== undefined) set.name = p.name;
  if (p.description !== undefined) set.description = p.description;
  if (p.version !== undefined) set.version = p.version;
  if (p.annotations !== undefined) set.annotations = JSON.stringify(p.annotations);
  if (p.tags !== undefined) set.tags = p.tags;
  if (p.labels !== undefined) set.labels = JSON.stringify(p.labels);
  return set;
};

/** A connection as pg and PGlite both hand one out: `query` takes `$n` parameters and answers the rows. */
interface RawConnection {
  query(sql: string, params: unknown[]): Promise<{ rows: DbRow[] }>;
}

/**
 * One statement on a connection of the pool, with no query builder between: for the hottest writes, where
 * Knex's per-query work (rewriting `?` to `$n`, its runner, its events) costs more than the statement's own
 * client-side work. Only for statements that are already plain SQL; the pool (size, timeouts, discarding
 * broken connections, PGlite's one connection) is Knex's, as for every other query.
 */
async function pooledQuery(db: Db, sql: string, params: unknown[]): Promise<DbRow[]> {
  const client = db.client as { acquireConnection(): Promise<RawConnection>; releaseConnection(c: RawConnection): Promise<unknown> };
  const connection = await client.acquireConnection();
  try {
    return (await connection.query(sql, params)).rows;
  } finally {
    await client.releaseConnection(connection);
  }
}

/** AppendHistory without a request id: the bump and the insert in one statement (see appendHistory). */
const APPEND_HISTORY = `with bumped as (
    update prompts set revision = revision + 1, last_activity_at = CURRENT_TIMESTAMP
    where id = $1 and account_id = $2 returning revision
  )
  insert into prompt_history (prompt_id, request, response, messages, revision)
  select $1::uuid, $3::jsonb, $4::jsonb, $5::jsonb, revision from bumped
  returning *`;

/** Log rows per INSERT of an import. */
const IMPORT_CHUNK = 500;

/**
 * Prompts and their logs in Postgres (PromptStore), and the account resources prompts refer to, read from
 * AdminService's tables (PromptDirectory).
 */
export class KnexPromptStore implements PromptStore, PromptDirectory {
  constructor(private readonly db: Db) {}

  private q(tx: Tx | undefined): Knex | Knex.Transaction {
    return knexOf(tx, this.db);
  }

  snapshot<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction((trx) => work(txOf(trx)), { isolationLevel: 'repeatable read', readOnly: true });
  }

  /** ON CONFLICT makes two racing opens of one new key agree on a single prompt. */
  async insertOrGet(p: NewPrompt, tx?: Tx): Promise<{ row: PromptRow; created: boolean }> {
    const inserted = await this.q(tx)('prompts')
      .insert({
        id: randomUUID(),
        account_id: p.accountId,
        user_profile_id: p.userProfileId,
        llm_client_id: p.llmClientId,
        name: p.name,
        description: p.description,
        version: p.version,
        annotations: JSON.stringify(p.annotations),
        tags: p.tags,
        session_key: p.sessionKey,
        ip_address: p.ipAddress,
        user_agent: p.userAgent,
        url: p.url,
        end_user_id: p.endUserId || null,
        labels: JSON.stringify(p.labels),
      })
      .onConflict('session_key')
      .ignore()
      .returning('*');
    if (inserted[0]) return { row: promptFromRow(inserted[0]), created: true };
    const existing = await this.bySessionKey(p.sessionKey, tx);
    if (!existing) throw new Error(`prompt ${p.sessionKey} vanished between insert and read`);
    return { row: existing, created: false };
  }

  async insertImported(p: ImportedPrompt, logs: readonly ImportedLog[], tx: Tx): Promise<PromptRow | undefined> {
    const q = knexOf(tx);
    const [inserted] = await q('prompts')
      .insert({
        id: randomUUID(),
        account_id: p.accountId,
        user_profile_id: p.userProfileId,
        llm_client_id: p.llmClientId,
        name: p.name,
        description: p.description,
        version: p.version,
        annotations: JSON.stringify(p.annotations),
        tags: p.tags,
        session_key: p.sessionKey,
        ip_address: p.ipAddress,
        user_agent: p.userAgent,
        url: p.url,
        end_user_id: p.endUserId || null,
        created_at: p.createdAt,
        updated_at: p.updatedAt,
        revision: 1 + logs.length,
      })
      .onConflict('session_key')
      .ignore()
      .returning('*');
    if (!inserted) return undefined;
    const row = promptFromRow(inserted);
    const rows: { [T in LogTable]: DbRow[] } = { prompt_history: [], prompt_tool_calls: [], prompt_plugin_usage: [] };
    logs.forEach((l, i) => {
      const common = { prompt_id: row.id, revision: i + 2, created_at: l.createdAt, updated_at: l.createdAt };
      switch (l.table) {
        case 'prompt_history':
          rows[l.table].push({ ...common, ...jsonColumns({ request: l.request, response: l.response, messages: l.messages }) });
          break;
        case 'prompt_tool_calls':
          rows[l.table].push({ ...common, plugin_id: l.pluginId ?? null, function_name: l.functionName, function_args: l.functionArgs, ...jsonColumns({ request: l.request, response: l.response }) });
          break;
        case 'prompt_plugin_usage':
          rows[l.table].push({ ...common, plugin_id: l.pluginId, input_text: l.inputText });
          break;
      }
    });
    // Chunks keep each statement's parameters well under Postgres' 65535; each table's rows go in the order
    // they came, so their creation order (the bigserial id) is the source's.
    for (const table of LOG_TABLES) {
      for (let i = 0; i < rows[table].length; i += IMPORT_CHUNK) await q(table).insert(rows[table].slice(i, i + IMPORT_CHUNK));
    }
    return row;
  }

  async byId(id: string, tx?: Tx): Promise<PromptRow | undefined> {
    return firstRow(this.q(tx)('prompts').where({ id }), promptFromRow);
  }

  async bySessionKey(sessionKey: string, tx?: Tx): Promise<PromptRow | undefined> {
    return firstRow(this.q(tx)('prompts').where({ session_key: sessionKey }), promptFromRow);
  }

  async list(accountId: string, f: PromptFilter, after: PromptCursor | undefined, limit: number, order?: PromptOrder): Promise<Array<{ row: PromptRow; cursor: PromptCursor }>> {
    // Newest created first unless an order is given; the cursor's time is Postgres' own text (microseconds).
    const column = order?.by === 'updated' ? 'updated_at' : 'created_at';
    const desc = order ? order.desc : true;
    const q = this.filtered(accountId, f).select('*', this.db.raw(`${column}::text as cursor_at`));
    if (after) q.andWhereRaw(`(${column}, id) ${desc ? '<' : '>'} (?::timestamptz, ?::uuid)`, [after.createdAt, after.id]);
    const dir = desc ? 'desc' : 'asc';
    const rows: DbRow[] = await q.orderBy([{ column, order: dir }, { column: 'id', order: dir }]).limit(limit);
    return rows.map((r) => ({ row: promptFromRow(r), cursor: { createdAt: String(r.cursor_at), id: String(r.id) } }));
  }

  async count(accountId: string, f: PromptFilter): Promise<number> {
    const row = await this.filtered(accountId, f).count({ n: '*' }).first();
    return Number((row as { n: unknown } | undefined)?.n ?? 0);
  }

  /**
   * The account's prompts passing `f`, each restriction one an index serves: labels the GIN index on labels
   * (`@>`, `?`), tags the one on tags, times and the other fields their (account, …, time) b-trees.
   */
  private filtered(accountId: string, f: PromptFilter): Knex.QueryBuilder {
    const q = this.db('prompts').where({ account_id: accountId });
    if (f.llmClientId) q.andWhere({ llm_client_id: f.llmClientId });
    if (f.tag) q.andWhereRaw('tags @> array[?]::text[]', [f.tag]);
    if (f.createdAfter) q.andWhere('created_at', '>=', f.createdAfter);
    if (f.createdBefore) q.andWhere('created_at', '<', f.createdBefore);
    if (f.endUserId) q.andWhere({ end_user_id: f.endUserId });
    if (f.labels?.length) q.andWhereRaw('labels @> ?::jsonb', [JSON.stringify(Object.fromEntries(f.labels.map((l) => [l.key, l.value])))]);
    for (const key of f.hasLabels ?? []) q.andWhereRaw('labels \\? ?', [key]);
    for (const t of f.times ?? []) q.andWhere(t.column === 'created' ? 'created_at' : 'updated_at', t.op, t.at);
    return q;
  }

  async lock(accountId: string, id: string, tx: Tx): Promise<PromptRow | undefined> {
    const r = await knexOf(tx)('prompts').where({ id, account_id: accountId }).forUpdate().first();
    return r && promptFromRow(r);
  }

  async applyPatch(id: string, patch: PromptPatch, tx: Tx): Promise<PromptRow> {
    const q = knexOf(tx);
    const [u] = await q('prompts')
      .where({ id })
      .update({ ...patchColumns(patch), updated_at: q.fn.now(), revision: q.raw('revision + 1'), update_revision: q.raw('revision + 1') })
      .returning('*');
    return promptFromRow(u);
  }

  /** Its logs go with it (ON DELETE CASCADE), and so do stored results that repeat them. */
  async delete(id: string, tx: Tx): Promise<void> {
    await knexOf(tx)('prompts').where({ id }).del();
    await KnexUnitOfWork.forgetSubjects(tx, [id]);
  }

  async endUserPrompts(accountId: string, endUserId: string, limit: number): Promise<GonePrompt[]> {
    const rows: DbRow[] = await this.db('prompts')
      .where({ account_id: accountId, end_user_id: endUserId })
      .orderBy([{ column: 'created_at' }, { column: 'id' }])
      .limit(limit)
      .select('id', 'session_key', 'revision');
    return rows.map((r) => ({ id: String(r.id), sessionKey: String(r.session_key), revision: bigint(r.revision) }));
  }

  async deleteCounted(ids: readonly string[], tx: Tx): Promise<DeletedLogs> {
    const trx = knexOf(tx);
    // Counted in SQL (the cascade would not say), so a prompt's rows never reach the process.
    const count = async (table: LogTable) => {
      const { rows } = (await trx.raw(`WITH d AS (DELETE FROM ${table} WHERE prompt_id = ANY(?::uuid[]) RETURNING 1) SELECT count(*)::int AS n FROM d`, [[...ids]])) as {
        rows: DbRow[];
      };
      return bigint(rows[0]?.n ?? 0);
    };
    const deleted = { history: await count('prompt_history'), toolCalls: await count('prompt_tool_calls'), pluginUsage: await count('prompt_plugin_usage') };
    await trx('prompts').whereIn('id', [...ids]).del();
    return { ...deleted, requestIds: await KnexUnitOfWork.forgetSubjects(tx, [...ids]) };
  }

  async bumpRevision(accountId: string, promptId: string, tx: Tx): Promise<number | undefined> {
    const q = knexOf(tx);
    const [r] = await q('prompts')
      .where({ id: promptId, account_id: accountId })
      .update({ revision: q.raw('revision + 1'), last_activity_at: q.fn.now() })
      .returning('revision');
    return r === undefined ? undefined : bigint(r.revision);
  }

  async revisionOf(promptId: string, tx?: Tx): Promise<number> {
    const r = await this.q(tx)('prompts').where({ id: promptId }).first('revision');
    return r ? bigint(r.revision) : 0;
  }

  /**
   * Atomic on its own (the UPDATE's row lock orders revisions exactly as in a transaction), so a write that
   * claims no request id needs no transaction and makes one round trip instead of four.
   */
  async appendHistory(accountId: string, h: NewHistory): Promise<HistoryRow | undefined> {
    const [row] = await pooledQuery(this.db, APPEND_HISTORY, [h.promptId, accountId, JSON.stringify(h.request), JSON.stringify(h.response), JSON.stringify(h.messages)]);
    return row === undefined ? undefined : historyFromRow(row);
  }

  async insertHistory(h: NewHistory & { revision: number }, tx: Tx): Promise<HistoryRow> {
    const { promptId, request, response, messages, revision } = h;
    return historyFromRow(await insertRow(tx, 'prompt_history', { prompt_id: promptId, ...jsonColumns({ request, response, messages }), revision }));
  }

  async insertToolCall(c: NewToolCall & { revision: number }, tx: Tx): Promise<ToolCallRow> {
    return toolCallFromRow(
      await insertRow(tx, 'prompt_tool_calls', {
        prompt_id: c.promptId,
        plugin_id: c.pluginId ?? null,
        function_name: c.functionName,
        function_args: c.functionArgs,
        ...jsonColumns({ request: c.request, response: c.response }),
        revision: c.revision,
      }),
    );
  }

  async insertPluginUsage(u: NewPluginUsage & { revision: number }, tx: Tx): Promise<PluginUsageRow> {
    return pluginUsageFromRow(await insertRow(tx, 'prompt_plugin_usage', { prompt_id: u.promptId, plugin_id: u.pluginId, input_text: u.inputText, revision: u.revision }));
  }

  /** In creation order (the bigserial id). */
  async listLog<T extends LogTable>(table: T, promptId: string, afterSeq: number, limit: number, tx?: Tx): Promise<Array<LogRows[T]>> {
    const rows: DbRow[] = await this.q(tx)(table).where({ prompt_id: promptId }).andWhere('id', '>', afterSeq).orderBy('id', 'asc').limit(limit);
    return rows.map((r) => logDecoders[table](r));
  }

  async recentLog<T extends LogTable>(table: T, promptId: string, limit: number, tx?: Tx): Promise<Array<LogRows[T]>> {
    const rows: DbRow[] = await this.q(tx)(table).where({ prompt_id: promptId }).orderBy('id', 'desc').limit(limit);
    return rows.map((r) => logDecoders[table](r));
  }

  /** Each change takes the next revision of its prompt; only superseded updates leave gaps. */
  async logsByRevision(promptId: string, after: number, limit: number, tx?: Tx): Promise<ReplayEntry[]> {
    const q = this.q(tx);
    const found: ReplayEntry[][] = await Promise.all(
      LOG_TABLES.map(async (table) => {
        const rows: DbRow[] = await q(table).where({ prompt_id: promptId }).andWhere('revision', '>', after).orderBy('revision').limit(limit);
        return rows.map((r) => logEntry(table, r));
      }),
    );
    // Only the latest update of the prompt is kept (as the prompt row itself): earlier ones are superseded.
    const p = await q('prompts').where({ id: promptId }).andWhere('update_revision', '>', after).first();
    if (p) found.push([{ table: 'prompts', row: promptFromRow(p), revision: bigint(p.update_revision) }]);
    return found
      .flat()
      .sort((x, y) => replayRevision(x) - replayRevision(y))
      .slice(0, limit);
  }

  /**
   * SKIP LOCKED passes over prompts a write holds right now (they are active, not idle), and the row locks
   * taken make a log write that starts meanwhile wait, then find the prompt gone.
   */
  async purgeIdleBatch(cutoff: Date, batchSize: number): Promise<PurgedBatch> {
    return this.db.transaction(async (trx) => {
      const doomed: DbRow[] = await trx('prompts')
        .select('id', 'session_key', 'revision')
        .where('last_activity_at', '<', cutoff)
        .orderBy('last_activity_at')
        .limit(batchSize)
        .forUpdate()
        .skipLocked();
      if (doomed.length === 0) return { prompts: [], history: 0, toolCalls: 0, pluginUsage: 0 };
      const prompts = doomed.map((d) => ({ id: String(d.id), sessionKey: String(d.session_key), revision: bigint(d.revision) }));
      const ids = prompts.map((p) => p.id);
      // Counted explicitly (rather than left to the cascade) so the purge can report what it removed.
      // RETURNING rather than the affected-row count, which not every driver (knex-pglite) reports.
      const history = (await trx('prompt_history').whereIn('prompt_id', ids).del(['id'])).length;
      const toolCalls = (await trx('prompt_tool_calls').whereIn('prompt_id', ids).del(['id'])).length;
      const pluginUsage = (await trx('prompt_plugin_usage').whereIn('prompt_id', ids).del(['id'])).length;
      await trx('prompts').whereIn('id', ids).del();
      await KnexUnitOfWork.forgetSubjects(trx, ids);
      return { prompts, history, toolCalls, pluginUsage };
    });
  }

  async llmClientById(id: string, tx?: Tx): Promise<OwnedRef | undefined> {
    return firstRow(this.q(tx)('llm_clients').where({ id }), ownedFromRow);
  }

  async llmClientByName(accountId: string, accountNumber: string, name: string, tx?: Tx): Promise<OwnedRef | undefined> {
    const r = await this.q(tx)('llm_clients as c')
      .join('accounts as a', 'a.id', 'c.account_id')
      .where({ 'c.account_id': accountId, 'a.account_number': accountNumber, 'c.name': name })
      .first('c.*');
    return r && ownedFromRow(r);
  }

  async pluginById(id: string, tx?: Tx): Promise<OwnedRef | undefined> {
    return firstRow(this.q(tx)('plugins').where({ id }), ownedFromRow);
  }

  async listPlugins(accountId: string, afterName: string | undefined, limit: number): Promise<OwnedRef[]> {
    const rows: DbRow[] = await keysetPage(this.db('plugins').where({ account_id: accountId }), 'name', afterName, limit);
    return rows.map(ownedFromRow);
  }
}
