/**
 * Postgres bytes per dialogue element: a fresh session gets `elements` utterances of 1 KB through SendEvent
 * (user and assistant in turn); the genie tables are vacuumed before and after, and the growth of each
 * one's pg_total_relation_size (table, indexes, TOAST) is divided by the elements appended. It runs right
 * after seeding, before any load: nothing else writes meanwhile, and the tables hold little free space for
 * the new rows to fill (which would make the growth come out low).
 */
import pg from 'pg';
import { ASSISTANT_BYTES, type Genie, text } from './dialogue.js';
import { genieTables, SESSION_TABLE, sizes, vacuum } from './genie-tables.js';

export interface PgBytes {
  elements: number;
  utteranceBytes: number;
  /** Growth per element, by table. */
  perTable: Record<string, number>;
  total: number;
  target: string;
  met: boolean;
  seconds: number;
}

/**
 * Every write rewrites the session's head row (genie_sessions), so 2,000 writes in half a minute leave 2,000
 * dead versions of it, which autovacuum reclaims in a live database long before they add up: counted, they
 * would read as about a kilobyte per element of a table that holds one row per session. Vacuuming that table
 * every 50 writes leaves at most 50 of them in the growth.
 */
const HEAD_VACUUM_EVERY = 50;

/** What storing the text once costs at most: the text, half again (indexes, row headers), 300 bytes of row data. */
const targetBytes = (utterance: number) => 1.5 * utterance + 300;

export async function measurePgBytes(genie: Genie, databaseUrl: string, elements: number, log: (m: string) => void): Promise<PgBytes> {
  const c = new pg.Client({ connectionString: databaseUrl, statement_timeout: 5 * 60_000 });
  await c.connect();
  try {
    const tables = await genieTables(c);
    const id = await genie.create({ topic: 'bytes per element' });
    await vacuum(c, tables);
    const before = await sizes(c, tables);
    const began = Date.now();
    log(`bytes per element: ${elements} utterances of ${ASSISTANT_BYTES} B into ${tables.join(', ')}`);
    for (let i = 0; i < elements; i++) {
      await genie.say(id, i, text(ASSISTANT_BYTES));
      if ((i + 1) % HEAD_VACUUM_EVERY === 0) await vacuum(c, [SESSION_TABLE]);
    }
    const seconds = Math.round((Date.now() - began) / 100) / 10;
    await vacuum(c, tables);
    const after = await sizes(c, tables);
    const perTable = Object.fromEntries(tables.map((t) => [t, Math.round(((after[t] ?? 0) - (before[t] ?? 0)) / elements)]));
    const total = Math.round(tables.reduce((sum, t) => sum + ((after[t] ?? 0) - (before[t] ?? 0)), 0) / elements);
    const limit = targetBytes(ASSISTANT_BYTES);
    return { elements, utteranceBytes: ASSISTANT_BYTES, perTable, total, target: `≤${limit} B (1.5 × ${ASSISTANT_BYTES} + 300)`, met: total <= limit, seconds };
  } finally {
    await c.end();
  }
}

export function pgBytesTable(b: PgBytes): string {
  const head = ['table', 'bytes per element'];
  const out = [`| ${head.join(' | ')} |`, '|---|---|'];
  for (const [t, v] of Object.entries(b.perTable)) out.push(`| ${t} | ${v.toLocaleString('en-US')} |`);
  out.push(`| **total** (target ${b.target}) | **${b.total.toLocaleString('en-US')}** ${b.met ? 'met' : 'NOT met'} |`);
  return out.join('\n');
}
