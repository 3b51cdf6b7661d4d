import type { Db } from '../../src/storage/db.js';

/**
 * The tables of the database in which any row still holds one of `secrets`, as text or as bytes (bytea
 * values render as hex in JSON). Deletion tests use it to prove content left every table, not only the
 * ones an RPC reads.
 */
export async function tablesHolding(db: Db, secrets: string[]): Promise<string[]> {
  const needles = secrets.flatMap((s) => [s, Buffer.from(s).toString('hex')]);
  const tables = (await db('information_schema.tables')
    .where({ table_schema: db.raw('current_schema()'), table_type: 'BASE TABLE' })
    .pluck('table_name')) as string[];
  const found: string[] = [];
  for (const table of tables) {
    const rows = (await db.raw('select to_jsonb(t)::text as j from ?? t', [table])).rows as Array<{ j: string }>;
    if (rows.some((r) => needles.some((n) => r.j.includes(n)))) found.push(table);
  }
  return found;
}
