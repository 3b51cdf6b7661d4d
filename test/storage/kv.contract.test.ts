import { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import type { FastStore } from '../../src/ports/fast-store.js';
import type { KvStore, VersionedCopy } from '../../src/ports/kv.js';
import { memoryStore } from '../../src/storage/memory-kv.js';
import { redisStore } from '../../src/storage/redis-kv.js';
import { realRedisUrl, redisClusterUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { eventually } from '../helpers/eventually.js';
import { hasRedisServer, PrivateRedis } from '../helpers/faults.js';

/**
 * One contract, two implementations: the embedded store must behave as Redis does for everything we use.
 * Redis runs it three times: on the Redis the environment names; on a private one-node Redis Cluster through a
 * plain connection, which refuses any command that touches keys of two slots (so the store stays usable behind
 * a cluster); and through the Cluster client (sharded pub/sub, fences on three masters) on the cluster
 * PARLEY_TEST_REDIS_CLUSTER_URL names.
 */
const implementations: Array<{ name: string; make: (t: ExecutionContext) => Promise<FastStore>; enabled: boolean; missing: string }> = [
  { name: 'memory', make: async () => memoryStore(), enabled: true, missing: '' },
  {
    name: 'redis',
    make: () => redisStore(realRedisUrl!, `${uniqueName('kvc')}:`),
    enabled: realRedisUrl !== undefined,
    missing: 'set REDIS_URL or PARLEY_TEST_REDIS_URL to cover a real Redis',
  },
  {
    name: 'redis cluster',
    make: async (t) => redisStore((await PrivateRedis.start(t, { cluster: true })).url, `${uniqueName('kvc')}:`),
    enabled: hasRedisServer,
    missing: 'redis-server is not installed',
  },
  {
    name: 'redis cluster client',
    make: () => redisStore(redisClusterUrl!, `${uniqueName('kvc')}:`, { cluster: {} }),
    enabled: redisClusterUrl !== undefined,
    missing: 'set PARLEY_TEST_REDIS_CLUSTER_URL (a node of a Redis Cluster: scripts/redis-cluster.sh start) to cover a cluster',
  },
];

// TTLs long enough that a busy machine still reads the value before it expires; expiry is then waited on.
const SHORT_TTL_MS = 1_500;

async function within<T>(t: ExecutionContext, fn: (s: FastStore) => Promise<T>, make: (t: ExecutionContext) => Promise<FastStore>): Promise<T> {
  const store = await make(t);
  try {
    return await fn(store);
  } finally {
    await store.kv.clear();
    await store.close();
  }
}

for (const impl of implementations) {
  const test = testWhen(impl.enabled, impl.missing);
  const run = (t: ExecutionContext, fn: (s: FastStore) => Promise<void>) => within(t, fn, impl.make);

  test(`${impl.name}: get/set/del round-trip`, (t) =>
    run(t, async ({ kv }) => {
      t.is(await kv.get('a'), null);
      await kv.set('a', 'one');
      t.is(await kv.get('a'), 'one');
      await kv.set('a', 'two');
      t.is(await kv.get('a'), 'two');
      await kv.del('a', 'missing');
      t.is(await kv.get('a'), null);
    }));

  test(`${impl.name}: values expire after their TTL`, (t) =>
    run(t, async ({ kv }) => {
      await kv.set('ttl', 'v', SHORT_TTL_MS);
      await kv.set('kept', 'v', 60_000);
      t.is(await kv.get('ttl'), 'v');
      await eventually(async () => (await kv.get('ttl')) === null, 'the value to expire after its TTL');
      t.is(await kv.get('kept'), 'v', 'a value with a longer TTL is still there');
    }));

  test(`${impl.name}: setIfAbsent sets once`, (t) =>
    run(t, async ({ kv }) => {
      t.true(await kv.setIfAbsent('once', 'first', 10_000));
      t.false(await kv.setIfAbsent('once', 'second', 10_000));
      t.is(await kv.get('once'), 'first');
    }));

  test(`${impl.name}: clear removes only this store's keys`, (t) =>
    run(t, async ({ kv }) => {
      await kv.set('x', '1');
      await kv.set('{tag}:y', '2');
      await kv.clear();
      t.is(await kv.get('x'), null);
      t.is(await kv.get('{tag}:y'), null);
    }));

  test(`${impl.name}: publish reaches every subscriber of the channel, and only them`, (t) =>
    run(t, async ({ bus }) => {
      const a: string[] = [];
      const b: string[] = [];
      const other: string[] = [];
      const sa = await bus.subscribe('chan', (m) => a.push(m));
      const sb = await bus.subscribe('chan', (m) => b.push(m));
      const so = await bus.subscribe('other', (m) => other.push(m));
      t.is(bus.subscribedChannels(), 2);
      await bus.publish('chan', 'm1');
      await bus.publish('chan', 'm2');
      await eventually(() => a.length >= 2 && b.length >= 2, 'both subscribers to receive both messages');
      t.deepEqual(a, ['m1', 'm2']);
      t.deepEqual(b, ['m1', 'm2']);
      t.deepEqual(other, []);
      await sa.close();
      await sb.close();
      await so.close();
      t.is(bus.subscribedChannels(), 0, 'closing every subscription releases the channel');
    }));

  test(`${impl.name}: process-wide subscriptions receive messages but are not counted as subscribed channels`, (t) =>
    run(t, async ({ bus }) => {
      const got: string[] = [];
      const wide = await bus.subscribe('control', (m) => got.push(m), { processWide: true });
      t.is(bus.subscribedChannels(), 0);
      const ordinary = await bus.subscribe('control', () => {});
      t.is(bus.subscribedChannels(), 1, 'an ordinary subscriber of the same channel counts');
      await ordinary.close();
      t.is(bus.subscribedChannels(), 0);
      await bus.publish('control', 'm1');
      await eventually(() => got.length >= 1, 'the process-wide subscriber to receive m1');
      t.deepEqual(got, ['m1']);
      await wide.close();
      // Messages reach subscribers in publish order, so once a later marker arrived, m2 would have too.
      const markers: string[] = [];
      const marker = await bus.subscribe('marker', (m) => markers.push(m), { processWide: true });
      await bus.publish('control', 'm2');
      await bus.publish('marker', 'after-m2');
      await eventually(() => markers.length >= 1, 'the marker published after m2');
      await marker.close();
      t.deepEqual(got, ['m1'], 'closed');
      t.is(bus.subscribedChannels(), 0);
    }));
  test(`${impl.name}: a fill lands with the token of its miss, and a fence voids the copy and every earlier token`, (t) =>
    run(t, async ({ kv }) => {
      const miss = await kv.readCached('{p}:c');
      t.is(miss.value, null);
      t.not(miss.token, undefined, 'a healthy store hands out a token on a miss');
      t.true(await kv.fill('{p}:c', 'v1', miss.token, 10_000));
      t.is((await kv.readCached('{p}:c')).value, 'v1');
      // A reader takes its token, then a writer commits and fences before the reader's fill arrives.
      const before = await kv.fence('{p}:c').then(() => kv.readCached('{p}:c'));
      t.is(before.value, null, 'the fence dropped the copy');
      const racing = before.token;
      await kv.fence('{p}:c');
      t.false(await kv.fill('{p}:c', 'stale', racing, 10_000), 'a fill with a token from before the fence is refused');
      t.is((await kv.readCached('{p}:c')).value, null);
      t.false(await kv.fill('{p}:c', 'x', undefined, 10_000), 'no token, no fill');
      const fresh = await kv.readCached('{p}:c');
      t.true(await kv.fill('{p}:c', 'v2', fresh.token, 10_000));
      t.is((await kv.readCached('{p}:c')).value, 'v2');
    }));

  test(`${impl.name}: fenced copies expire after their TTL, and clear removes them`, (t) =>
    run(t, async ({ kv }) => {
      t.true(await kv.fill('short', 'v', (await kv.readCached('short')).token, SHORT_TTL_MS));
      await eventually(async () => (await kv.readCached('short')).value === null, 'the copy to expire after its TTL');
      t.true(await kv.fill('kept', 'v', (await kv.readCached('kept')).token, 10_000));
      await kv.clear();
      t.is((await kv.readCached('kept')).value, null);
    }));
  const items = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `e${from + i}`);
  const copyAt = (revision: number, first: number, last: number): VersionedCopy => ({ head: `h${revision}`, revision, first, items: items(first, last) });
  const held = async (kv: KvStore, newest = 100) => {
    const r = await kv.readVersioned('{v}:c', newest);
    return r.copy && { head: r.copy.head, revision: r.copy.revision, first: r.copy.first, items: r.copy.items.join(','), heldFrom: r.heldFrom };
  };

  test(`${impl.name}: a versioned copy fills once, serves its newest items, and advances by appending`, (t) =>
    run(t, async ({ kv }) => {
      const miss = await kv.readVersioned('{v}:c', 10);
      t.is(miss.copy, undefined);
      t.true(await kv.fillVersioned('{v}:c', copyAt(3, 1, 5), miss.token, { items: 4, bytes: 1e6 }, 10_000));
      t.deepEqual(await held(kv), { head: 'h3', revision: 3, first: 2, items: 'e2,e3,e4,e5', heldFrom: 2 }, 'kept the newest 4');
      t.deepEqual(await held(kv, 2), { head: 'h3', revision: 3, first: 4, items: 'e4,e5', heldFrom: 2 }, 'asked for 2');
      t.deepEqual(await held(kv, 0), { head: 'h3', revision: 3, first: 6, items: '', heldFrom: 2 }, 'the head alone');
      await kv.advance('{v}:c', 3, copyAt(4, 6, 6), { items: 4, bytes: 1e6 }, 10_000);
      t.deepEqual(await held(kv), { head: 'h4', revision: 4, first: 3, items: 'e3,e4,e5,e6', heldFrom: 3 }, 'appended and trimmed');
      await kv.advance('{v}:c', 4, copyAt(5, 7, 6), { items: 4, bytes: 1e6 }, 10_000);
      t.deepEqual(await held(kv), { head: 'h5', revision: 5, first: 3, items: 'e3,e4,e5,e6', heldFrom: 3 }, 'a head-only revision');
    }));

  test(`${impl.name}: a versioned copy never moves back, and a gap replaces its items`, (t) =>
    run(t, async ({ kv }) => {
      t.true(await kv.fillVersioned('{v}:c', copyAt(2, 1, 2), (await kv.readVersioned('{v}:c', 1)).token, { items: 10, bytes: 1e6 }, 10_000));
      // Revision 4's advance arrives before revision 3's: the copy jumps, 3 then changes nothing.
      await kv.advance('{v}:c', 3, copyAt(4, 4, 4), { items: 10, bytes: 1e6 }, 10_000);
      t.deepEqual(await held(kv), { head: 'h4', revision: 4, first: 4, items: 'e4', heldFrom: 4 }, 'not contiguous: only what the advance knows');
      await kv.advance('{v}:c', 2, copyAt(3, 3, 3), { items: 10, bytes: 1e6 }, 10_000);
      t.is((await held(kv))?.revision, 4, 'a late advance does not regress the copy');
      // A fill that read revision 3 before the advance to 4 is refused by generation and by revision.
      const stale = (await kv.readVersioned('{v}:c', 1)).token;
      await kv.advance('{v}:c', 4, copyAt(5, 5, 5), { items: 10, bytes: 1e6 }, 10_000);
      t.false(await kv.fillVersioned('{v}:c', copyAt(3, 1, 3), stale, { items: 10, bytes: 1e6 }, 10_000), 'a token from before the advance');
      t.false(await kv.fillVersioned('{v}:c', copyAt(5, 1, 5), (await kv.readVersioned('{v}:c', 1)).token, { items: 10, bytes: 1e6 }, 10_000), 'same revision');
      t.deepEqual(await held(kv), { head: 'h5', revision: 5, first: 4, items: 'e4,e5', heldFrom: 4 });
      // An advance creates a copy where there is none.
      await kv.advance('{v}:other', 0, { head: 'new', revision: 1, first: 1, items: [] }, { items: 10, bytes: 1e6 }, 10_000);
      t.is((await kv.readVersioned('{v}:other', 5)).copy?.head, 'new');
    }));

  test(`${impl.name}: a tombstone refuses every later fill and advance; a plain fence only voids tokens`, (t) =>
    run(t, async ({ kv }) => {
      t.true(await kv.fillVersioned('{v}:c', copyAt(1, 1, 1), (await kv.readVersioned('{v}:c', 1)).token, { items: 10, bytes: 1e6 }, 10_000));
      await kv.fence('{v}:c');
      t.is(await held(kv), undefined, 'a fence drops the copy');
      await kv.advance('{v}:c', 1, copyAt(2, 2, 2), { items: 10, bytes: 1e6 }, 10_000);
      t.is((await held(kv))?.revision, 2, 'an advance after a plain fence lands');
      const token = (await kv.readVersioned('{v}:c', 1)).token;
      await kv.fence('{v}:c', { tombstone: true });
      t.is(await held(kv), undefined);
      await kv.advance('{v}:c', 2, copyAt(3, 3, 3), { items: 10, bytes: 1e6 }, 10_000);
      t.is(await held(kv), undefined, 'a late advance does not resurrect a deleted copy');
      t.false(await kv.fillVersioned('{v}:c', copyAt(9, 1, 3), (await kv.readVersioned('{v}:c', 1)).token, { items: 10, bytes: 1e6 }, 10_000), 'nor does a fill');
      t.false(await kv.fillVersioned('{v}:c', copyAt(9, 1, 3), token, { items: 10, bytes: 1e6 }, 10_000));
      await kv.fence('{v}:c');
      t.false(await kv.fillVersioned('{v}:c', copyAt(9, 1, 3), (await kv.readVersioned('{v}:c', 1)).token, { items: 10, bytes: 1e6 }, 10_000), 'a later plain fence keeps the tombstone');
    }));
  test(`${impl.name}: a versioned copy also drops its oldest items past its byte bound, keeping the newest whatever its size`, (t) =>
    run(t, async ({ kv }) => {
      const keep = { items: 10, bytes: 25 };
      const big = (n: number, size: number) => 'x'.repeat(size - String(n).length) + String(n);
      const copy = { head: 'h1', revision: 1, first: 1, items: [big(1, 10), big(2, 10), big(3, 10)] };
      t.true(await kv.fillVersioned('{v}:b', copy, (await kv.readVersioned('{v}:b', 1)).token, keep, 10_000));
      t.is((await kv.readVersioned('{v}:b', 10)).heldFrom, 2, '30 bytes > 25: the oldest went');
      await kv.advance('{v}:b', 1, { head: 'h2', revision: 2, first: 4, items: ['é'.repeat(20)] }, keep, 10_000);
      const r = await kv.readVersioned('{v}:b', 10);
      t.is(r.heldFrom, 4, 'a 40-byte item (UTF-8) over the bound stays alone');
      t.deepEqual(r.copy?.items, ['é'.repeat(20)]);
      await kv.advance('{v}:b', 2, { head: 'h3', revision: 3, first: 5, items: [big(5, 10)] }, keep, 10_000);
      t.is((await kv.readVersioned('{v}:b', 10)).heldFrom, 5, 'and goes as soon as a newer one comes');
    }));

  test(`${impl.name}: the delta log returns the deltas of utterances in flight, in order, and drops an utterance once it ends`, (t) =>
    run(t, async ({ deltas }) => {
      const sid = randomUUID();
      t.deepEqual(await deltas.inFlight(sid), []);
      await deltas.append(sid, 'u1', 'a0', 60_000);
      await deltas.append(sid, 'u2', 'b0', 60_000);
      await deltas.append(sid, 'u1', 'a1', 60_000);
      t.deepEqual(await deltas.inFlight(sid), [
        { utteranceId: 'u1', message: 'a0' },
        { utteranceId: 'u2', message: 'b0' },
        { utteranceId: 'u1', message: 'a1' },
      ]);
      await deltas.end(sid, 'u1', 60_000);
      t.deepEqual(await deltas.inFlight(sid), [{ utteranceId: 'u2', message: 'b0' }], 'an ended utterance is no longer in flight');
      await deltas.append(sid, 'u2', 'b1', 60_000);
      await deltas.end(sid, 'u2', 60_000);
      t.deepEqual(await deltas.inFlight(sid), []);
      t.deepEqual(await deltas.inFlight(randomUUID()), [], 'sessions do not share a log');
      // Ending an utterance that never had a delta (a commit without chunks) leaves nothing behind either.
      await deltas.end(sid, 'u3', 60_000);
      t.deepEqual(await deltas.inFlight(sid), []);
    }));

  test(`${impl.name}: a delta log expires after its TTL without an append or end`, (t) =>
    run(t, async ({ deltas }) => {
      const sid = randomUUID();
      await deltas.append(sid, 'u', 'm', SHORT_TTL_MS);
      t.is((await deltas.inFlight(sid)).length, 1);
      await eventually(async () => (await deltas.inFlight(sid)).length === 0, 'the log to expire');
    }));
}

const twoReplicas = testWhen(realRedisUrl !== undefined, 'set REDIS_URL or PARLEY_TEST_REDIS_URL to cover a real Redis');
twoReplicas('redis: a replica delivers what it publishes to its own subscribers at once and only once, and the other replica gets it through Redis', async (t) => {
  const prefix = `${uniqueName('kvc')}:`;
  const a = await redisStore(realRedisUrl!, prefix);
  const b = await redisStore(realRedisUrl!, prefix);
  t.teardown(async () => {
    await a.kv.clear();
    await a.close();
    await b.close();
  });
  const atA: string[] = [];
  const atB: string[] = [];
  await a.bus.subscribe('chan', (m) => atA.push(m));
  await b.bus.subscribe('chan', (m) => atB.push(m));
  await a.bus.publish('chan', '{"n":1}');
  await a.bus.publish('chan', '{"n":2}');
  // Published by b after a's two went through Redis: when a hears it, any Redis copy of its own would have come first.
  await b.bus.publish('chan', 'end');
  await eventually(() => atA.includes('end') && atB.includes('end'), 'both replicas to hear the end marker');
  t.deepEqual(atA, ['{"n":1}', '{"n":2}', 'end'], 'once each, in order');
  // b's own message went to its subscriber at once, so it may come before a's, which travel through Redis.
  t.deepEqual(atB.filter((m) => m !== 'end'), ['{"n":1}', '{"n":2}'], 'the other replica gets them once each, in order');
  t.is(atB.filter((m) => m === 'end').length, 1);
});
