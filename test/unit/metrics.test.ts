import test from 'ava';
import { createLogger } from '../../src/log.js';
import { Metrics, REFUSALS } from '../../src/metrics.js';
import type { Bus, Subscription } from '../../src/ports/bus.js';
import { MemoryBus } from '../../src/storage/memory-kv.js';

function setup() {
  const lines: Array<Record<string, unknown>> = [];
  let now = 1_000_000;
  const metrics = new Metrics({ logger: createLogger('info', (l) => lines.push(JSON.parse(l))), now: () => now });
  return { metrics, lines, advance: (ms: number) => (now += ms) };
}

test('metrics: calls are counted by method and code, and their durations land in histogram buckets', async (t) => {
  const { metrics } = setup();
  metrics.callFinished('/a.v1.S/Get', 'OK', 0.003);
  metrics.callFinished('/a.v1.S/Get', 'OK', 0.2);
  metrics.callFinished('/a.v1.S/Get', 'NOT_FOUND', 0.001);
  t.is(await metrics.value('parley_calls_total', { method: '/a.v1.S/Get', code: 'OK' }), 2);
  t.is(await metrics.value('parley_calls_total', { code: 'NOT_FOUND', method: '/a.v1.S/Get' }), 1);
  t.is(await metrics.value('parley_calls_total', { method: '/a.v1.S/Get', code: 'INTERNAL' }), 0);
  const text = await metrics.scrape();
  t.true(text.includes('parley_call_duration_seconds_bucket{le="0.005",method="/a.v1.S/Get"} 2'), text);
  t.true(text.includes('parley_call_duration_seconds_bucket{le="0.25",method="/a.v1.S/Get"} 3'));
  t.true(text.includes('parley_call_duration_seconds_count{method="/a.v1.S/Get"} 3'));
});

test('metrics: open streams go up and down by method; refusals are counted by reason', async (t) => {
  const { metrics } = setup();
  metrics.streamOpened('/a.v1.S/Watch');
  metrics.streamOpened('/a.v1.S/Watch');
  metrics.streamClosed('/a.v1.S/Watch');
  t.is(await metrics.value('parley_streams_open', { method: '/a.v1.S/Watch' }), 1);
  metrics.refused('RATE_LIMIT');
  metrics.refused('RATE_LIMIT');
  t.is(await metrics.value(REFUSALS, { reason: 'RATE_LIMIT' }), 2);
  t.is(await metrics.value(REFUSALS, { reason: 'STREAM_LIMIT' }), 0);
});

test('metrics: each app has its own registry, so two servers in one process do not share series', async (t) => {
  const a = setup().metrics;
  const b = setup().metrics;
  a.refused('RATE_LIMIT');
  t.is(await a.value(REFUSALS, { reason: 'RATE_LIMIT' }), 1);
  t.is(await b.value(REFUSALS, { reason: 'RATE_LIMIT' }), 0);
});

test('metrics: the telemetry port records cache reads, watchers, their buffers and cut-offs', async (t) => {
  const { metrics } = setup();
  const tm = metrics.telemetry;
  tm.cacheRead('prompt', false);
  tm.cacheRead('prompt', true);
  tm.cacheRead('prompt', true);
  tm.watcherOpened('genie');
  tm.watcherOpened('genie');
  tm.watcherClosed('genie');
  tm.watcherBuffered('genie', 3);
  tm.watcherCutOff('prompt', 'too_slow');
  t.is(await metrics.value('parley_cache_reads_total', { cache: 'prompt', result: 'hit' }), 2);
  t.is(await metrics.value('parley_cache_reads_total', { cache: 'prompt', result: 'miss' }), 1);
  t.is(await metrics.value('parley_watchers_open', { watcher: 'genie' }), 1);
  t.is(await metrics.value('parley_watchers_open', { watcher: 'prompt' }), 0);
  t.is(await metrics.value('parley_watcher_cutoffs_total', { watcher: 'prompt', reason: 'too_slow' }), 1);
  const text = await metrics.scrape();
  t.true(text.includes('parley_watcher_buffered_updates_bucket{le="2",watcher="genie"} 0'));
  t.true(text.includes('parley_watcher_buffered_updates_bucket{le="5",watcher="genie"} 1'));
  // Known series exist at 0 from the start.
  t.true(text.includes('parley_cache_reads_total{cache="model_type",result="miss"} 0'));
  t.true(text.includes('parley_contained_failures_total{what="after_commit"} 0'));
});

test('metrics: a contained failure is counted every time and logged once per kind, then at most once a minute', async (t) => {
  const { metrics, lines, advance } = setup();
  for (let i = 0; i < 100; i++) metrics.telemetry.contained('cache_read', new Error('Connection is closed.'));
  metrics.telemetry.contained('after_commit', new Error('Connection is closed.'));
  t.is(await metrics.value('parley_contained_failures_total', { what: 'cache_read' }), 100);
  t.is(await metrics.value('parley_contained_failures_total', { what: 'after_commit' }), 1);
  t.deepEqual(
    lines.map((l) => [l.level, l.what, l.error, l.unloggedBefore]),
    [
      ['warn', 'cache_read', 'Error: Connection is closed.', 0],
      ['warn', 'after_commit', 'Error: Connection is closed.', 0],
    ],
  );
  advance(60_000);
  metrics.telemetry.contained('cache_read', new Error('x'.repeat(10_000)));
  t.is(lines.length, 3);
  t.like(lines[2], { what: 'cache_read', unloggedBefore: 99 });
  t.true(String(lines[2]!.error).length <= 200, 'the error text is cut short');
});

test('metrics: pool gauges are read when scraped', async (t) => {
  const { metrics } = setup();
  let usage = { used: 2, pending: 0 };
  metrics.observePool(() => usage);
  t.true((await metrics.scrape()).includes('parley_db_pool_connections_in_use 2'));
  usage = { used: 10, pending: 4 };
  const text = await metrics.scrape();
  t.true(text.includes('parley_db_pool_connections_in_use 10'));
  t.true(text.includes('parley_db_pool_acquires_pending 4'));
});

test('metrics: an observed bus counts messages published and delivered, and reconnects', async (t) => {
  const { metrics } = setup();
  const reconnects = new Set<() => void>();
  const inner = new MemoryBus();
  const flaky: Bus = {
    publish: (c, m) => inner.publish(c, m),
    subscribe: (c, on, o): Promise<Subscription> => inner.subscribe(c, on, o),
    subscribedChannels: () => inner.subscribedChannels(),
    onReconnect: (fn) => {
      reconnects.add(fn);
      return () => reconnects.delete(fn);
    },
  };
  const bus = metrics.observeBus(flaky);
  const got: string[] = [];
  const a = await bus.subscribe('ch', (m) => got.push(`a:${m}`));
  await bus.subscribe('ch', (m) => got.push(`b:${m}`));
  await bus.publish('ch', 'one');
  await bus.publish('other', 'two');
  t.deepEqual(got.sort(), ['a:one', 'b:one']);
  t.is(await metrics.value('parley_bus_messages_published_total'), 2);
  t.is(await metrics.value('parley_bus_messages_received_total'), 2);
  for (const fn of reconnects) fn();
  t.is(await metrics.value('parley_bus_reconnects_total'), 1);
  t.is(bus.subscribedChannels(), 1);
  await a.close();
});
