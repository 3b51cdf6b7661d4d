import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Db } from './db.js';
import { Idempotency } from './idempotency.js';
import { asDate, asJson } from './rows.js';

/** A query runner: the pool, or the transaction a write runs in. */
export type Q = Knex | Knex.Transaction;

export interface PromptRow {
  id: string;
  accountId: string;
  userProfileId: string;
  llmClientId: string;
  name: string;
  description: string;
  version: string;
  annotations: Record<string, string>;
  tags: string[];
  sessionKey: string;
  ipAddress: string;
  userAgent: string;
  url: string;
  createdAt: Date;
  updatedAt: Date;
  /** 1 on creation, +1 per committed change to the prompt or its logs. */
  revision: number;
}

export type NewPrompt = Omit<PromptRow, 'id' | 'createdAt' | 'updatedAt' | 'revision'>;

/** The fields UpdatePrompt may change. */
export type PromptPatch = Partial<Pick<PromptRow, 'name' | 'description' | 'version' | 'annotations' | 'tags'>>;

type Json = Record<string, unknown>;

/** Log rows: `id` is the UUID the API shows; `seq` the internal creation order (bigserial), for paging. */
export interface HistoryRow {
  id: string;
  seq: number;
  promptId: string;
  request: Json;
  response: Json;
  /** OpenAI-style chat messages, as stored. */
  messages: unknown[];
  revision: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface ToolCallRow {
  id: string;
  seq: number;
  promptId: string;
  pluginId: string | undefined;
  functionName: string;
  functionArgs: string;
  request: Json;
  response: Json;
  revision: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface PluginUsageRow {
  id: string;
  seq: number;
  promptId: string;
  pluginId: string;
  inputText: string;
  revision: number;
  createdAt: Date;
  updatedAt: Date;
}

export const promptFromRow = (r: any): PromptRow => ({
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
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
  revision: Number(r.revision),
});

const historyFromRow = (r: any): HistoryRow => ({
  id: r.uid,
  seq: Number(r.id),
  promptId: r.prompt_id,
  request: asJson(r.request),
  response: asJson(r.response),
  messages: asJson(r.messages),
  revision: Number(r.revision),
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

const toolCallFromRow = (r: any): ToolCallRow => ({
  id: r.uid,
  seq: Number(r.id),
  promptId: r.prompt_id,
  pluginId: r.plugin_id ?? undefined,
  functionName: r.function_name,
  functionArgs: r.function_args,
  request: asJson(r.request),
  response: asJson(r.response),
  revision: Number(r.revision),
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

const pluginUsageFromRow = (r: any): PluginUsageRow => ({
  id: r.uid,
  seq: Number(r.id),
  promptId: r.prompt_id,
  pluginId: r.plugin_id,
  inputText: r.input_text,
  revision: Number(r.revision),
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

export type LogTable = 'prompt_history' | 'prompt_tool_calls' | 'prompt_plugin_usage';
const logDecoders = {
  prompt_history: historyFromRow,
  prompt_tool_calls: toolCallFromRow,
  prompt_plugin_usage: pluginUsageFromRow,
} as const;
type LogRowOf<T extends LogTable> = ReturnType<(typeof logDecoders)[T]>;

export type LogEntry =
  | { table: 'prompt_history'; row: HistoryRow }
  | { table: 'prompt_tool_calls'; row: ToolCallRow }
  | { table: 'prompt_plugin_usage'; row: PluginUsageRow };

/** What a watch replays: log entries, and the prompt itself at the revision of its latest update. */
export type ReplayEntry = (LogEntry & { revision?: undefined }) | { table: 'prompts'; row: PromptRow; revision: number };

/** The revision a replayed entry takes: a log row's own, or the prompt's update revision. */
export const replayRevision = (e: ReplayEntry): number => e.revision ?? e.row.revision;

/** Why a conditional or no-op update did not write. */
export type UpdateOutcome =
  | { kind: 'missing' }
  | { kind: 'mismatch'; revision: number }
  | { kind: 'unchanged'; row: PromptRow }
  | { kind: 'updated'; row: PromptRow };

export interface PromptFilter {
  llmClientId?: string | undefined;
  tag?: string | undefined;
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
}

/** Keyset position in the newest-first prompt order; `createdAt` is Postgres' own text (microseconds). */
export interface PromptCursor {
  createdAt: string;
  id: string;
}

export interface PurgedBatch {
  prompts: Array<{ id: string; sessionKey: string; revision: number }>;
  history: number;
  toolCalls: number;
  pluginUsage: number;
}

const sortedEntries = (o: Record<string, string>) => Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

export class PromptRepo {
  constructor(private readonly db: Db) {}

  /** A read-only snapshot, so a multi-table read reflects one moment. */
  snapshot<T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return this.db.transaction(fn, { isolationLevel: 'repeatable read', readOnly: true } as Knex.TransactionConfig);
  }

  /**
   * Inserts unless the session key exists; returns the row either way with `created` telling which.
   * ON CONFLICT makes two racing opens of one new key agree on a single prompt.
   */
  async insertOrGet(p: NewPrompt, q: Q = this.db): Promise<{ row: PromptRow; created: boolean }> {
    const inserted = await q('prompts')
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
      })
      .onConflict('session_key')
      .ignore()
      .returning('*');
    if (inserted[0]) return { row: promptFromRow(inserted[0]), created: true };
    const existing = await this.bySessionKey(p.sessionKey, q);
    if (!existing) throw new Error(`prompt ${p.sessionKey} vanished between insert and read`);
    return { row: existing, created: false };
  }

  async byId(id: string, q: Q = this.db): Promise<PromptRow | undefined> {
    const r = await q('prompts').where({ id }).first();
    return r && promptFromRow(r);
  }

  async bySessionKey(sessionKey: string, q: Q = this.db): Promise<PromptRow | undefined> {
    const r = await q('prompts').where({ session_key: sessionKey }).first();
    return r && promptFromRow(r);
  }

  /** One page of an account's prompts, newest first; returns up to `limit` rows and each row's cursor. */
  async list(accountId: string, f: PromptFilter, after: PromptCursor | undefined, limit: number): Promise<Array<{ row: PromptRow; cursor: PromptCursor }>> {
    const q = this.db('prompts')
      .select('*', this.db.raw('created_at::text as created_at_text'))
      .where({ account_id: accountId });
    if (f.llmClientId) q.andWhere({ llm_client_id: f.llmClientId });
    if (f.tag) q.andWhereRaw('tags @> array[?]::text[]', [f.tag]);
    if (f.createdAfter) q.andWhere('created_at', '>=', f.createdAfter);
    if (f.createdBefore) q.andWhere('created_at', '<', f.createdBefore);
    if (after) q.andWhereRaw('(created_at, id) < (?::timestamptz, ?::uuid)', [after.createdAt, after.id]);
    const rows = await q.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(limit);
    return rows.map((r: any) => ({ row: promptFromRow(r), cursor: { createdAt: r.created_at_text, id: r.id } }));
  }

  /**
   * Applies a patch under the prompt's row lock. A patch that changes nothing writes nothing (no revision,
   * no update_time); one that does bumps the revision and records it as the prompt's update revision.
   */
  async update(accountId: string, id: string, patch: PromptPatch, expectedRevision: number | undefined, q: Q): Promise<UpdateOutcome> {
    const r = await q('prompts').where({ id, account_id: accountId }).forUpdate().first();
    if (!r) return { kind: 'missing' };
    const current = promptFromRow(r);
    if (expectedRevision !== undefined && expectedRevision !== current.revision) return { kind: 'mismatch', revision: current.revision };
    const set: Record<string, unknown> = {};
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (patch.name !== undefined && patch.name !== current.name) set.name = patch.name;
    if (patch.description !== undefined && patch.description !== current.description) set.description = patch.description;
    if (patch.version !== undefined && patch.version !== current.version) set.version = patch.version;
    if (patch.annotations !== undefined && !same(sortedEntries(patch.annotations), sortedEntries(current.annotations))) {
      set.annotations = JSON.stringify(patch.annotations);
    }
    if (patch.tags !== undefined && !same(patch.tags, current.tags)) set.tags = patch.tags;
    if (Object.keys(set).length === 0) return { kind: 'unchanged', row: current };
    const [u] = await q('prompts')
      .where({ id })
      .update({ ...set, updated_at: q.fn.now(), revision: q.raw('revision + 1'), update_revision: q.raw('revision + 1') })
      .returning('*');
    return { kind: 'updated', row: promptFromRow(u) };
  }

  /** Deletes a prompt; its logs go with it (ON DELETE CASCADE), and so do stored results that repeat them. */
  async delete(accountId: string, id: string, expectedRevision: number | undefined, q: Q): Promise<UpdateOutcome> {
    const r = await q('prompts').where({ id, account_id: accountId }).forUpdate().first();
    if (!r) return { kind: 'missing' };
    const current = promptFromRow(r);
    if (expectedRevision !== undefined && expectedRevision !== current.revision) return { kind: 'mismatch', revision: current.revision };
    await q('prompts').where({ id }).del();
    await Idempotency.forgetSubjects(q, [id]);
    return { kind: 'updated', row: current };
  }

  /**
   * Starts a log write: locks the prompt row (serialising log writes per prompt, so revisions follow
   * commit order), bumps its revision and activity time. Undefined when the account has no such prompt.
   */
  async bumpRevision(accountId: string, promptId: string, q: Q): Promise<number | undefined> {
    const [r] = await q('prompts')
      .where({ id: promptId, account_id: accountId })
      .update({ revision: q.raw('revision + 1'), last_activity_at: q.fn.now() })
      .returning('revision');
    return r === undefined ? undefined : Number(r.revision);
  }

  async revisionOf(promptId: string, q: Q = this.db): Promise<number> {
    const r = await q('prompts').where({ id: promptId }).first('revision');
    return r ? Number(r.revision) : 0;
  }

  /**
   * bumpRevision then insertHistory as one statement: atomic on its own (the UPDATE's row lock orders
   * revisions exactly as in a transaction), so a write that claims no request id needs no transaction and
   * makes one round trip instead of four. Undefined when the prompt is not the account's.
   */
  async appendHistory(
    accountId: string,
    h: { promptId: string; request: Json; response: Json; messages: unknown[] },
  ): Promise<HistoryRow | undefined> {
    const r = await this.db.raw(
      `with bumped as (
         update prompts set revision = revision + 1, last_activity_at = CURRENT_TIMESTAMP
         where id = ? and account_id = ? returning revision
       )
       insert into prompt_history (prompt_id, request, response, messages, revision)
       select ?::uuid, ?::jsonb, ?::jsonb, ?::jsonb, revision from bumped
       returning *`,
      [h.promptId, accountId, h.promptId, JSON.stringify(h.request), JSON.stringify(h.response), JSON.stringify(h.messages)],
    );
    const row = (r as { rows: unknown[] }).rows[0];
    return row === undefined ? undefined : historyFromRow(row);
  }

  async insertHistory(
    h: { promptId: string; request: Json; response: Json; messages: unknown[]; revision: number },
    q: Q,
  ): Promise<HistoryRow> {
    const [r] = await q('prompt_history')
      .insert({
        prompt_id: h.promptId,
        request: JSON.stringify(h.request),
        response: JSON.stringify(h.response),
        messages: JSON.stringify(h.messages),
        revision: h.revision,
      })
      .returning('*');
    return historyFromRow(r);
  }

  async insertToolCall(
    c: { promptId: string; pluginId: string | undefined; functionName: string; functionArgs: string; request: Json; response: Json; revision: number },
    q: Q,
  ): Promise<ToolCallRow> {
    const [r] = await q('prompt_tool_calls')
      .insert({
        prompt_id: c.promptId,
        plugin_id: c.pluginId ?? null,
        function_name: c.functionName,
        function_args: c.functionArgs,
        request: JSON.stringify(c.request),
        response: JSON.stringify(c.response),
        revision: c.revision,
      })
      .returning('*');
    return toolCallFromRow(r);
  }

  async insertPluginUsage(u: { promptId: string; pluginId: string; inputText: string; revision: number }, q: Q): Promise<PluginUsageRow> {
    const [r] = await q('prompt_plugin_usage')
      .insert({ prompt_id: u.promptId, plugin_id: u.pluginId, input_text: u.inputText, revision: u.revision })
      .returning('*');
    return pluginUsageFromRow(r);
  }

  /** A page of one log in creation order (the bigserial id), after the id `afterId`. */
  async listLog<T extends LogTable>(table: T, promptId: string, afterId: number, limit: number, q: Q = this.db): Promise<Array<LogRowOf<T>>> {
    const rows = await q(table).where({ prompt_id: promptId }).andWhere('id', '>', afterId).orderBy('id', 'asc').limit(limit);
    return rows.map((r: any) => logDecoders[table](r) as LogRowOf<T>);
  }

  /**
   * The first `limit` changes after revision `after`, ascending: log entries of every kind, and the prompt
   * itself when its latest update is among them. Each change takes the next revision of its prompt; only
   * superseded updates leave gaps, so the result is the first `limit` of what a watcher missed.
   */
  async logsByRevision(promptId: string, after: number, limit: number, q: Q = this.db): Promise<ReplayEntry[]> {
    const tables = Object.keys(logDecoders) as LogTable[];
    const found: ReplayEntry[][] = await Promise.all(
      tables.map(async (table) => {
        const rows = await q(table).where({ prompt_id: promptId }).andWhere('revision', '>', after).orderBy('revision').limit(limit);
        return rows.map((r: any) => ({ table, row: logDecoders[table](r) }) as LogEntry);
      }),
    );
    // Only the latest update of the prompt is kept (as the prompt row itself): earlier ones are superseded.
    const p = await q('prompts').where({ id: promptId }).andWhere('update_revision', '>', after).first();
    if (p) found.push([{ table: 'prompts', row: promptFromRow(p), revision: Number(p.update_revision) }]);
    return found
      .flat()
      .sort((x, y) => replayRevision(x) - replayRevision(y))
      .slice(0, limit);
  }

  /** The most recent rows of one log, newest first. */
  async recentLog<T extends LogTable>(table: T, promptId: string, limit: number, q: Q = this.db): Promise<Array<LogRowOf<T>>> {
    const rows = await q(table).where({ prompt_id: promptId }).orderBy('id', 'desc').limit(limit);
    return rows.map((r: any) => logDecoders[table](r) as LogRowOf<T>);
  }

  /**
   * Deletes up to `batchSize` prompts idle since before `cutoff`, with their logs, in one short
   * transaction. SKIP LOCKED passes over prompts a write holds right now (they are active, not idle), and
   * the row locks taken make a log write that starts meanwhile wait, then find the prompt gone.
   */
  async purgeIdleBatch(cutoff: Date, batchSize: number): Promise<PurgedBatch> {
    return this.db.transaction(async (trx) => {
      const doomed = await trx('prompts')
        .select('id', 'session_key', 'revision')
        .where('last_activity_at', '<', cutoff)
        .orderBy('last_activity_at')
        .limit(batchSize)
        .forUpdate()
        .skipLocked();
      if (doomed.length === 0) return { prompts: [], history: 0, toolCalls: 0, pluginUsage: 0 };
      const ids = doomed.map((d: any) => d.id as string);
      // Counted explicitly (rather than left to the cascade) so the purge can report what it removed.
      // RETURNING rather than the affected-row count, which not every driver (knex-pglite) reports.
      const history = (await trx('prompt_history').whereIn('prompt_id', ids).del(['id'])).length;
      const toolCalls = (await trx('prompt_tool_calls').whereIn('prompt_id', ids).del(['id'])).length;
      const pluginUsage = (await trx('prompt_plugin_usage').whereIn('prompt_id', ids).del(['id'])).length;
      await trx('prompts').whereIn('id', ids).del();
      await Idempotency.forgetSubjects(trx, ids);
      return { prompts: doomed.map((d: any) => ({ id: d.id, sessionKey: d.session_key, revision: Number(d.revision) })), history, toolCalls, pluginUsage };
    });
  }
}
