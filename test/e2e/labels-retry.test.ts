import test from 'ava';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { genie, modelType, sessionValues } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

// A map's entries come in whatever order the client's encoder writes them (Go's are random): a retry of the
// same labels in another order is the same request.
test('a retry with the same request_id and the same labels in another order replays the first answer (CreateSession, UpdateSession, OpenPrompt)', async (t) => {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(modelType());
  const create = (labels: Record<string, string>) =>
    rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields: { topic: 't' }, expireTime: undefined, requestId: '8b1f4c1e-7f7a-4c38-9d51-2a8f7e0c1d01', endUserId: '', labels }, tenant.md);
  const first = await create({ team: 'red', tier: 'gold' });
  const again = await create({ tier: 'gold', team: 'red' });
  t.is(again.session!.sessionId, first.session!.sessionId);
  t.deepEqual({ ...again.session!.labels }, { team: 'red', tier: 'gold' });

  const update = (labels: Record<string, string>) =>
    rpc(
      s.genie,
      s.genie.updateSession,
      { session: sessionValues(first.session!.sessionId, { labels }), updateMask: ['labels'], expectedRevision: undefined, fieldsPatch: undefined, requestId: '8b1f4c1e-7f7a-4c38-9d51-2a8f7e0c1d02' },
      tenant.md,
    );
  const updated = await update({ a: '1', b: '2' });
  const replayed = await update({ b: '2', a: '1' });
  t.is(replayed.session!.revision, updated.session!.revision);
  t.deepEqual({ ...replayed.session!.labels }, { a: '1', b: '2' });

  const open = (labels: Record<string, string>) =>
    rpc(
      s.prompt,
      s.prompt.openPrompt,
      { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '8b1f4c1e-7f7a-4c38-9d51-2a8f7e0c1d03', endUserId: '', labels },
      tenant.md,
    );
  const opened = await open({ x: '1', y: '2' });
  t.is((await open({ y: '2', x: '1' })).prompt!.id, opened.prompt!.id);
});
