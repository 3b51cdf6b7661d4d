import type { Knex } from 'knex';

/** Postgres timestamps come back as Date from pg and PGlite alike; this keeps call sites honest. */
export function asDate(v: unknown): Date {
  return v instanceof Date ? v : new Date(String(v));
}

export function asDateOrUndefined(v: unknown): Date | undefined {
  return v === null || v === undefined ? undefined : asDate(v);
}

/** jsonb arrives parsed from pg but may arrive as text from other drivers. */
export function asJson<T>(v: unknown): T {
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}

/**
 * A keyset page: the rows of `query` after `after` in the order of `column` (unique within the query's
 * filter), at most `limit` of them. The first page has no `after`.
 */
export function keysetPage<Q extends Knex.QueryBuilder>(query: Q, column: string, after: string | undefined, limit: number): Q {
  if (after !== undefined) query.andWhere(column, '>', after);
  return query.orderBy(column, 'asc').limit(limit) as Q;
}

/** The first row of `query`, mapped; undefined when there is none. */
export async function firstRow<T, R>(query: Knex.QueryBuilder, map: (row: R) => T): Promise<T | undefined> {
  const row = (await query.first()) as R | undefined;
  return row === undefined ? undefined : map(row);
}
