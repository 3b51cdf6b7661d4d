import test, { type ExecutionContext } from 'ava';

/**
 * Which backends the suite runs on. With DATABASE_URL / REDIS_URL set, end-to-end tests use them; without,
 * the embedded defaults (PGlite, in-process store), and `npm test` touches no server outside its process.
 */
export const env = {
  databaseUrl: process.env.DATABASE_URL || undefined,
  redisUrl: process.env.REDIS_URL || undefined,
  ci: process.env.CI === 'true',
};

/**
 * Real servers for the contract suites (which always cover the embedded side): those of the environment,
 * or PARLEY_TEST_DATABASE_URL / PARLEY_TEST_REDIS_URL to cover them without moving the end-to-end tests.
 * Unset: the real half of each contract suite is skipped, never probed on localhost.
 */
export const realPostgresUrl = env.databaseUrl ?? (process.env.PARLEY_TEST_DATABASE_URL || undefined);
export const realRedisUrl = env.redisUrl ?? (process.env.PARLEY_TEST_REDIS_URL || undefined);
/** A node of a Redis Cluster (three masters in CI: scripts/redis-cluster.sh) for the cluster halves of the Redis tests. */
export const redisClusterUrl = process.env.PARLEY_TEST_REDIS_CLUSTER_URL || undefined;

type Declare = (title: string, fn: (t: ExecutionContext) => unknown) => void;

/**
 * `test` when `ok`; otherwise each test is declared `test.skip` with the reason in its title. Under CI=true
 * a missing requirement fails the file instead (CI must run everything), unless `ciMayLack` says CI runs
 * the test in another of its passes (e.g. only the pass on the real servers can). `serial` declares the
 * tests serial, for files whose tests each load the machine.
 */
export function testWhen(ok: boolean, missing: string, ciMayLack = false, serial = false): Declare {
  if (ok) return serial ? test.serial : test;
  if (env.ci && !ciMayLack) throw new Error(`${missing}, and CI=true requires it`);
  return (title, fn) => test.skip(`${title} [skipped: ${missing}]`, fn);
}

// Kept apart from ava (which refuses to be imported outside a test run) so the bench can make databases too.
export { createScratchDatabase, uniqueName } from './scratch-db.js';
