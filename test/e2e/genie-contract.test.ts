import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat, GetSessionResponse, ListDialogueResponse, ListSessionsResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { decodeError } from '../helpers/errors.js';
import { genie, modelType, reasonOf, sessionValues } from '../genie/fixtures.js';
import { bufCurl, curlReason } from '../helpers/buf-curl.js';

const MiB = 1024 * 1024;

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const fresh = async () => {
  const tenant = await createTenant(s);
  return { g: genie(s, tenant), tenant };
};

/** A type without a schema whose one event loops, so any number of utterances apply. */
const loose = modelType({
  name: 'loose',
  jsonSchema: undefined,
  stateMachine: { states: ['open'], initialState: 'open', transitions: [{ fromState: 'open', eventName: 'say', toState: 'open', actor: Actor.ACTOR_UNSPECIFIED }] },
});

async function rejected(t: ExecutionContext, call: Promise<unknown>, code: status, reason: string, field?: string) {
  const e = await t.throwsAsync<ServiceError>(call);
  t.is(e?.code, code, `${reason}: ${e?.details}`);
  t.is(reasonOf(e), reason, e?.details);
  if (field !== undefined) t.deepEqual(violatedFields(e!), [field]);
  return e!;
}

// ---------------------------------------------------------------------------------------------------------
// request_id (AIP-155): per caller, across RPCs

test('request_id: a repeat of every mutating RPC returns the first answer and writes nothing; another request or RPC with the id is REQUEST_ID_REUSED', async (t) => {
  const { g } = await fresh();
  const id = () => randomUUID();

  const regId = id();
  const reg1 = await g.register(modelType(), regId);
  const reg2 = await g.register(modelType(), regId);
  t.deepEqual(reg2, reg1, 'RegisterModelType replays (a second registration of version 1 would be ALREADY_EXISTS)');
  await rejected(t, g.register(modelType({ schemaVersion: 2 }), regId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');

  const createId = id();
  const c1 = await g.create('qa', { topic: 'tax' }, undefined, createId);
  const c2 = await g.create('qa', { topic: 'tax' }, undefined, createId);
  t.is(c2.sessionId, c1.sessionId, 'CreateSession replays: one session');
  t.is((await g.list('qa')).sessions.length, 1);
  await rejected(t, g.create('qa', { topic: 'vat' }, undefined, createId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');
  const sid = c1.sessionId;

  const sendId = id();
  const e1 = await g.send(sid, 'user_input', 'q', '', 0, sendId);
  const e2 = await g.send(sid, 'user_input', 'q', '', 0, sendId);
  t.deepEqual(e2, e1, 'SendEvent replays (a second user_input would be TRANSITION_NOT_ALLOWED)');
  t.is((await g.get(sid)).revision, 2);

  const appendId = id();
  const a1 = await g.append(sid, 'system', 'note', 0, appendId);
  t.deepEqual(await g.append(sid, 'system', 'note', 0, appendId), a1, 'AppendDialogue replays');
  t.is((await g.get(sid)).dialogueLength, 2);
  await rejected(t, g.append(sid, 'system', 'other note', 0, appendId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');

  const updateId = id();
  const u1 = await g.update(sid, [], { fieldsPatch: { turns: 1 } }, 0, updateId);
  // Applied again, the patch would be a no-op (changed: false): the replay says true, as the first answer did.
  const u2 = await g.update(sid, [], { fieldsPatch: { turns: 1 } }, 0, updateId);
  t.true(u2.changed);
  t.deepEqual(u2, u1);
  t.is((await g.get(sid)).revision, 4);

  const putId = id();
  const p1 = await g.put(sid, 'doc', Buffer.from('v'), 0, putId);
  t.deepEqual(await g.put(sid, 'doc', Buffer.from('v'), 0, putId), p1, 'PutSecondary replays (a second put would be ALREADY_EXISTS)');
  await rejected(t, g.put(sid, 'doc', Buffer.from('w'), 0, putId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');

  const forkId = id();
  const f1 = await g.fork(sid, 0, forkId);
  const f2 = await g.fork(sid, 0, forkId);
  t.is(f2.sessionId, f1.sessionId, 'ForkSession replays: one fork');
  t.is(f2.revision, 1);

  // The same id on another RPC (per caller, across RPCs).
  await rejected(t, g.send(sid, 'ai_response', 'a', '', 0, forkId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');
  t.is((await g.get(sid)).revision, 5, 'nothing was written');

  const delId = id();
  await g.del(f1.sessionId, 0, delId);
  await g.del(f1.sessionId, 0, delId);
  await rejected(t, g.get(f1.sessionId), status.NOT_FOUND, 'SESSION_NOT_FOUND');
  await rejected(t, g.del(sid, 0, delId), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED', 'request_id');

  // Deleting a session forgets the stored answers that repeat its content: a retry runs afresh.
  await g.del(sid);
  await rejected(t, g.update(sid, [], { fieldsPatch: { turns: 1 } }, 0, updateId), status.NOT_FOUND, 'SESSION_NOT_FOUND');

  await rejected(t, g.create('qa', { topic: 'x' }, undefined, 'not-a-uuid'), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'request_id');
});

test('request_id is per caller: another account may use the same id', async (t) => {
  const a = await fresh();
  const b = await fresh();
  await a.g.register(modelType());
  await b.g.register(modelType());
  const rid = randomUUID();
  const sa = await a.g.create('qa', { topic: 'a' }, undefined, rid);
  const sb = await b.g.create('qa', { topic: 'b' }, undefined, rid);
  t.not(sa.sessionId, sb.sessionId);
});

// ---------------------------------------------------------------------------------------------------------
// Size limits

test('limits: a 10 MiB utterance is refused up front (FIELD_TOO_LARGE naming the field) and nothing is written; 1 MiB is accepted', async (t) => {
  const { g } = await fresh();
  await g.register(loose);
  const { sessionId } = await g.create('loose', {});
  const ten = 'x'.repeat(10 * MiB);
  await rejected(t, g.send(sessionId, 'say', ten, 'user'), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'actor_input');
  await rejected(t, g.append(sessionId, 'user', 'é'.repeat(MiB / 2 + 1)), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'actor_text');
  await rejected(t, g.update(sessionId, ['actor_input'], { actorInput: ten }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'session.actor_input');
  t.is((await g.get(sessionId)).revision, 1, 'nothing was written');

  const max = 'y'.repeat(MiB);
  const sent = await g.send(sessionId, 'say', max, 'user');
  t.is(sent.element?.textSizeBytes, MiB);
  t.true(JSON.stringify(sent).length < 1000, 'the reply does not repeat the utterance');
});

test('limits: fields and fields_patch are at most 256 KiB as JSON with keys of at most 256 characters (FIELD_TOO_LARGE)', async (t) => {
  const { g } = await fresh();
  await g.register(loose);
  const big = { blob: 'z'.repeat(256 * 1024) };
  await rejected(t, g.create('loose', big), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'fields');
  await rejected(t, g.create('loose', { ['k'.repeat(257)]: 1 }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'fields');
  const { sessionId } = await g.create('loose', { half: 'h'.repeat(200 * 1024) });
  await rejected(t, g.update(sessionId, [], { fieldsPatch: big }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'fields_patch');
  await rejected(t, g.update(sessionId, [], { fieldsPatch: { nested: { ['n'.repeat(300)]: true } } }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'fields_patch');
  // Each patch fits, but the patched fields would not.
  const e = await rejected(t, g.update(sessionId, [], { fieldsPatch: { more: 'm'.repeat(100 * 1024) } }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'fields_patch');
  t.regex(e.details, /patched fields/);
  t.is((await g.get(sessionId)).revision, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Bounded reads

test('GetSession stays under 3 MiB (newest elements, omitted_dialogue_count); ListDialogue pages everything; FormatDialogue past 3 MiB is DIALOGUE_TOO_LARGE', async (t) => {
  const { g } = await fresh();
  await g.register(loose);
  const { sessionId } = await g.create('loose', {});
  const texts = Array.from({ length: 7 }, (_, i) => `${i}`.repeat(600_000));
  for (const text of texts) await g.append(sessionId, 'assistant', text);

  const r = await g.getFull(sessionId);
  const size = GetSessionResponse.encode(r).finish().length;
  t.true(size < 3 * MiB, `GetSession is ${size} bytes`);
  t.is(r.session!.dialogueLength, 7);
  t.true(r.omittedDialogueCount > 0);
  t.is(r.omittedDialogueCount + r.session!.dialogue.length, 7);
  t.deepEqual(
    r.session!.dialogue.map((d) => d.actorText[0]),
    texts.slice(r.omittedDialogueCount).map((x) => x[0]),
    'the newest elements',
  );

  const pages: ListDialogueResponse[] = [];
  let token = '';
  do {
    const page = await g.listDialogue(sessionId, 0, token);
    t.true(ListDialogueResponse.encode(page).finish().length < 3 * MiB);
    pages.push(page);
    token = page.nextPageToken;
  } while (token);
  t.true(pages.length > 1, 'a page stops before 3 MiB');
  t.deepEqual(pages.flatMap((p) => p.elements.map((e) => e.actorText[0])), texts.map((x) => x[0]));
  t.deepEqual(
    pages.map((p) => p.firstIndex),
    pages.reduce<number[]>((acc, p, i) => [...acc, i === 0 ? 1 : acc[i - 1]! + pages[i - 1]!.elements.length], []),
  );
  const small = await g.listDialogue(sessionId, 2);
  t.is(small.elements.length, 2);
  const next = await g.listDialogue(sessionId, 2, small.nextPageToken);
  t.is(next.firstIndex, 3);
  const atRevision = await g.listDialogue(sessionId, 10, '', 3);
  t.is(atRevision.elements.length, 2, 'revision 3 had two elements');
  t.is(atRevision.nextPageToken, '');
  await rejected(t, g.listDialogue(sessionId, 2, 'garbage'), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'page_token');
  await rejected(t, g.listDialogue(sessionId, 2, small.nextPageToken, 3), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'page_token');
  await rejected(t, g.listDialogue(sessionId, 2, '', 99), status.NOT_FOUND, 'REVISION_NOT_FOUND');
  await rejected(t, g.listDialogue(randomUUID()), status.NOT_FOUND, 'SESSION_NOT_FOUND');

  const e = await rejected(t, g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT), status.FAILED_PRECONDITION, 'DIALOGUE_TOO_LARGE');
  t.truthy(decodeError(e).preconditionFailure?.violations.length);
  t.is((await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, 3)).length, 2 * 600_000 + 2 * '[ASSISTANT]: \n'.length + 1, 'an earlier, smaller revision renders');
});

// ---------------------------------------------------------------------------------------------------------
// Error reasons

test('error reasons: NOT_FOUND names the resource type, ALREADY_EXISTS too, TRANSITION_NOT_ALLOWED carries a PreconditionFailure', async (t) => {
  const { g } = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const missing = randomUUID();
  for (const call of [g.get(missing), g.send(missing, 'user_input'), g.append(missing, 'user', 'x'), g.fork(missing), g.del(missing), g.keys(missing), g.update(missing, [], {})]) {
    const e = await rejected(t, call, status.NOT_FOUND, 'SESSION_NOT_FOUND');
    t.is(decodeError(e).resourceInfo?.resourceType, 'session');
  }
  await rejected(t, g.get(sessionId, 9), status.NOT_FOUND, 'REVISION_NOT_FOUND');
  await rejected(t, g.fork(sessionId, 9), status.NOT_FOUND, 'REVISION_NOT_FOUND');
  await rejected(t, g.getSecondary(sessionId, 'nope'), status.NOT_FOUND, 'SECONDARY_STORAGE_KEY_NOT_FOUND');
  await rejected(t, g.create('nope'), status.NOT_FOUND, 'MODEL_TYPE_NOT_FOUND');
  await g.put(sessionId, 'k', Buffer.from('1'));
  await rejected(t, g.put(sessionId, 'k', Buffer.from('2')), status.ALREADY_EXISTS, 'SECONDARY_STORAGE_KEY_ALREADY_EXISTS');

  const e = await rejected(t, g.send(sessionId, 'ai_response', 'early'), status.FAILED_PRECONDITION, 'TRANSITION_NOT_ALLOWED');
  const d = decodeError(e);
  t.deepEqual(Object.fromEntries(Object.entries(d.errorInfo!.metadata)), { state: 'awaiting_question', event: 'ai_response' });
  t.deepEqual(d.preconditionFailure?.violations.map((v) => [v.type, v.subject]), [['TRANSITION', 'state/awaiting_question/event/ai_response']]);
});

// ---------------------------------------------------------------------------------------------------------
// JSON clients (buf curl)

async function curl(tenant: Tenant, method: string, body: unknown): Promise<any> {
  return bufCurl(s.address, `parley.genie.v1.GenieService/${method}`, body, tenant.md.get('authorization')[0] as string);
}

test('JSON (buf curl): fields_patch applies camelCase and snake_case user keys; update_mask takes the session\'s own fields; enums by name; errors carry their reason', async (t) => {
  const { g, tenant } = await fresh();
  await g.register(loose);
  const { sessionId } = await g.create('loose', { dueDate: '2025-01-01', due_date: 'old', keep: 1 });

  const patched = await curl(tenant, 'UpdateSession', {
    session: { session_id: sessionId },
    fields_patch: { dueDate: '2026-02-02', due_date: 'new', keep: null, nestedKey: { innerCamel: 1, inner_snake: 2 } },
  });
  t.true(patched.changed, JSON.stringify(patched));
  t.deepEqual(patched.session.fields, { dueDate: '2026-02-02', due_date: 'new', nestedKey: { innerCamel: 1, inner_snake: 2 } });
  t.deepEqual((await g.get(sessionId)).fields, { dueDate: '2026-02-02', due_date: 'new', nestedKey: { innerCamel: 1, inner_snake: 2 } });
  t.is(patched.session.revision, '2');

  const again = await curl(tenant, 'UpdateSession', { session: { session_id: sessionId }, fields_patch: { dueDate: '2026-02-02' } });
  t.is(again.changed, undefined, 'changed: false (proto-JSON omits false)');
  t.is(again.session.revision, '2');

  // update_mask in proto-JSON is lowerCamel; it names the session's own fields.
  const own = await curl(tenant, 'UpdateSession', { session: { session_id: sessionId, actor: 'ACTOR_SYSTEM', actor_input: 'typed' }, update_mask: 'actor,actorInput' });
  t.is(own.session.actor, 'ACTOR_SYSTEM', JSON.stringify(own));
  t.is(own.session.actorInput, 'typed');
  const bad = await curl(tenant, 'UpdateSession', { session: { session_id: sessionId }, update_mask: 'fields.dueDate' });
  t.is(bad.code, 'invalid_argument');
  t.regex(bad.message, /update_mask: path "fields\.due_date" names user fields/);
  t.is(curlReason(bad), 'UPDATE_MASK_INVALID');

  const sent = await curl(tenant, 'SendEvent', { session_id: sessionId, event_name: 'say', actor: 'ACTOR_USER', actor_input: 'hi', expected_revision: '3' });
  t.like(sent, { sessionId, revision: '4', state: 'open', previousState: 'open' });
  t.like(sent.element, { index: 1, actor: 'ACTOR_USER', eventName: 'say', textSizeBytes: '2' });
  const stale = await curl(tenant, 'SendEvent', { session_id: sessionId, event_name: 'say', actor: 'ACTOR_USER', actor_input: 'hi', expected_revision: '3' });
  t.is(stale.code, 'aborted');
  t.is(curlReason(stale), 'REVISION_MISMATCH');
  const badActor = await curl(tenant, 'AppendDialogue', { session_id: sessionId, actor: 'ACTOR_UNSPECIFIED', actor_text: 'x' });
  t.regex(badActor.message, /^actor: must be one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);

  const listed = await curl(tenant, 'ListDialogue', { session_id: sessionId });
  t.deepEqual(listed.elements.map((e: { actorText: string }) => e.actorText), ['hi']);
  t.is(listed.firstIndex, 1);

  const typed = await curl(tenant, 'GetModelType', { name: 'loose' });
  t.is(typed.modelType.stateMachine.transitions[0].eventName, 'say');
  t.is(typed.modelType.cacheTtl, undefined);
  const reg = await curl(tenant, 'RegisterModelType', {
    model_type: { name: 'timed', schema_version: 1, state_machine: { states: ['s'], initial_state: 's' }, cache_ttl: '120s', session_ttl: '86400s' },
  });
  t.is(reg.modelType.cacheTtl, '120s', JSON.stringify(reg));
  t.is(reg.modelType.sessionTtl, '86400s');
});

test('UpdateSession through the generated client: update_mask paths and fields_patch together make one revision', async (t) => {
  const { g } = await fresh();
  await g.register(loose);
  const { sessionId } = await g.create('loose', { a: 1 });
  const r = await rpc(
    g.client,
    g.client.updateSession,
    { session: sessionValues(sessionId, { actor: Actor.ACTOR_USER, actorInput: 'x' }), updateMask: ['actor', 'actor_input'], expectedRevision: 1, fieldsPatch: { b: 2 }, requestId: '' },
    g.md,
  );
  t.true(r.changed);
  t.like(r.session, { revision: 2, actor: Actor.ACTOR_USER, actorInput: 'x' });
  t.deepEqual(r.session!.fields, { a: 1, b: 2 });
});

test('ListSessions pages stop before 3 MiB; a model type version is at most 1 MiB as JSON (FIELD_TOO_LARGE model_type)', async (t) => {
  const { g } = await fresh();
  await g.register(loose);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const { sessionId } = await g.create('loose', {});
    await g.update(sessionId, ['actor_input'], { actorInput: `${i}`.repeat(MiB - 10) });
    ids.push(sessionId);
  }
  const seen: string[] = [];
  let token = '';
  let pages = 0;
  do {
    const page = await g.list('loose', '', 100, token);
    t.true(ListSessionsResponse.encode(page).finish().length < 3 * MiB);
    seen.push(...page.sessions.map((x) => x.sessionId));
    token = page.nextPageToken;
    pages++;
  } while (token);
  t.deepEqual(seen, ids);
  t.true(pages > 1);

  const huge = modelType({
    name: 'huge',
    jsonSchema: undefined,
    upgrades: [],
    stateMachine: { states: Array.from({ length: 1000 }, (_, i) => `s${i}`.padEnd(100, 'x')), initialState: 's0'.padEnd(100, 'x'), transitions: [] },
  });
  await g.register(huge); // 100 KiB: fine
  const tooMany = modelType({ name: 'many', jsonSchema: undefined, stateMachine: { ...loose.stateMachine!, transitions: Array.from({ length: 1001 }, () => loose.stateMachine!.transitions[0]!) } });
  await rejected(t, g.register(tooMany), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT', 'model_type.state_machine.transitions');
  const defaults = Array.from({ length: 5 }, (_, i) => ({ fromVersion: 1, addField: { name: `f${i}`, defaultValue: 'd'.repeat(250 * 1024) }, renameField: undefined, dropField: undefined, mapStates: undefined }));
  await rejected(t, g.register(modelType({ name: 'huge', schemaVersion: 2, jsonSchema: undefined, stateMachine: huge.stateMachine, upgrades: defaults })), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE', 'model_type');
});
