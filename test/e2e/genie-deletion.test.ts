import test from 'ava';
import { status } from '@grpc/grpc-js';
import type { ChatResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { DialogueFormat } from '../../src/gen/parley/genie/v1/genie.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { createTenant, startTestServer, type TestServer } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';
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

const CARD = '4111111111111111';
const SSN = '078-05-1120';
const NOTE = 'secondary-secret-c4f1';

test('DeleteSession leaves no content: replay, time travel, fork, secondary, lists, the hot copy and every table', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const { sessionId: id } = await g.create('qa', { topic: `card ${CARD}` });
  await g.send(id, 'user_input', `my ssn is ${SSN}`);
  await g.put(id, 'doc', Buffer.from(NOTE));
  await g.update(id, [], { fieldsPatch: { turns: 1 } });
  t.is((await g.get(id)).revision, 4);
  t.truthy(await hotCopyOf(s.app.store.kv, id), 'the read left a hot copy');
  const live = new Watcher(s.genie, tenant.md, id, 4);

  await g.del(id);

  await live.until((w) => w.ended, 'the live watcher to end');
  t.deepEqual(live.revisions(), [5]);
  t.truthy(live.updates.find((u) => u.commit)?.commit?.events[0]?.sessionDeleted);

  const replay = new Watcher(s.genie, tenant.md, id, 0);
  await replay.until((w) => w.ended, 'the replay to end');
  t.deepEqual(replay.revisions(), [5], 'a replay from 0 sees only the deletion');
  t.deepEqual(replay.updates.find((u) => u.commit)?.commit?.events.map((e) => Object.keys(e).filter((k) => (e as any)[k] !== undefined)), [['sessionDeleted']]);
  t.false(JSON.stringify(replay.updates).includes(CARD));

  for (const rev of [0, 1, 2, 3, 4]) t.is(code(await t.throwsAsync(g.get(id, rev))), status.NOT_FOUND, `GetSession at revision ${rev}`);
  for (const rev of [0, 2, 3]) t.is(code(await t.throwsAsync(g.fork(id, rev))), status.NOT_FOUND, `ForkSession at revision ${rev}`);
  t.is(code(await t.throwsAsync(g.format(id, DialogueFormat.DIALOGUE_FORMAT_CHAT, 2))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(g.getSecondary(id, 'doc'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(g.keys(id))), status.NOT_FOUND);
  t.deepEqual((await g.list()).sessions, []);
  t.is(await hotCopyOf(s.app.store.kv, id), undefined, 'the hot copy is gone');

  // Chat opens with a replay as WatchSession does.
  const responses: ChatResponse[] = [];
  const call = s.genie.chat(tenant.md);
  let ended = false;
  call.on('data', (r: ChatResponse) => responses.push(r));
  call.on('end', () => (ended = true));
  call.on('error', () => (ended = true));
  call.write({ requestId: 'o', open: { sessionId: id, afterRevision: 0, afterDeltas: [], snapshot: undefined }, sendEvent: undefined, appendDialogue: undefined });
  await eventually(() => ended, 'the chat stream to end');
  call.end();
  t.deepEqual(responses.filter((r) => r.update?.commit).map((r) => r.update?.revision), [5]);
  t.false(JSON.stringify(responses).includes(SSN));

  t.deepEqual(await tablesHolding(s.app.db, [CARD, SSN, NOTE]), [], 'no table keeps any of the content');
});

test('a watcher behind by more than a page still learns of the deletion', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const { sessionId: id } = await g.create('qa', { topic: 'x' });
  // The event log of a deleted session skips from 0 to the deletion's revision; paging by revision
  // numbers alone would stop at an empty page and wait forever.
  await s.app.db('genie_sessions').where({ id }).update({ revision: 900 });
  await g.del(id);
  const w = new Watcher(s.genie, tenant.md, id, 0);
  await w.until((x) => x.ended, 'the replay to end');
  t.deepEqual(w.revisions(), [901]);
});
