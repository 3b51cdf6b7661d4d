import test from 'ava';
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { bearer, createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { expectError } from '../helpers/errors.js';
import { genie, modelType } from '../genie/fixtures.js';

// Every error carries a google.rpc.Status with an ErrorInfo of a stable reason; these are the reasons shared
// by every service (each service's own reasons are tested beside its RPCs).

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

test('NOT_FOUND names its resource: reason <TYPE>_NOT_FOUND and a ResourceInfo with the id, cut short', async (t) => {
  const g = genie(s, await createTenant(s));
  const id = randomUUID();
  const e = await expectError(t, g.get(id), status.NOT_FOUND, 'SESSION_NOT_FOUND');
  t.is(e.resourceInfo?.resourceType, 'session');
  t.is(e.resourceInfo?.resourceName, id);
  await expectError(t, g.getType('x'.repeat(5000)), status.NOT_FOUND, 'MODEL_TYPE_NOT_FOUND').then((d) => {
    t.true(d.resourceInfo!.resourceName.length <= 64);
    t.true(d.error.details.length < 200);
  });
});

test('FAILED_PRECONDITION TRANSITION_NOT_ALLOWED carries the state and event, as metadata and as a PreconditionFailure', async (t) => {
  const g = genie(s, await createTenant(s));
  await g.register(modelType());
  const session = await g.create('qa');
  const e = await expectError(t, g.send(session.sessionId, 'no_such_event', 'hi', 'user'), status.FAILED_PRECONDITION, 'TRANSITION_NOT_ALLOWED');
  t.is(e.errorInfo?.metadata.state, session.state);
  t.is(e.errorInfo?.metadata.event, 'no_such_event');
  t.deepEqual(
    e.preconditionFailure?.violations.map((v) => [v.type, v.subject]),
    [['TRANSITION', `state/${session.state}/event/no_such_event`]],
  );
});

test('ABORTED REVISION_MISMATCH tells the current revision', async (t) => {
  const g = genie(s, await createTenant(s));
  await g.register(modelType());
  const session = await g.create('qa');
  const e = await expectError(t, g.append(session.sessionId, 'user', 'hi', session.revision + 5), status.ABORTED, 'REVISION_MISMATCH');
  t.is(e.errorInfo?.metadata.current_revision, String(session.revision));
});

test('UNAUTHENTICATED says why: no credentials, an unknown key, a wrong admin token', async (t) => {
  await expectError(t, rpc(s.genie, s.genie.getSession, { sessionId: randomUUID(), revision: 0 }), status.UNAUTHENTICATED, 'CREDENTIALS_MISSING');
  await expectError(t, rpc(s.genie, s.genie.getSession, { sessionId: randomUUID(), revision: 0 }, bearer('pk_nope')), status.UNAUTHENTICATED, 'API_KEY_INVALID');
  await expectError(t, rpc(s.admin, s.admin.getAccount, { id: randomUUID(), accountNumber: '' }, bearer('wrong')), status.UNAUTHENTICATED, 'ADMIN_TOKEN_INVALID');
});

test('INVALID_ARGUMENT carries a BadRequest naming the field and the reason INVALID_ARGUMENT', async (t) => {
  const g = genie(s, await createTenant(s));
  const e = await expectError(t, g.get('not-a-uuid'), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  t.deepEqual(e.badRequest?.fieldViolations.map((v) => v.field), ['session_id']);
});

test('a request_id names one request of its caller: reusing it on another RPC is REQUEST_ID_REUSED and writes nothing', async (t) => {
  const tenant = await createTenant(s);
  const open = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
  const { prompt } = await rpc(s.prompt, s.prompt.openPrompt, open, tenant.md);
  const requestId = randomUUID();
  const history = { promptId: prompt!.id, request: { model: 'm' }, response: {}, messages: [], requestId };
  const first = await rpc(s.prompt, s.prompt.appendHistory, history, tenant.md);
  const again = await rpc(s.prompt, s.prompt.appendHistory, history, tenant.md);
  t.is(again.id, first.id, 'the same request on the same RPC replays the first result');
  const tool = { promptId: prompt!.id, pluginId: '', functionName: 'f', functionArgs: '{}', request: {}, response: {}, requestId };
  const e = await expectError(t, rpc(s.prompt, s.prompt.recordToolCall, tool, tenant.md), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED');
  t.deepEqual(e.badRequest?.fieldViolations.map((v) => v.field), ['request_id']);
  const calls = await rpc(s.prompt, s.prompt.listToolCalls, { promptId: prompt!.id, pageSize: 0, pageToken: '' }, tenant.md);
  t.is(calls.toolCalls.length, 0);
  // Another caller's ids are its own.
  const other = await createTenant(s);
  const { prompt: theirs } = await rpc(s.prompt, s.prompt.openPrompt, { ...open, llmClientId: other.llmClientId }, other.md);
  const theirCall = await rpc(s.prompt, s.prompt.recordToolCall, { ...tool, promptId: theirs!.id }, other.md);
  t.truthy(theirCall.id);
});

test('Health.Check of an unknown service is NOT_FOUND SERVICE_NOT_FOUND without echoing a long name', async (t) => {
  const e = await expectError(t, rpc(s.health, s.health.check, { service: 'x'.repeat(10_000) }), status.NOT_FOUND, 'SERVICE_NOT_FOUND');
  t.true(e.error.details.length < 200);
});

test('an unknown enum number is INVALID_ARGUMENT listing the names a JSON client sends', async (t) => {
  const tenant = await createTenant(s);
  const open = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
  const { prompt } = await rpc(s.prompt, s.prompt.openPrompt, open, tenant.md);
  const message = { role: 99, content: 'hi', name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined };
  const history = { promptId: prompt!.id, request: {}, response: {}, messages: [message], requestId: '' };
  const e = await expectError(t, rpc(s.prompt, s.prompt.appendHistory, history, tenant.md), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  const violation = e.badRequest?.fieldViolations[0];
  t.is(violation?.field, 'messages[0].role');
  t.regex(violation?.description ?? '', /CHAT_ROLE_USER/);
});

/** Runs `work` while every fence of the server's KV store fails, as when Redis cannot be reached. */
async function withFencesFailing<T>(work: () => Promise<T>): Promise<T> {
  const kv = s.app.store.kv;
  const fence = kv.fence.bind(kv);
  kv.fence = async () => {
    throw new Error('injected: the store is unreachable');
  };
  try {
    return await work();
  } finally {
    kv.fence = fence;
  }
}

test.serial('UNAVAILABLE CACHE_UNAVAILABLE: a session deletion that cannot fence the hot copy deletes nothing and may be retried', async (t) => {
  const g = genie(s, await createTenant(s));
  await g.register(modelType());
  const session = await g.create('qa');
  await withFencesFailing(() => expectError(t, g.del(session.sessionId), status.UNAVAILABLE, 'CACHE_UNAVAILABLE'));
  t.is((await g.get(session.sessionId)).revision, session.revision, 'nothing was deleted');
  await g.del(session.sessionId);
  await expectError(t, g.get(session.sessionId), status.NOT_FOUND, 'SESSION_NOT_FOUND');
});

test.serial('UNAVAILABLE CACHE_UNAVAILABLE: a prompt deletion that cannot fence its cached copy deletes nothing and may be retried', async (t) => {
  const tenant = await createTenant(s);
  const open = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
  const { prompt } = await rpc(s.prompt, s.prompt.openPrompt, open, tenant.md);
  const del = { id: prompt!.id, requestId: randomUUID(), expectedRevision: undefined };
  await withFencesFailing(() => expectError(t, rpc(s.prompt, s.prompt.deletePrompt, del, tenant.md), status.UNAVAILABLE, 'CACHE_UNAVAILABLE'));
  const still = await rpc(s.prompt, s.prompt.getPrompt, { id: prompt!.id, sessionKey: '' }, tenant.md);
  t.is(still.prompt?.revision, prompt!.revision, 'nothing was deleted');
  await rpc(s.prompt, s.prompt.deletePrompt, del, tenant.md);
  await expectError(t, rpc(s.prompt, s.prompt.getPrompt, { id: prompt!.id, sessionKey: '' }, tenant.md), status.NOT_FOUND, 'PROMPT_NOT_FOUND');
});

test('PERMISSION_DENIED ADMIN_DISABLED: a server without PARLEY_ADMIN_TOKEN refuses every AdminService call', async (t) => {
  const bare = await startTestServer({ adminToken: undefined });
  t.teardown(() => bare.stop());
  await expectError(t, rpc(bare.admin, bare.admin.listAccounts, { pageSize: 0, pageToken: '' }, bearer('anything')), status.PERMISSION_DENIED, 'ADMIN_DISABLED');
});
