import test from 'ava';
import { HOT_BYTES, HOT_ELEMENTS, hotKey } from '../../src/genie/cache.js';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';
import { hotCopyOf } from '../helpers/hot-copy.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

// During a rolling deploy a server that does not know labels may write a session's hot copy while its row
// holds labels: that copy must be a miss, or the labels would read as none and the next write would erase them.
test('a hot copy without labels (written by a server that did not know them) is a miss: reads show the stored labels, writes keep them', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const created = await rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields: { topic: 't' }, expireTime: undefined, requestId: '', endUserId: '', labels: { team: 'red' } }, tenant.md);
  const id = created.session!.sessionId;
  await g.get(id);
  const kv = s.app.store.kv;
  const { copy } = await kv.readVersioned(hotKey(id), HOT_ELEMENTS);
  if (!copy) return t.fail('no hot copy after a read');
  const head = JSON.parse(copy.head) as Record<string, unknown>;
  t.deepEqual(head['labels'], { team: 'red' });
  delete head['labels'];
  // Plant the old-shaped copy at the same revision: drop the copy, take a fresh token, fill.
  await kv.fence(hotKey(id));
  const { token } = await kv.readVersioned(hotKey(id), HOT_ELEMENTS);
  t.true(await kv.fillVersioned(hotKey(id), { ...copy, head: JSON.stringify(head) }, token, { items: HOT_ELEMENTS, bytes: HOT_BYTES }, 60_000));
  t.like(await hotCopyOf(kv, id), { revision: copy.revision });

  t.deepEqual({ ...(await g.get(id)).labels }, { team: 'red' });
  await g.patch(id, { topic: 'other' });
  t.deepEqual({ ...(await g.get(id)).labels }, { team: 'red' });
  const listed = await rpc(s.genie, s.genie.listSessions, { modelType: '', state: '', pageSize: 0, pageToken: '', endUserId: '', filter: 'labels.team = "red"', orderBy: '', showTotalSize: true }, tenant.md);
  t.is(listed.totalSize, 1);
});
