import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';

/**
 * Which backends the suite runs on. With DATABASE_URL / REDIS_URL set, end-to-end tests use them; without,
 * the embedded defaults (PGlite, in-process store). Contract tests always cover the embedded side and cover
 * the real side whenever it is reachable; under CI=true an unreachable real backend fails the run.
 */
export const env = {
  databaseUrl: process.env.DATABASE_URL || undefined,
  redisUrl: process.env.REDIS_URL || undefined,
  ci: process.env.CI === 'true',
};

/** Where the contract suites look for real servers when the environment does not say. */
export const realPostgresUrl = env.databaseUrl ?? process.env.PARLEY_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const realRedisUrl = env.redisUrl ?? process.env.PARLEY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;

async function reachable(check: () => Promise<void>): Promise<boolean> {
  try {
    await check();
    return true;
  } catch {
    return false;
  }
}

export async function postgresReachable(url = realPostgresUrl): Promise<boolean> {
  return reachable(async () => {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    await c.connect();
    await c.end();
  });
}

export async function redisReachable(url = realRedisUrl): Promise<boolean> {
  return reachable(async () => {
    const r = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      await r.ping();
    } finally {
      r.disconnect();
    }
  });
}

/** Real backends are required in CI; elsewhere a missing server only narrows the contract suites. */
export async function requireOrSkip(name: string, ok: boolean): Promise<boolean> {
  if (!ok && env.ci) throw new Error(`${name} is not reachable, and CI=true requires it`);
  if (!ok) console.warn(`# ${name} not reachable: its half of the contract suite does not run here`);
  return ok;
}

/**
 * A fresh database on the real server for one test file, so files run in parallel without seeing each
 * other's rows. Returns its URL and a function that drops it.
 */
export async function createScratchDatabase(baseUrl = realPostgresUrl): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = uniqueName('parley_t');
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: baseUrl });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
