import type { Db } from '../../../src/storage/db.js';

/**
 * Values the database must never hold, whatever was sent: U+FFFD (what invalid UTF-8 becomes when it is
 * decoded leniently; the fuzz never sends a genuine one), NUL (in jsonb, as the escape `\u0000`), `__proto__`
 * keys in JSON, and non-finite numbers in numeric columns. Returns one line per offending column.
 */
export async function invalidPersisted(db: Db): Promise<string[]> {
  const columns = (await db('information_schema.columns')
    .join('information_schema.tables', function () {
      this.on('information_schema.columns.table_name', '=', 'information_schema.tables.table_name').andOn(
        'information_schema.columns.table_schema',
        '=',
        'information_schema.tables.table_schema',
      );
    })
    .where('information_schema.columns.table_schema', db.raw('current_schema()'))
    .where('information_schema.tables.table_type', 'BASE TABLE')
    .select('information_schema.columns.table_name as table', 'information_schema.columns.column_name as column', 'information_schema.columns.data_type as type')) as Array<{
    table: string;
    column: string;
    type: string;
  }>;
  const found: string[] = [];
  for (const { table, column, type } of columns) {
    const checks: Array<[string, string]> = [];
    if (['text', 'character varying', 'character', 'json', 'jsonb'].includes(type)) {
      checks.push(['U+FFFD', `strpos(??::text, chr(65533)) > 0`]);
    }
    if (type === 'json' || type === 'jsonb') {
      checks.push(['a __proto__ key', `strpos(??::text, '"__proto__":') > 0`]);
      checks.push(['NUL', `strpos(??::text, '\\u0000') > 0`]);
    }
    if (['double precision', 'real', 'numeric'].includes(type)) {
      checks.push(['a non-finite number', `?? in ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)`]);
    }
    for (const [what, where] of checks) {
      const row = (await db(table).whereRaw(where, [column]).count({ n: '*' }).first()) as { n: string | number } | undefined;
      const n = Number(row?.n ?? 0);
      if (n > 0) found.push(`${table}.${column}: ${n} row(s) with ${what}`);
    }
  }
  return found;
}
