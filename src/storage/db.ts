import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import knexFactory, { type Knex } from 'knex';
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { migrationSource } from './migrations/index.js';
import { lockDataDir } from './dir-lock.js';

// Postgres returns int8/bigserial as strings by default; our counts and ids stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Db = Knex;

export interface DbOptions {
  /** postgres://… for a real server; undefined selects embedded PGlite. */
  databaseUrl: string | undefined;
  /** Where PGlite keeps its files; `memory` keeps it in memory (tests). */
  dataDir: string;
}

const PGLITE_ACQUIRE_TIMEOUT_MS = 300_000;

/**
 * knex-pglite forbids pool settings, so the pool's create timeout stays tarn's 30 s — and booting the WASM
 * engine on a busy machine can take longer, failing the first query with "operation timed out for an unknown
 * reason". Its defaults are where the bound can still be raised to the same generous wait as an acquire.
 */
function patientPGliteClient(ClientPgLite: new (config: Knex.Config) => { poolDefaults(): Record<string, unknown> }) {
  return class PatientPGliteClient extends ClientPgLite {
    override poolDefaults(): Record<string, unknown> {
      return { ...super.poolDefaults(), createTimeoutMillis: PGLITE_ACQUIRE_TIMEOUT_MS };
    }
  };
}

const require = createRequire(import.meta.url);
interface Embedded {
  PGlite: typeof PGlite;
  Client: ReturnType<typeof patientPGliteClient>;
}
let embedded: Embedded | undefined;

/**
 * PGlite and its Knex client, loaded the first time an embedded database is opened: a server on Postgres
 * never loads them (their code alone is several MiB of a small server's memory). Both ship CommonJS, which
 * knex-pglite itself requires, so this is also the only copy of PGlite in the process.
 */
function loadEmbedded(): Embedded {
  return (embedded ??= {
    PGlite: (require('@electric-sql/pglite') as { PGlite: typeof PGlite }).PGlite,
    Client: patientPGliteClient(require('knex-pglite') as Parameters<typeof patientPGliteClient>[0]),
  });
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
  let dir: string | undefined;
  if (opts.dataDir !== 'memory') {
    dir = path.resolve(opts.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true });
  }
  // knex-pglite takes an instance of ours as `connection.pglite` (Knex's types do not know that key).
  const connection = { pglite: newPGlite(dir) } as unknown as Knex.StaticConnectionConfig;
  // One connection, in this process: every query waits its turn for it, and a timeout on that wait only turns
  // a busy moment (a slow machine booting the WASM engine, a burst of calls) into errors. Calls keep their own
  // deadlines; the wait is bounded generously instead of at Knex's 60 s.
  return {
    client: loadEmbedded().Client as unknown as Knex.Config['client'],
    dialect: 'postgres',
    connection,
    migrations,
    acquireConnectionTimeout: PGLITE_ACQUIRE_TIMEOUT_MS,
  };
}

/**
 * A PGlite instance whose text results are byte-exact. PGlite decodes each value it reads with a default
 * TextDecoder, which drops a leading U+FEFF (byte order mark): `'\uFEFFhi'` is stored intact but read back as
 * `'hi'`, while Postgres over `pg` returns it as stored. Its decoders are made with the instance, so making
 * that one construction see a TextDecoder that keeps the mark (`ignoreBOM`) makes both backends agree.
 * Construction is synchronous: nothing else runs while the global is swapped.
 */
export function newPGlite(dataDir: string | undefined): PGlite {
  const Original = globalThis.TextDecoder;
  class KeepingBom extends Original {
    constructor(label?: string, options?: TextDecoderOptions) {
      super(label, { ...options, ignoreBOM: true });
    }
  }
  globalThis.TextDecoder = KeepingBom;
  try {
    return new (loadEmbedded().PGlite)(dataDir);
  } finally {
    globalThis.TextDecoder = Original;
  }
}

/**
 * Opens the database. An embedded on-disk one is locked to this process first (see lockDataDir): two
 * PGlite instances on one directory corrupt it, and each would serve its own stale view meanwhile. The
 * lock is released when the Knex instance is destroyed.
 */
export function openDb(opts: DbOptions): Db {
  const release = !opts.databaseUrl && opts.dataDir !== 'memory' ? lockDataDir(path.resolve(opts.dataDir)) : undefined;
  let db: Db;
  try {
    db = knexFactory(knexConfig(opts));
  } catch (err) {
    release?.();
    throw err;
  }
  if (release) {
    // Knex's own destroy is read-only; it ends in the client's, which is where the lock is let go.
    const client = db.client as { destroy(callback?: unknown): Promise<unknown> };
    const destroy = client.destroy.bind(client);
    client.destroy = async (callback?: unknown) => {
      try {
        return await destroy(callback);
      } finally {
        release();
      }
    };
  }
  return db;
}

export async function migrate(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest()) as [number, string[]];
  return applied;
}

/** The pool's connections in use and acquires waiting for one (knex's tarn pool; PGlite's too). */
export function poolUsage(db: Db): { used: number; pending: number } {
  const pool = (db.client as { pool?: { numUsed(): number; numPendingAcquires(): number } }).pool;
  return { used: pool?.numUsed() ?? 0, pending: pool?.numPendingAcquires() ?? 0 };
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
