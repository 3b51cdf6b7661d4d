import test from 'ava';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { INVALIDATE_ALL, invalidateOnBus, LocalCache } from '../../src/local-cache.js';
import { AdminService } from '../../src/admin/service.js';
import { hashSecret } from '../../src/principal.js';
import type { AdminRepo } from '../../src/storage/admin-repo.js';
import type { Bus } from '../../src/ports/bus.js';
import type { Idempotency } from '../../src/storage/idempotency.js';

const tick = () => new Promise((r) => setTimeout(r, 0));

test('LocalCache: hit, expiry after its TTL', (t) => {
  let now = 1_000;
  const c = new LocalCache<string>({ maxEntries: 10, ttlMs: 100, now: () => now });
  c.set('a', 'A', c.token());
  t.is(c.get('a'), 'A');
  now += 99;
  t.is(c.get('a'), 'A');
  now += 1;
  t.is(c.get('a'), undefined);
  t.is(c.size, 0);
});

test('LocalCache: bounded, least recently used goes first', (t) => {
  const c = new LocalCache<number>({ maxEntries: 3, ttlMs: 60_000 });
  for (const k of ['a', 'b', 'c']) c.set(k, 1, c.token());
  t.is(c.get('a'), 1); // a is now the most recently used
  c.set('d', 1, c.token());
  t.is(c.size, 3);
  t.is(c.get('b'), undefined);
  t.is(c.get('a'), 1);
  t.is(c.get('c'), 1);
  t.is(c.get('d'), 1);
});

test('LocalCache: a fill that began before an invalidation is dropped', (t) => {
  const c = new LocalCache<string>({ maxEntries: 10, ttlMs: 60_000 });
  const before = c.token();
  c.delete('a');
  c.set('a', 'stale', before);
  t.is(c.get('a'), undefined);
  const before2 = c.token();
  c.clear();
  c.set('b', 'stale', before2);
  t.is(c.get('b'), undefined);
  c.set('b', 'fresh', c.token());
  t.is(c.get('b'), 'fresh');
});

test('invalidateOnBus: a key, everything, and a reconnect', async (t) => {
  const bus = new MemoryBus();
  let reconnect: (() => void) | undefined;
  const wrapped: Bus = { ...bus, publish: bus.publish.bind(bus), subscribe: bus.subscribe.bind(bus), subscribedChannels: () => bus.subscribedChannels(), onReconnect: (fn) => ((reconnect = fn), () => (reconnect = undefined)) };
  const c = new LocalCache<number>({ maxEntries: 10, ttlMs: 60_000 });
  const stop = await invalidateOnBus(wrapped, 'ch', c);
  for (const k of ['a', 'b', 'c']) c.set(k, 1, c.token());
  await bus.publish('ch', 'a');
  await tick();
  t.is(c.get('a'), undefined);
  t.is(c.get('b'), 1);
  await bus.publish('ch', INVALIDATE_ALL);
  await tick();
  t.is(c.size, 0);
  c.set('x', 1, c.token());
  reconnect?.();
  t.is(c.size, 0);
  await stop();
  t.is(reconnect, undefined);
  t.is(bus.subscribedChannels(), 0);
});

/** Runs the work without a transaction or a record (these tests use no request ids). */
const noIdempotency = { runKnex: async (_key: unknown, _codec: unknown, work: (trx: unknown) => Promise<unknown>) => ({ value: await work({}), replayed: false }) } as unknown as Idempotency;

/** Two replicas sharing Redis (here in memory), the bus and Postgres (a fake api_keys table). */
function replicas() {
  const kv = new MemoryKv();
  const bus = new MemoryBus();
  const keys = new Map<string, { id: string; userProfileId: string; accountId: string; revokedAt: Date | null }>();
  let reads = 0;
  const repo = {
    apiKeyByHash: async (hash: string) => {
      reads++;
      return keys.get(hash);
    },
    lockById: async (_table: string, id: string) => [...keys.values()].find((k) => k.id === id),
    secretHashOf: async (id: string) => [...keys].find(([, k]) => k.id === id)?.[0],
    deleteById: async (_table: string, id: string) => {
      const hit = [...keys].find(([, k]) => k.id === id);
      if (hit) keys.delete(hit[0]);
      return { secretHashes: hit ? [hit[0]] : [], prompts: [] };
    },
    revokeApiKey: async (id: string) => {
      const k = [...keys.values()].find((x) => x.id === id);
      if (k) k.revokedAt = new Date();
      return k;
    },
  } as unknown as AdminRepo;
  keys.set(hashSecret('pk_secret'), { id: 'key-1', userProfileId: 'u', accountId: 'acc', revokedAt: null });
  const a = new AdminService(repo, kv, bus, noIdempotency);
  const b = new AdminService(repo, kv, bus, noIdempotency);
  return { a, b, kv, bus, reads: () => reads };
}

test('principalOf: served from the process after the first call', async (t) => {
  const { a, kv, reads } = replicas();
  await a.start();
  t.is((await a.principalOf('pk_secret'))?.accountId, 'acc');
  t.is(reads(), 1);
  await kv.clear(); // not even Redis is asked now
  t.is((await a.principalOf('pk_secret'))?.accountId, 'acc');
  t.is(reads(), 1);
  t.is(await a.principalOf('pk_unknown'), undefined);
  await a.stop();
});

test('principalOf: a revocation takes effect at once here and on the bus elsewhere', async (t) => {
  const { a, b } = replicas();
  await a.start();
  await b.start();
  t.truthy(await a.principalOf('pk_secret'));
  t.truthy(await b.principalOf('pk_secret'));
  await a.revokeApiKey('key-1', {});
  t.is(await a.principalOf('pk_secret'), undefined);
  await tick();
  t.is(await b.principalOf('pk_secret'), undefined);
  await a.stop();
  await b.stop();
});

test('principalOf: a deleted key is refused at once here and on the bus elsewhere', async (t) => {
  const { a, b } = replicas();
  await a.start();
  await b.start();
  t.truthy(await a.principalOf('pk_secret'));
  t.truthy(await b.principalOf('pk_secret'));
  await a.deleteApiKey('key-1', {});
  t.is(await a.principalOf('pk_secret'), undefined);
  await tick();
  t.is(await b.principalOf('pk_secret'), undefined);
  await a.stop();
  await b.stop();
});

test('principalOf: without the bus message, the local TTL bounds a revoked key', async (t) => {
  let now = 0;
  const kv = new MemoryKv();
  const keys = new Map([[hashSecret('pk_s'), { id: 'k', userProfileId: 'u', accountId: 'acc', revokedAt: null as Date | null }]]);
  const repo = { apiKeyByHash: async (h: string) => keys.get(h) } as unknown as AdminRepo;
  const b = new AdminService(repo, kv, undefined, noIdempotency, { localTtlMs: 5_000, now: () => now });
  t.truthy(await b.principalOf('pk_s'));
  // Revoked elsewhere (Postgres and Redis), the message lost:
  keys.get(hashSecret('pk_s'))!.revokedAt = new Date();
  await kv.clear();
  now += 4_999;
  t.truthy(await b.principalOf('pk_s'));
  now += 1;
  t.is(await b.principalOf('pk_s'), undefined);
});
