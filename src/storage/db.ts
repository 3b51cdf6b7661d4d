import path from 'node:path';
import { mkdirSync } from 'node:fs';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import pg from 'pg';
import { migrationSource } from './migrations/index.js';

// Postgres returns int8/bigserial as strings by default; our counts and ids stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Db = Knex;

export interface DbOptions {
  /** postgres://… for a real server; undefined selects embedded PGlite. */
  databaseUrl: string | undefined;
  /** Where PGlite keeps its files; `memory` keeps it in memory (tests). */
  dataDir: string;
}

/** Knex options shared by the server, the CLI and `knexfile.ts`. */
export function knexConfig(opts: DbOptions): Knex.Config {
  const migrations = { migrationSource, tableName: 'knex_migrations' };
  if (opts.databaseUrl) {
    return {
      client: 'pg',
      connection: opts.databaseUrl,
      pool: { min: 0, max: 10 },
      acquireConnectionTimeout: 10_000,
      migrations,
    };
  }
  let connection: object = {};
  if (opts.dataDir !== 'memory') {
    const dir = path.resolve(opts.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true });
    connection = { filename: dir };
  }
  return { client: ClientPgLite as unknown as Knex.Config['client'], dialect: 'postgres', connection, migrations };
}

export function openDb(opts: DbOptions): Db {
  return knexFactory(knexConfig(opts));
}

export async function migrate(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest()) as [number, string[]];
  return applied;
}

export async function pingDb(db: Db): Promise<void> {
  await db.raw('select 1');
}

/** True when Postgres reports a unique-constraint violation (SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}

/** True when Postgres reports a foreign-key violation (SQLSTATE 23503). */
export function isForeignKeyViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23503';
}
