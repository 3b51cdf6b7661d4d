import test from 'ava';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { AdminUseCases } from '../../src/admin/service.js';
import { PrincipalCache } from '../../src/admin/cache.js';
import { hashSecret } from '../../src/admin/secrets.js';
import type { ApiKeyRow } from '../../src/admin/store.js';
import { MemoryAdminStore, MemoryUnitOfWork } from './memory-admin-store.js';
import { eventually } from '../helpers/eventually.js';

const key = (id: string): ApiKeyRow => ({ id, userProfileId: 'u', accountId: 'acc', description: '', keyPrefix: 'pk_', createdAt: new Date(), updatedAt: new Date(), revision: 1 });

/** A store with one key whose secret is `pk_secret`. */
function storeWithKey(secret: string): MemoryAdminStore {
  const store = new MemoryAdminStore();
  store.tables.rows.api_keys.set('key-1', key('key-1'));
  store.tables.secretHashes.set('key-1', hashSecret(secret));
  return store;
}

/** Two replicas sharing Redis (here in memory), the bus and Postgres (the store). */
function replicas() {
  const kv = new MemoryKv();
  const bus = new MemoryBus();
  const store = storeWithKey('pk_secret');
  const uow = new MemoryUnitOfWork(store);
  const a = new AdminUseCases({ store, unitOfWork: uow, principals: new PrincipalCache(kv, bus) });
  const b = new AdminUseCases({ store, unitOfWork: uow, principals: new PrincipalCache(kv, bus) });
  return { a, b, kv, store };
}

test('principalOf: served from the process after the first call', async (t) => {
  const { a, kv, store } = replicas();
  await a.start();
  t.is((await a.principalOf('pk_secret'))?.accountId, 'acc');
  t.is(store.hashReads, 1);
  await kv.clear(); // not even Redis is asked now
  t.is((await a.principalOf('pk_secret'))?.accountId, 'acc');
  t.is(store.hashReads, 1);
  t.is(await a.principalOf('pk_unknown'), undefined);
  await a.stop();
});

for (const [what, act] of [
  ['a revocation', (a: AdminUseCases) => a.revokeApiKey('key-1', {})],
  ['a deletion', (a: AdminUseCases) => a.deleteApiKey('key-1', {})],
] as const) {
  test(`principalOf: ${what} takes effect at once here and on the bus elsewhere`, async (t) => {
    const { a, b } = replicas();
    await a.start();
    await b.start();
    t.truthy(await a.principalOf('pk_secret'));
    t.truthy(await b.principalOf('pk_secret'));
    await act(a);
    t.is(await a.principalOf('pk_secret'), undefined);
    await eventually(async () => (await b.principalOf('pk_secret')) === undefined, 'the other replica refuses the key');
    await a.stop();
    await b.stop();
  });
}

test('principalOf: without the bus message, the local TTL bounds a revoked key', async (t) => {
  let now = 0;
  const kv = new MemoryKv();
  const store = storeWithKey('pk_s');
  const b = new AdminUseCases({ store, unitOfWork: new MemoryUnitOfWork(store), principals: new PrincipalCache(kv, undefined, { localTtlMs: 5_000, now: () => now }) });
  t.truthy(await b.principalOf('pk_s'));
  // Revoked elsewhere (Postgres and Redis), the message lost:
  store.tables.rows.api_keys.set('key-1', { ...key('key-1'), revokedAt: new Date() });
  await kv.clear();
  now += 4_999;
  t.truthy(await b.principalOf('pk_s'));
  now += 1;
  t.is(await b.principalOf('pk_s'), undefined);
});

test('principal cache: a corrupt Redis copy reads as a miss, and a foreign bus message clears the process', async (t) => {
  const kv = new MemoryKv();
  const bus = new MemoryBus();
  const store = storeWithKey('pk_c');
  const a = new AdminUseCases({ store, unitOfWork: new MemoryUnitOfWork(store), principals: new PrincipalCache(kv, bus) });
  await a.start();
  const cacheKey = `apikey:${hashSecret('pk_c')}`;
  t.true(await kv.fill(cacheKey, '{"apiKeyId":1}', (await kv.readCached(cacheKey)).token, 60_000));
  t.is((await a.principalOf('pk_c'))?.apiKeyId, 'key-1');
  t.is(store.hashReads, 1);
  await kv.clear();
  await bus.publish('admin:events', 'not an event');
  await eventually(async () => (await a.principalOf('pk_c'), store.hashReads >= 2), 'the cache was cleared', 5_000);
  t.true(store.hashReads >= 2, 'the principal was read from the store again after the foreign message');
  t.is((await a.principalOf('pk_c'))?.apiKeyId, 'key-1', 'and served correctly');
  await a.stop();
});
