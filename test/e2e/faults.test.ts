import test, { type ExecutionContext } from 'ava';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { randomUUID } from 'node:crypto';
import { status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import type { Config } from '../../src/config.js';
import { CLOSE_DEADLINE_MS } from '../../src/app.js';
import { REVOCATION_BOUND_MS } from '../../src/admin/cache.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { KnexUnitOfWork } from '../../src/storage/unit-of-work.js';
import type { KvStore } from '../../src/ports/kv.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { createScratchDatabase, env, realPostgresUrl, uniqueName } from '../helpers/backends.js';
import { endpointOf, hasRedisServer, PrivateRedis, TcpProxy } from '../helpers/faults.js';
import { eventually } from '../helpers/eventually.js';
import { decodeError } from '../helpers/errors.js';
import { Watcher } from '../helpers/watch.js';
import { genie, modelType } from '../genie/fixtures.js';

// Which faults apply here: Redis faults need redis-server (a private one, whatever REDIS_URL says); several
// replicas on one database and a Postgres outage need a real Postgres (PGlite is one process's).
const pgUp = realPostgresUrl !== undefined;
if (env.ci && (!pgUp || !hasRedisServer)) throw new Error('CI=true requires a Postgres (DATABASE_URL or PARLEY_TEST_DATABASE_URL) and redis-server for the fault tests');
// Serial: each test starts whole servers, and several at once on a busy machine only test the machine.
const withRedis = hasRedisServer ? test.serial : test.skip;
const withRedisAndPg = hasRedisServer && pgUp ? test.serial : test.skip;
const withPg = pgUp ? test.serial : test.skip;
const skipNote = (need: string) => (need ? ` [skipped here: ${need}]` : '');
const redisNote = skipNote(hasRedisServer ? '' : 'redis-server is not installed');
const replicasNote = skipNote(!hasRedisServer ? 'redis-server is not installed' : !pgUp ? 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL' : '');
const pgNote = skipNote(pgUp ? '' : 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL');

const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };
const code = (e: unknown) => (e as ServiceError).code;

/** A server stopped at the end of the test, before the faults' own teardown (Redis may be gone by then). */
async function server(t: ExecutionContext, overrides: Partial<Config> = {}): Promise<TestServer> {
  const s = await startTestServer(overrides);
  t.teardown(() => s.stop());
  return s;
}

/** One genie session and one prompt of one tenant, read through the cached paths. */
async function world(s: TestServer, tenant?: Tenant) {
  const who = tenant ?? (await createTenant(s));
  const g = genie(s, who);
  await g.register(modelType({ name: 'loop', jsonSchema: undefined, stateMachine: { states: ['a'], initialState: 'a', transitions: [{ fromState: 'a', eventName: 'go', toState: 'a', actor: Actor.ACTOR_USER }] } }));
  const sessionId = (await g.create('loop', {})).sessionId;
  const prompt = (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: who.llmClientId }, who.md)).prompt!;
  return {
    tenant: who,
    prompt,
    sessionId,
    /** GetSession (hot copy first) and OpenPrompt by session key without a request id (cache first). */
    read: async (via: TestServer = s) => ({
      revision: (await rpc(via.genie, via.genie.getSession, { sessionId, revision: undefined }, who.md)).session!.revision,
      description: (await rpc(via.prompt, via.prompt.openPrompt, { labels: {}, ...openReq, sessionKey: prompt.sessionKey }, who.md)).prompt!.description,
    }),
    write: async (description: string) => {
      const revision = (await g.send(sessionId, 'go')).revision;
      await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...prompt, description }, updateMask: ['description'], requestId: '' }, who.md);
      return { revision, description };
    },
  };
}

const connected = (kv: KvStore) => eventually(() => kv.ping().then(() => true, () => false), 'parley connected to Redis again');

withRedis(`Redis restored from an old snapshot: reads return the acknowledged revision and description${redisNote}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const s = await server(t, { redisUrl: redis.url });
  const w = await world(s);
  await w.read();
  t.deepEqual(await w.read(), { revision: 1, description: '' }, 'served from the cache now');
  await redis.snapshot();
  const acked = await w.write('after the snapshot');
  t.deepEqual(await w.read(), acked);

  await redis.restoreSnapshot(); // Redis now holds the copies of revision 1 again
  await connected(s.app.store.kv);
  t.deepEqual(await w.read(), acked, 'right after Redis came back');
  // The connection may still flap while it settles: a read that throws is "not yet", as it is for parley.
  await eventually(() => s.app.store.kv.readCached('probe').then((r) => r.token !== undefined, () => false), 'the cache trusted again');
  t.deepEqual(await w.read(), acked, 'once the cache is trusted again');
  t.deepEqual(await w.read(), acked, 'and served from it');
});

withRedis(`Redis connections dropped during writes: the writes succeed and reads return them once Redis is back${redisNote}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const proxy = await TcpProxy.start(t, endpointOf(redis.url));
  const s = await server(t, { redisUrl: proxy.via(redis.url) });
  const w = await world(s);
  await w.read();
  t.deepEqual(await w.read(), { revision: 1, description: '' });

  await proxy.refuse(); // parley's connections reset; Redis keeps the copies of revision 1
  const acked = await w.write('written while Redis was unreachable');
  t.deepEqual(await w.read(), acked, 'while Redis is unreachable');
  await proxy.accept();
  await connected(s.app.store.kv);
  t.deepEqual(await w.read(), acked, 'right after Redis came back');
  // The connection may still flap while it settles: a read that throws is "not yet", as it is for parley.
  await eventually(() => s.app.store.kv.readCached('probe').then((r) => r.token !== undefined, () => false), 'the cache trusted again');
  t.deepEqual(await w.read(), acked, 'once the cache is trusted again');
});

test.serial('a cache fill racing UpdatePrompt never leaves the previous version behind', async (t) => {
  const s = await server(t);
  const w = await world(s);
  const key = promptCacheKey(w.prompt.sessionKey);
  // Hold the reader's fill (it has already read the old row from Postgres) until the update is acknowledged.
  const kv = s.app.store.kv;
  await kv.fence(key); // OpenPrompt cached the new session; the read below must miss
  const fill = kv.fill.bind(kv);
  let atFill = false;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  kv.fill = async (k, value, token, ttlMs) => {
    if (k === key && !atFill) {
      atFill = true;
      await gate;
    }
    return fill(k, value, token, ttlMs);
  };
  const reading = rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: w.prompt.sessionKey }, w.tenant.md);
  await eventually(() => atFill, 'the read to reach its fill');
  const acked = await w.write('updated while a fill was in flight');
  release();
  t.is((await reading).prompt!.description, '', 'the racing read began before the update');
  t.deepEqual(await w.read(), acked, 'no stale copy was left behind');
});

/** Whether `via` refuses the tenant's API key. */
const refused = (via: TestServer, md: Metadata) =>
  rpc(via.prompt, via.prompt.getPrompt, { id: randomUUID(), sessionKey: '' }, md).then(
    () => false,
    (e) => code(e) === status.UNAUTHENTICATED,
  );

/** Two parley replicas on one Postgres database and one Redis (with one key prefix). */
async function replicas(t: ExecutionContext, redisUrl: string): Promise<[TestServer, TestServer]> {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const shared = { databaseUrl: db.url, redisUrl, redisPrefix: `${uniqueName('parley_t')}:` };
  const a = await server(t, shared);
  const b = await server(t, shared);
  return [a, b];
}

withRedisAndPg(`a revocation racing the key's first use on another replica is refused everywhere within the bound${replicasNote}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const [a, b] = await replicas(t, redis.url);
  const tenant = await createTenant(a);
  // Replica b reads the key from Postgres (not yet revoked); its fill waits until the revocation is done.
  const kv = b.app.store.kv;
  const fill = kv.fill.bind(kv);
  let atFill = false;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  kv.fill = async (k, value, token, ttlMs) => {
    if (k.startsWith('apikey:')) {
      atFill = true;
      await gate;
    }
    return fill(k, value, token, ttlMs);
  };
  const firstUse = refused(b, tenant.md);
  await eventually(() => atFill, "replica b's read of the key to reach its fill");
  await rpc(a.admin, a.admin.revokeApiKey, { id: tenant.apiKeyId, requestId: '' }, a.adminMd);
  const revokedAt = Date.now();
  release();
  t.false(await firstUse, 'the first use began before the revocation');
  await eventually(async () => (await refused(a, tenant.md)) && (await refused(b, tenant.md)), 'the key refused on both replicas', REVOCATION_BOUND_MS + 15_000);
  t.log(`refused on both replicas ${Date.now() - revokedAt} ms after the revocation (bound ${REVOCATION_BOUND_MS} ms)`);
  t.true(await refused(b, tenant.md), 'and stays refused');
});

withRedisAndPg(`a revocation while Redis is unreachable succeeds, and the key is refused everywhere within the bound${replicasNote}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const proxy = await TcpProxy.start(t, endpointOf(redis.url));
  const [a, b] = await replicas(t, proxy.via(redis.url));
  const tenant = await createTenant(a);
  for (const s of [a, b, a, b]) t.false(await refused(s, tenant.md), 'the key works on both replicas (and is cached)');

  await proxy.refuse(); // Redis keeps the cached principal; only parley cannot reach it
  await t.notThrowsAsync(rpc(a.admin, a.admin.revokeApiKey, { id: tenant.apiKeyId, requestId: '' }, a.adminMd), 'the committed revocation succeeds');
  const revokedAt = Date.now();
  await proxy.accept();
  const backAt = Date.now();
  await eventually(async () => (await refused(a, tenant.md)) && (await refused(b, tenant.md)), 'the key refused on both replicas', REVOCATION_BOUND_MS + 15_000);
  t.log(
    `refused on both replicas ${Date.now() - revokedAt} ms after the revocation, ${Date.now() - backAt} ms after Redis returned (bound ${REVOCATION_BOUND_MS} ms)`,
  );
  await connected(a.app.store.kv);
  await connected(b.app.store.kv);
  for (const s of [a, b]) t.true(await refused(s, tenant.md), 'and stays refused with Redis back');
});

withPg(`Postgres unreachable: calls fail UNAVAILABLE, and succeed again once it is back${pgNote}`, async (t) => {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const proxy = await TcpProxy.start(t, endpointOf(db.url));
  const s = await server(t, { databaseUrl: proxy.via(db.url) });
  const w = await world(s);
  await proxy.refuse();
  const read = await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { id: w.prompt.id, sessionKey: '' }, w.tenant.md));
  t.is(code(read), status.UNAVAILABLE, `a read got ${read?.message}`);
  t.is(decodeError(read as ServiceError).errorInfo?.reason, 'DATABASE_UNAVAILABLE');
  const write = await t.throwsAsync(
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...w.prompt, description: 'x' }, updateMask: ['description'], requestId: randomUUID() }, w.tenant.md),
  );
  t.is(code(write), status.UNAVAILABLE, `a write got ${write?.message}`);
  await proxy.accept();
  await eventually(
    () => rpc(s.prompt, s.prompt.getPrompt, { id: w.prompt.id, sessionKey: '' }, w.tenant.md).then(() => true, () => false),
    'a read succeeding after Postgres came back',
  );
  const acked = await w.write('after the outage');
  t.deepEqual(await w.read(), acked);
});

test.serial('a committed write whose cache and bus steps fail is OK, on every aggregate', async (t) => {
  const s = await server(t);
  const w = await world(s);
  const fail = async () => {
    throw new Error('injected cache failure');
  };
  const kv = s.app.store.kv as KvStore & Record<string, unknown>;
  kv.fence = fail;
  kv.del = fail;
  s.app.store.bus.publish = fail;
  const acked = await w.write('with a failing cache');
  const stored = await rpc(s.prompt, s.prompt.getPrompt, { id: w.prompt.id, sessionKey: '' }, w.tenant.md);
  t.is(stored.prompt!.description, acked.description);
  await t.notThrowsAsync(rpc(s.admin, s.admin.revokeApiKey, { id: w.tenant.apiKeyId, requestId: '' }, s.adminMd), 'a revocation too');
});

withRedis(`stop ends within the grace period plus the close deadline, even with Redis hung${redisNote}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const s = await server(t, { redisUrl: redis.url, shutdownGraceMs: 500 });
  const w = await world(s);
  await w.read();
  redis.pause(); // connections stay open, nothing answers: an UNSUBSCRIBE on the way out never returns
  t.teardown(() => redis.resume());
  const started = Date.now();
  let stopped = false;
  void s.app.stop().then(() => (stopped = true));
  await eventually(() => stopped, 'stop to finish', 500 + CLOSE_DEADLINE_MS + 20_000);
  t.log(`stopped in ${Date.now() - started} ms with Redis hung (grace 500 ms + close deadline ${CLOSE_DEADLINE_MS} ms)`);
  t.is(await s.app.store.kv.ping().then(() => 'open', () => 'closed'), 'closed', 'its Redis connections are closed');
});

withRedis(`behind a Redis Cluster (one node owning every slot, refusing cross-slot commands) every path works${redisNote}`, async (t) => {
  const redis = await PrivateRedis.start(t, { cluster: true });
  const s = await server(t, { redisUrl: redis.url });
  const w = await world(s);
  const watcher = new Watcher(s.genie, w.tenant.md, w.sessionId, 0);
  t.teardown(() => watcher.cancel());
  const cached = async () => ({
    session: (await hotCopyOf(s.app.store.kv, w.sessionId)) !== undefined,
    prompt: (await s.app.store.kv.readCached(promptCacheKey(w.prompt.sessionKey))).value !== null,
  });
  await w.read();
  t.deepEqual(await cached(), { session: true, prompt: true }, 'the reads filled the cache');
  t.deepEqual(await w.read(), { revision: 1, description: '' }, 'served from the cache');
  const acked = await w.write('through a cluster');
  t.deepEqual(await cached(), { session: true, prompt: false }, "the write advanced the session's copy (a script on its slot) and fenced the prompt's");
  t.deepEqual(await w.read(), acked);
  t.deepEqual(await cached(), { session: true, prompt: true }, 'the next read filled them again');
  await watcher.until((x) => x.updates.some((u) => u.revision === acked.revision), 'the write to reach the watcher over the bus');
  await rpc(s.prompt, s.prompt.deletePrompt, { id: w.prompt.id, requestId: '' }, w.tenant.md);
  await t.throwsAsync(w.read(), undefined, 'the deleted prompt is gone');
  await redis.dropConnections();
  await connected(s.app.store.kv);
  await eventually(() => s.app.store.kv.readCached('probe').then((r) => r.token !== undefined, () => false), 'the cache trusted again after a reconnect');
});

withPg(`Postgres gone right after a genie write commits: the write still answers OK with what it committed${pgNote}`, async (t) => {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const proxy = await TcpProxy.start(t, endpointOf(db.url));
  const s = await server(t, { databaseUrl: proxy.via(db.url) });
  const w = await world(s);
  const g = genie(s, w.tenant);
  await g.append(w.sessionId, 'user', 'first words');
  // Every write's transaction commits (a genie write runs in the transaction that claims its request id), then
  // Postgres goes away before the call answers.
  const proto = KnexUnitOfWork.prototype as unknown as Record<'run', (...a: unknown[]) => Promise<unknown>>;
  const original = proto.run;
  proto.run = async function (this: unknown, ...a: unknown[]) {
    const r = await original.apply(this, a);
    await proxy.refuse();
    return r;
  };
  t.teardown(() => void (proto.run = original));
  const appended = await g.append(w.sessionId, 'assistant', 'second words');
  t.like(appended.element, { index: 2, textSizeBytes: 12 }, 'the answer carries the committed element\'s metadata');
  await proxy.accept();
  const forked = await g.fork(w.sessionId);
  t.is(forked.dialogueLength, 2, 'a fork too');
  await proxy.accept();
  const stored = await rpc(s.genie, s.genie.getSession, { sessionId: w.sessionId, revision: undefined }, w.tenant.md);
  t.is(stored.session!.revision, appended.revision, 'and it is what Postgres holds');
});
