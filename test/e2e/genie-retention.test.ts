import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { maintenance } from '../../src/app.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { tablesHolding } from '../helpers/leaks.js';
import { Watcher } from '../helpers/watch.js';
import { code, genie, modelType } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
// The retention clock is injected: the purge is told the time instead of the test waiting for it.
const purgeAt = (now: Date, olderThanMs = 30 * DAY) => maintenance(s.app.db, s.app.store, s.app.config).purge({ olderThanMs, now, batchSize: 1 });

// Serial: a purge sweeps the whole database.
test.serial('sessions go at their expire_time or after their type\'s session_ttl_seconds of idleness, content and all', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  const t0 = Date.now();
  await g.register(modelType({ name: 'brief', sessionTtl: { seconds: 3600, nanos: 0 } }));
  t.deepEqual((await g.getType('brief')).modelType?.sessionTtl, { seconds: 3600, nanos: 0 });
  await g.register(modelType());
  const idle = await g.create('brief', { topic: 'idle-secret-1' });
  const expiring = await g.create('qa', { topic: 'expiring-secret-2' }, new Date(t0 + HOUR));
  t.deepEqual(expiring.expireTime, new Date(t0 + HOUR));
  const extended = await g.create('qa', { topic: 'kept-secret-3' });
  const updated = await g.update(extended.sessionId, ['expire_time'], { expireTime: new Date(t0 + 3 * HOUR) });
  t.deepEqual(updated.session!.expireTime, new Date(t0 + 3 * HOUR));
  await g.get(idle.sessionId);
  t.truthy(await hotCopyOf(s.app.store.kv, idle.sessionId));
  const watcher = new Watcher(s.genie, tenant.md, idle.sessionId, 1);

  t.like(await purgeAt(new Date(t0 + HOUR / 2)), { sessions: 0 });
  const r = await purgeAt(new Date(t0 + 2 * HOUR));
  t.like(r, { sessions: 2, tombstones: 0, prompts: 0 });
  t.true(r.batches >= 2, 'a batch of one per transaction');
  for (const gone of [idle, expiring]) t.is(code(await t.throwsAsync(g.get(gone.sessionId))), status.NOT_FOUND);
  t.is((await g.get(extended.sessionId)).revision, 2, 'an expire_time still ahead keeps the session');
  t.is(await hotCopyOf(s.app.store.kv, idle.sessionId), undefined);
  await watcher.until((w) => w.ended, 'the watcher to hear of the deletion');
  t.truthy(watcher.updates.find((u) => u.commit)?.commit?.events[0]?.sessionDeleted);
  t.deepEqual(await tablesHolding(s.app.db, ['idle-secret-1', 'expiring-secret-2']), []);

  t.like(await purgeAt(new Date(t0 + 4 * HOUR)), { sessions: 1 });
  t.is(code(await t.throwsAsync(g.get(extended.sessionId))), status.NOT_FOUND);

  // Tombstones outlive the content by the purge age, then go too.
  const late = await purgeAt(new Date(t0 + 40 * DAY));
  t.like(late, { sessions: 0, tombstones: 3 });
  const w = new Watcher(s.genie, tenant.md, idle.sessionId, 0);
  await w.until((x) => x.error !== undefined, 'the watch to fail');
  t.is(w.error?.code, status.NOT_FOUND);
});

test.serial('AdminService.PurgeExpiredData runs the purge in the server and wants the admin token', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType({ name: 'gone' }));
  const past = await g.create('gone', { topic: 'x' }, new Date(Date.now() - 1000));
  const res = await rpc(s.admin, s.admin.purgeExpiredData, { olderThan: { seconds: 30 * 86_400, nanos: 0 }, batchSize: 0 }, s.adminMd);
  t.is(res.sessionCount, 1);
  t.is(code(await t.throwsAsync(g.get(past.sessionId))), status.NOT_FOUND);
  const anon = await t.throwsAsync<ServiceError>(rpc(s.admin, s.admin.purgeExpiredData, { olderThan: { seconds: 1, nanos: 0 }, batchSize: 0 }, tenant.md));
  t.is(anon?.code, status.UNAUTHENTICATED);
  const missing = await t.throwsAsync<ServiceError>(rpc(s.admin, s.admin.purgeExpiredData, { olderThan: undefined, batchSize: 0 }, s.adminMd));
  t.is(missing?.code, status.INVALID_ARGUMENT);
});
