import test from 'ava';
import { MemoryBus } from '../../src/storage/memory-kv.js';
import { INVALIDATE_ALL, invalidateOnBus, LocalCache } from '../../src/local-cache.js';
import type { Bus } from '../../src/ports/bus.js';

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
