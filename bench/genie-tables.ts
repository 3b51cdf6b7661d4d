/**
 * The genie tables a session's data lives in, on either schema: session_commits (one row per revision,
 * issue 14) when it exists, else session_events (one row per event, before it).
 */
import type pg from 'pg';

export const SESSION_TABLE = 'genie_sessions';
const PER_SESSION = ['genie_session_revisions', 'genie_dialogue'];

/** genie_sessions, genie_session_revisions, genie_dialogue and the commit log table of this database. */
export async function genieTables(c: pg.ClientBase): Promise<string[]> {
  const { rows } = await c.query<{ commits: string | null }>(`select to_regclass('session_commits')::text as commits`);
  return [SESSION_TABLE, ...PER_SESSION, rows[0]?.commits ? 'session_commits' : 'session_events'];
}

/** VACUUM (outside any transaction): dead row versions become free space, so sizes count live data. */
export async function vacuum(c: pg.ClientBase, tables: string[], analyze = false): Promise<void> {
  await c.query(`vacuum ${analyze ? '(analyze) ' : ''}${tables.map((t) => `"${t}"`).join(', ')}`);
}

/** pg_total_relation_size (table, indexes, TOAST) of each table, in bytes. */
export async function sizes(c: pg.ClientBase, tables: string[]): Promise<Record<string, number>> {
  const { rows } = await c.query<{ name: string; bytes: string }>('select t as name, pg_total_relation_size(t::regclass) as bytes from unnest($1::text[]) t', [tables]);
  return Object.fromEntries(rows.map((r) => [r.name, Number(r.bytes)]));
}

export interface Columns {
  /** Columns copied as they are. */
  copied: string[];
  /** A serial column (session_events.id): left to its default, and the order rows are copied in. */
  serial: string | undefined;
}

/**
 * The columns of `table` other than `key` (the session id the copy replaces) and the serial ones (their
 * defaults number the copies; genie_sessions.seq, session_events.id).
 */
export async function columnsOf(c: pg.ClientBase, table: string, key: string): Promise<Columns> {
  const { rows } = await c.query<{ name: string; serial: boolean }>(
    `select column_name as name, coalesce(column_default like 'nextval(%', false) as serial
       from information_schema.columns where table_schema = current_schema() and table_name = $1 order by ordinal_position`,
    [table],
  );
  if (rows.length === 0) throw new Error(`no table ${table}`);
  return { copied: rows.filter((r) => !r.serial && r.name !== key).map((r) => r.name), serial: rows.find((r) => r.serial)?.name };
}
