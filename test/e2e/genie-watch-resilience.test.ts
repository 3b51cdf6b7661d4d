import test from 'ava';
import { credentials, status } from '@grpc/grpc-js';
import { GenieServiceClient } from '../../src/gen/parley/genie/v1/genie.js';
import { eventually } from '../helpers/eventually.js';
import { ADMIN_TOKEN, createTenant, startTestServer, type TestServer } from '../helpers/harness.js';
import { env, testWhen } from '../helpers/backends.js';
import { freePort, startParleyProcess } from '../helpers/processes.js';
import { hasRedisServer, PrivateRedis } from '../helpers/faults.js';
import { Watcher } from '../helpers/watch.js';
import { chatType, genie } from '../genie/fixtures.js';

// Serial: each test loads the machine (a thousand watchers, servers restarting), and running them side by
// side only starves one server's startup behind another's load on a busy machine.
const withRedis = testWhen(hasRedisServer, 'redis-server is not installed', false, true);


async function setup(s: TestServer) {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(chatType);
  const id = (await g.create('chat', {})).sessionId;
  return { tenant, g, id };
}


test.serial('a watcher that reads too slowly is cut off with RESOURCE_EXHAUSTED and resumes from its last revision', async (t) => {
  const s = await startTestServer({ watchBufferSize: 4 });
  try {
    const { tenant, g, id } = await setup(s);
    const w = new Watcher(s.genie, tenant.md, id, 0);
    await w.until((x) => x.revisions().length === 1, 'the creation');
    w.call.pause(); // a consumer that stops reading
    // Enough data to fill the client's buffers and both HTTP/2 windows, then the server's bounded buffer.
    const big = 'x'.repeat(128 * 1024);
    for (let i = 0; i < 64; i++) await g.send(id, 'user_says', `${i} ${big}`);
    w.call.resume();
    await w.until((x) => x.error !== undefined, 'the cut-off', 20_000).catch(() => {});
    t.is(w.error?.code, status.RESOURCE_EXHAUSTED, `expected RESOURCE_EXHAUSTED, got ${w.error?.code} ${w.error?.details}`);
    const seen = w.revisions();
    t.true(seen.length < 65, 'the slow watcher did not receive everything');
    t.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => i + 1), 'what it did receive has no gap');
    t.is(s.app.store.bus.subscribedChannels(), 0, 'the cut-off freed its subscription');

    const last = seen.at(-1) ?? 0;
    const resumed = new Watcher(s.genie, tenant.md, id, last);
    const head = (await g.get(id)).revision;
    await resumed.until((x) => x.revisions().at(-1) === head, `revision ${head} after resuming`, 20_000);
    t.deepEqual(resumed.revisions(), Array.from({ length: head - last }, (_, i) => last + i + 1), 'resuming fills in the rest, once each');
    resumed.cancel();
  } finally {
    await s.stop();
  }
});

withRedis('Redis restarting mid-stream loses no committed event: the gap is filled from Postgres', async (t) => {
  const redis = await PrivateRedis.start(t);
  const s = await startTestServer({ redisUrl: redis.url });
  try {
    const { tenant, g, id } = await setup(s);
    const w = new Watcher(s.genie, tenant.md, id, 0);
    await w.until((x) => x.revisions().length === 1, 'the creation');
    await redis.kill();
    await eventually(() => s.app.store.kv.ping().then(() => false, () => true), 'parley to see Redis gone');
    for (let i = 0; i < 3; i++) await g.send(id, 'user_says', `while redis is down ${i}`);
    await redis.start();
    await w.until((x) => x.revisions().length === 4, 'the three events committed while Redis was down', 15_000);
    await g.send(id, 'user_says', 'after the restart');
    await w.until((x) => x.revisions().length === 5, 'a live event after the restart', 15_000);
    t.deepEqual(w.revisions(), [1, 2, 3, 4, 5]);
    w.cancel();
  } finally {
    await s.stop();
  }
});

const withSharedServers = testWhen(
  Boolean(env.databaseUrl && env.redisUrl),
  'needs a shared Postgres and Redis (DATABASE_URL and REDIS_URL); the CI pass on the real servers has them',
  true,
  true,
);

withSharedServers('two server processes: a watcher on one sees writes made through the other', async (t) => {
  const a = await startTestServer();
  const port = await freePort();
  const b = await startParleyProcess({
    DATABASE_URL: a.app.config.databaseUrl!,
    REDIS_URL: a.app.config.redisUrl!,
    PARLEY_REDIS_PREFIX: a.app.config.redisPrefix,
    PARLEY_LISTEN: `127.0.0.1:${port}`,
    PARLEY_ADMIN_TOKEN: ADMIN_TOKEN,
    PARLEY_LOG_LEVEL: 'info', // the harness waits for the 'listening' line
  });
  const bClient = new GenieServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    const { tenant, g, id } = await setup(a);
    const onB = new Watcher(bClient, tenant.md, id, 0);
    const onA = new Watcher(a.genie, tenant.md, id, 0);
    await onB.until((x) => x.caughtUp() === 1, 'the replay of the creation, on process B');
    await g.send(id, 'user_says', 'written through A');
    await onB.until((x) => x.revisions().length === 2, 'the write through A, on process B');
    const viaB = await new Promise<number>((resolve, reject) =>
      bClient.sendEvent({ sessionId: id, eventName: 'user_says', actor: 0, actorInput: 'written through B', expectedRevision: undefined, requestId: '' }, tenant.md, (e, r) =>
        e ? reject(e) : resolve(r!.revision),
      ),
    );
    t.is(viaB, 3);
    await onA.until((x) => x.revisions().length === 3, 'the write through B, on process A');
    // B's own watcher gets it through the bus as well, independently of A's: wait for it too.
    await onB.until((x) => x.revisions().length >= 3, 'the write through B, on process B');
    t.deepEqual(onA.revisions(), [1, 2, 3]);
    t.deepEqual(onB.revisions().slice(0, 3), [1, 2, 3]);
    onA.cancel();
    onB.cancel();
  } finally {
    bClient.close();
    await b.stop();
    await a.stop();
  }
});

test.serial('1,000 watchers connecting and leaving return the process to its baseline subscriptions and memory', async (t) => {
  t.timeout(400_000);
  const s = await startTestServer();
  try {
    const { tenant, id } = await setup(s);
    const client = new GenieServiceClient(s.address, credentials.createInsecure());
    const cycle = async (n: number) => {
      const watchers = Array.from({ length: n }, () => new Watcher(client, tenant.md, id, 0));
      // A generous bound: every watcher replays from the database, and on a busy machine an embedded one
      // (a single connection) serves a thousand replays one after another.
      await Promise.all(watchers.map((w) => w.until((x) => x.revisions().length === 1, 'the creation', 150_000)));
      t.is(s.app.server.calls.size, n, 'every watcher is a live call');
      t.is(s.app.store.bus.subscribedChannels(), 1, 'one subscription per watched session, however many watchers');
      for (const w of watchers) w.cancel();
      await eventually(() => s.app.server.calls.size === 0 && s.app.store.bus.subscribedChannels() === 0, 'every cancelled watch to end').catch(() => {});
      t.is(s.app.server.calls.size, 0, 'every cancelled watch ended');
      t.is(s.app.store.bus.subscribedChannels(), 0, 'every subscription was released');
    };
    const heap = async () => {
      for (let i = 0; i < 3; i++) {
        (globalThis as { gc?: () => void }).gc?.();
        await new Promise((r) => setImmediate(r));
      }
      return process.memoryUsage().heapUsed;
    };
    await cycle(200); // warm-up: pools, JIT, http2 buffers
    const baseline = await heap();
    await cycle(1000);
    const after = await heap();
    const growth = after - baseline;
    t.log(`heap baseline ${(baseline / 2 ** 20).toFixed(1)} MiB, after 1,000 watchers left ${(after / 2 ** 20).toFixed(1)} MiB`);
    t.true(growth < 8 * 2 ** 20, `heap grew by ${(growth / 2 ** 20).toFixed(1)} MiB after the watchers left`);
    client.close();
  } finally {
    await s.stop();
  }
});

test.serial('shutdown ends open watch streams with UNAVAILABLE so clients resume elsewhere', async (t) => {
  const s = await startTestServer();
  let stopped = false;
  try {
    const { tenant, id } = await setup(s);
    const w = new Watcher(s.genie, tenant.md, id, 0);
    await w.until((x) => x.revisions().length === 1, 'the creation');
    await s.stop();
    stopped = true;
    await w.until((x) => x.error !== undefined, 'the end of the stream').catch(() => {});
    t.is(w.error?.code, status.UNAVAILABLE);
  } finally {
    if (!stopped) await s.stop();
  }
});
