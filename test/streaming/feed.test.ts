import test from 'ava';
import { MemoryBus } from '../../src/storage/memory-kv.js';
import { runFeed, SlowConsumerError, type FeedItem } from '../../src/streaming/feed.js';
import { noTelemetry, type Telemetry } from '../../src/ports/telemetry.js';

/** A fake record: committed events by revision, published on the bus only when `publish` is true. */
class Log {
  readonly rows: Array<{ revision: number; event: string }> = [];
  constructor(readonly bus: MemoryBus, readonly channel: string) {}
  async commit(event: string, publish = true): Promise<number> {
    const revision = this.rows.length + 1;
    this.rows.push({ revision, event });
    if (publish) await this.bus.publish(this.channel, JSON.stringify({ revision, event }));
    return revision;
  }
  async load(after: number, limit: number) {
    return this.rows.filter((r) => r.revision > after).slice(0, limit);
  }
}

const parse = (m: string) => JSON.parse(m) as FeedItem<string>;
const tick = () => new Promise((r) => setTimeout(r, 0));

function collect(log: Log, after: number, opts: { maxPending?: number; slow?: () => Promise<void>; marker?: boolean; telemetry?: Telemetry } = {}) {
  const got: Array<FeedItem<string>> = [];
  const abort = new AbortController();
  const done = runFeed({
    bus: log.bus,
    channel: log.channel,
    afterRevision: after,
    load: (a, l) => log.load(a, l),
    parse,
    deliver: async (item) => {
      got.push(item);
      await opts.slow?.();
    },
    maxPending: opts.maxPending ?? 10_000,
    signal: abort.signal,
    isFinal: (i) => i.event === 'deleted',
    caughtUp: opts.marker
      ? async (revision) => {
          got.push({ revision, event: 'caught_up' });
        }
      : undefined,
    observed: opts.telemetry && { telemetry: opts.telemetry, kind: 'genie' },
  });
  return { got, abort, done };
}

test('replays what was committed after the revision, then continues live', async (t) => {
  const log = new Log(new MemoryBus(), 's1');
  for (const e of ['a', 'b', 'c']) await log.commit(e);
  const w = collect(log, 1, { marker: true });
  await tick();
  await log.commit('d');
  await log.commit('deleted');
  t.is(await w.done, 5);
  t.deepEqual(w.got.map((i) => i.event), ['b', 'c', 'caught_up', 'd', 'deleted']);
  t.is(w.got[2]!.revision, 3, 'the marker carries the revision the replay reached');
});

test('caught_up comes once, after the replay and before anything live, even when writes race the replay', async (t) => {
  for (let run = 0; run < 50; run++) {
    const bus = new MemoryBus();
    const log = new Log(bus, `cu${run}`);
    for (let i = 0; i < run % 5; i++) await log.commit(`e${i}`);
    const w = collect(log, 0, { marker: true });
    const writes = Array.from({ length: 3 }, (_, i) => log.commit(`live${i}`));
    await Promise.all(writes);
    await log.commit('deleted');
    await w.done;
    const events = w.got.map((i) => i.event);
    t.is(events.filter((e) => e === 'caught_up').length, 1, `run ${run}: ${events.join(',')}`);
    const at = events.indexOf('caught_up');
    const marker = w.got[at]!;
    t.is(marker.revision, at === 0 ? 0 : w.got[at - 1]!.revision, `run ${run}: the marker names the last replayed revision`);
    t.deepEqual(
      w.got.filter((i) => i.event !== 'caught_up').map((i) => i.revision),
      Array.from({ length: log.rows.length }, (_, i) => i + 1),
      `run ${run}: every revision once, in order`,
    );
  }
});

test('a feed that ends during its replay (a deletion replayed) sends no caught_up', async (t) => {
  const log = new Log(new MemoryBus(), 'gone');
  await log.commit('a');
  await log.commit('deleted');
  const w = collect(log, 0, { marker: true });
  t.is(await w.done, 2);
  t.deepEqual(w.got.map((i) => i.event), ['a', 'deleted']);
});

test('writes racing the switch-over are delivered once each, in order, over many runs', async (t) => {
  for (let run = 0; run < 200; run++) {
    const log = new Log(new MemoryBus(), `race${run}`);
    const before = run % 7;
    for (let i = 0; i < before; i++) await log.commit(`e${i}`);
    const w = collect(log, 0);
    // Commit while the feed is subscribing and replaying, at a different point each run.
    const writes = (async () => {
      for (let i = before; i < before + 10; i++) {
        if (i % 3 === run % 3) await tick();
        await log.commit(`e${i}`);
      }
      await log.commit('deleted');
    })();
    await writes;
    await w.done;
    const revisions = w.got.map((i) => i.revision);
    t.deepEqual(revisions, Array.from({ length: before + 11 }, (_, i) => i + 1), `run ${run}: ${revisions.join(',')}`);
  }
});

test('a gap in live messages (lost publish) is filled from the record', async (t) => {
  const log = new Log(new MemoryBus(), 'gap');
  const w = collect(log, 0);
  await tick();
  await log.commit('a');
  await log.commit('b', false); // lost, as during a Redis restart
  await log.commit('c');
  await log.commit('deleted');
  await w.done;
  t.deepEqual(w.got.map((i) => i.event), ['a', 'b', 'c', 'deleted']);
});

test('ephemeral items pass through live without a revision', async (t) => {
  const bus = new MemoryBus();
  const log = new Log(bus, 'eph');
  const w = collect(log, 0);
  await tick();
  await bus.publish('eph', JSON.stringify({ event: 'delta' }));
  await log.commit('deleted');
  await w.done;
  t.deepEqual(w.got.map((i) => [i.event, i.revision]), [['delta', undefined], ['deleted', 1]]);
});

test('a consumer slower than its buffer fails with the revision to resume from, and unsubscribes', async (t) => {
  const bus = new MemoryBus();
  const log = new Log(bus, 'slow');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const w = collect(log, 0, { maxPending: 5, slow: () => gate });
  await tick();
  for (let i = 0; i < 20; i++) await log.commit(`e${i}`);
  await tick();
  release();
  const e = await t.throwsAsync(w.done, { instanceOf: SlowConsumerError });
  t.is(e!.lastRevision, 0, "the first delivery never completed, so nothing counts as delivered");
  t.is(bus.subscribedChannels(), 0);
});

test('aborting frees the subscription', async (t) => {
  const bus = new MemoryBus();
  const log = new Log(bus, 'abort');
  const w = collect(log, 0);
  await tick();
  t.is(bus.subscribedChannels(), 1);
  w.abort.abort();
  await w.done;
  t.is(bus.subscribedChannels(), 0);
});

test('a feed reports itself as a watcher: open while it runs, how many updates it buffered, one cut-off when too slow', async (t) => {
  const events: string[] = [];
  const telemetry: Telemetry = {
    ...noTelemetry,
    watcherOpened: (kind) => events.push(`open:${kind}`),
    watcherClosed: (kind) => events.push(`closed:${kind}`),
    watcherBuffered: (kind, n) => events.push(`buffered:${n}`),
    watcherCutOff: (kind, reason) => events.push(`cut:${reason}`),
  };
  const bus = new MemoryBus();
  const log = new Log(bus, 'observed');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const w = collect(log, 0, { maxPending: 3, slow: () => gate, telemetry });
  await tick();
  t.deepEqual(events, ['open:genie']);
  for (let i = 0; i < 6; i++) await log.commit(`e${i}`);
  await tick();
  release();
  await t.throwsAsync(w.done, { instanceOf: SlowConsumerError });
  // However the deliveries interleave: one open, the buffer reported as it fills up to its size, one cut-off
  // (later messages find the feed cut off already), one close.
  t.is(events[0], 'open:genie');
  t.is(events.at(-1), 'closed:genie');
  t.deepEqual(events.filter((e) => e.startsWith('cut:')), ['cut:too_slow']);
  const buffered = events.filter((e) => e.startsWith('buffered:')).map((e) => Number(e.slice(9)));
  t.is(Math.max(...buffered), 3);
  t.true(events.indexOf('cut:too_slow') > events.lastIndexOf('buffered:3'));
});
