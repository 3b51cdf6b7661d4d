import test from 'ava';
import { randomUUID } from 'node:crypto';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { DialogueFormat } from '../../src/gen/parley/genie/v1/genie.js';
import { ChatRole, type OpenPromptRequest, type ListPromptsRequest, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { EndUserServiceClient, type EraseEndUserResponse } from '../../src/gen/parley/enduser/v1/enduser.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import { genieUseCases, promptUseCases } from '../../src/app.js';
import { EndUserErasure } from '../../src/enduser/erasure.js';
import { GenieCache } from '../../src/genie/cache.js';
import { AppError, unavailable } from '../../src/errors.js';
import { createTenant, errorInfo, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { bufCurl, curlReason } from '../helpers/buf-curl.js';
import { eventually } from '../helpers/eventually.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { tablesHolding } from '../helpers/leaks.js';
import { Watcher } from '../helpers/watch.js';
import { code, genie, modelType, reasonOf } from '../genie/fixtures.js';

let s: TestServer;
let endUsers: EndUserServiceClient;
test.before(async () => {
  s = await startTestServer();
  endUsers = new EndUserServiceClient(s.address, credentials.createInsecure());
});
test.after.always(async () => {
  endUsers?.close();
  await s?.stop();
});

const erase = (tenant: Tenant, endUserId: string) => rpc(endUsers, endUsers.eraseEndUser, { endUserId }, tenant.md);

const openReq = (tenant: Tenant, over: Partial<OpenPromptRequest> = {}): OpenPromptRequest => ({ labels: {}, 
  sessionKey: '',
  llmClientId: tenant.llmClientId,
  llmClientUrl: '',
  ipAddress: '',
  userAgent: '',
  url: '',
  requestId: '',
  endUserId: '',
  ...over,
});
const open = (tenant: Tenant, over: Partial<OpenPromptRequest> = {}) => rpc(s.prompt, s.prompt.openPrompt, openReq(tenant, over), tenant.md);
const listPrompts = (tenant: Tenant, over: Partial<ListPromptsRequest> = {}) =>
  rpc(s.prompt, s.prompt.listPrompts, { filter: '', orderBy: '', showTotalSize: false, pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '', ...over }, tenant.md);
const createFor = (tenant: Tenant, endUserId: string, fields: Record<string, unknown> = { topic: 'tax' }, requestId = '') =>
  rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields, expireTime: undefined, requestId, endUserId, labels: {} }, tenant.md).then((r) => r.session!);
const listSessionsOf = (tenant: Tenant, endUserId: string, pageSize = 0, pageToken = '', modelTypeName = '') =>
  rpc(s.genie, s.genie.listSessions, { modelType: modelTypeName, state: '', pageSize, pageToken, endUserId, filter: '', orderBy: '', showTotalSize: false }, tenant.md);

/** Every page of a list, following next_page_token. */
async function allPages<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  do {
    const p = await page(token);
    out.push(...p.items);
    token = p.next;
  } while (token);
  return out;
}

async function tenantWithType(): Promise<Tenant> {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(modelType());
  return tenant;
}

test('end_user_id is set on creation, inherited by forks, returned on the resource and filters the lists page by page', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const mine = [await createFor(tenant, 'user-1'), await createFor(tenant, 'user-2'), await createFor(tenant, 'user-1'), await createFor(tenant, '')];
  t.deepEqual(
    mine.map((x) => x.endUserId),
    ['user-1', 'user-2', 'user-1', ''],
  );
  t.is((await g.get(mine[0]!.sessionId)).endUserId, 'user-1', 'GetSession returns it');
  const fork = await g.fork(mine[0]!.sessionId);
  t.is(fork.endUserId, 'user-1', 'a fork belongs to its source end user');
  const none = await g.fork(mine[3]!.sessionId);
  t.is(none.endUserId, '');

  // One session per page: the token binds the filter, and combining it with another filter works.
  const user1 = await allPages(async (token) => {
    const p = await listSessionsOf(tenant, 'user-1', 1, token);
    return { items: p.sessions, next: p.nextPageToken };
  });
  t.deepEqual(
    user1.map((x) => x.sessionId),
    [mine[0]!.sessionId, mine[2]!.sessionId, fork.sessionId],
  );
  t.true(user1.every((x) => x.endUserId === 'user-1'));
  t.deepEqual((await listSessionsOf(tenant, 'user-1', 0, '', 'qa')).sessions.length, 3);
  t.deepEqual((await listSessionsOf(tenant, 'user-1', 0, '', 'other')).sessions.length, 0);
  t.is((await listSessionsOf(tenant, '')).sessions.length, 6, 'no filter lists every session');
  const first = await listSessionsOf(tenant, 'user-1', 1);
  const other = await t.throwsAsync<ServiceError>(listSessionsOf(tenant, 'user-2', 1, first.nextPageToken));
  t.is(other.code, status.INVALID_ARGUMENT, 'a page token of another end user is refused');
  t.deepEqual(violatedFields(other), ['page_token']);
  const unfiltered = await t.throwsAsync<ServiceError>(listSessionsOf(tenant, '', 1, first.nextPageToken));
  t.deepEqual(violatedFields(unfiltered), ['page_token'], 'and so is one of the filtered list without the filter');

  // Another account's same end user id is another end user.
  const stranger = await tenantWithType();
  await createFor(stranger, 'user-1');
  t.is((await listSessionsOf(tenant, 'user-1')).sessions.length, 3);

  // Prompts.
  const p1 = (await open(tenant, { endUserId: 'user-1' })).prompt!;
  const p2 = (await open(tenant, { endUserId: 'user-2' })).prompt!;
  const p3 = (await open(tenant, { endUserId: 'user-1' })).prompt!;
  await open(tenant);
  t.is(p1.endUserId, 'user-1');
  t.is((await rpc(s.prompt, s.prompt.getPrompt, { id: p2.id, sessionKey: '' }, tenant.md)).prompt!.endUserId, 'user-2');
  const prompts1 = await allPages(async (token) => {
    const p = await listPrompts(tenant, { endUserId: 'user-1', pageSize: 1, pageToken: token });
    return { items: p.prompts, next: p.nextPageToken };
  });
  t.deepEqual(
    prompts1.map((x) => x.id),
    [p3.id, p1.id],
    'newest first, only user-1',
  );
  t.is((await listPrompts(tenant, { endUserId: 'user-1', llmClientId: tenant.llmClientId })).prompts.length, 2);
  t.is((await listPrompts(tenant)).prompts.length, 4);
  // Immutable: an update mask naming it is refused, and nothing changes.
  const maskSession = await t.throwsAsync<ServiceError>(g.update(mine[0]!.sessionId, ['end_user_id'], {}));
  t.is(errorInfo(maskSession)?.reason, 'UPDATE_MASK_INVALID');
  const maskPrompt = await t.throwsAsync<ServiceError>(
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p1, endUserId: 'user-2' }, updateMask: ['end_user_id'], requestId: '', expectedRevision: undefined }, tenant.md),
  );
  t.is(errorInfo(maskPrompt)?.reason, 'UPDATE_MASK_INVALID');
  t.is((await g.get(mine[0]!.sessionId)).endUserId, 'user-1');
  const firstPrompts = await listPrompts(tenant, { endUserId: 'user-1', pageSize: 1 });
  t.deepEqual(violatedFields(await t.throwsAsync<ServiceError>(listPrompts(tenant, { endUserId: 'user-2', pageSize: 1, pageToken: firstPrompts.nextPageToken }))), ['page_token']);
});

test('OpenPrompt of an existing session: its own end user or none opens it; another is FAILED_PRECONDITION END_USER_MISMATCH', async (t) => {
  const tenant = await createTenant(s);
  const p = (await open(tenant, { endUserId: 'alice' })).prompt!;
  const byKey = { sessionKey: p.sessionKey, llmClientId: '' };
  t.is((await open(tenant, { ...byKey, endUserId: 'alice' })).prompt!.id, p.id);
  t.is((await open(tenant, byKey)).prompt!.endUserId, 'alice', 'leaving it out opens the session as it is');
  for (const attempt of [{ ...byKey, endUserId: 'bob' }, { ...byKey, endUserId: 'bob', requestId: randomUUID() }]) {
    const e = await t.throwsAsync<ServiceError>(open(tenant, attempt));
    t.is(e.code, status.FAILED_PRECONDITION);
    t.is(errorInfo(e)?.reason, 'END_USER_MISMATCH');
    t.false(e.details.includes('alice') || e.details.includes('bob'), 'the message names no end user');
  }
  // A session without an end user cannot be claimed by one.
  const anonymous = (await open(tenant)).prompt!;
  const claim = await t.throwsAsync<ServiceError>(open(tenant, { sessionKey: anonymous.sessionKey, llmClientId: '', endUserId: 'alice' }));
  t.is(errorInfo(claim)?.reason, 'END_USER_MISMATCH');
  // A new session under a key the caller chose takes the end user given.
  const key = 'ab'.repeat(32);
  t.is((await open(tenant, { sessionKey: key, endUserId: 'carol' })).prompt!.endUserId, 'carol');
});

test('end_user_id is validated: INVALID_ARGUMENT naming the field, never echoing it', async (t) => {
  const tenant = await tenantWithType();
  const bad = ['x'.repeat(129), 'a\u0000b', 'tab\there', '\u0085next', ' lead', 'trail ', '\u00a0nbsp'];
  for (const id of bad) {
    const create = await t.throwsAsync<ServiceError>(createFor(tenant, id));
    t.is(create.code, status.INVALID_ARGUMENT, JSON.stringify(id));
    t.deepEqual(violatedFields(create), ['end_user_id']);
    t.deepEqual(violatedFields(await t.throwsAsync<ServiceError>(listSessionsOf(tenant, id))), ['end_user_id']);
    t.deepEqual(violatedFields(await t.throwsAsync<ServiceError>(open(tenant, { endUserId: id }))), ['end_user_id']);
    t.deepEqual(violatedFields(await t.throwsAsync<ServiceError>(listPrompts(tenant, { endUserId: id }))), ['end_user_id']);
    const e = await t.throwsAsync<ServiceError>(erase(tenant, id));
    t.deepEqual(violatedFields(e), ['end_user_id']);
    if (id.length > 100) t.false(e.details.includes(id), 'the message does not echo the id');
  }
  t.deepEqual(violatedFields(await t.throwsAsync<ServiceError>(erase(tenant, ''))), ['end_user_id'], 'EraseEndUser needs one');
  // 128 characters (not bytes), any printable script, inner spaces: fine.
  const ok = ['é'.repeat(128), 'user 42', 'ユーザー@example.com', 'a'];
  for (const id of ok) t.is((await createFor(tenant, id)).endUserId, id);
  // The admin token is not an API key: erasure is the account's own call.
  const admin = await t.throwsAsync<ServiceError>(rpc(endUsers, endUsers.eraseEndUser, { endUserId: 'a' }, s.adminMd));
  t.is(admin.code, status.UNAUTHENTICATED);
});

const CARD = '4000056655665556';
const SSN = '123-45-6789';
const NOTE = 'end-user-note-7d2e';
const PLUGIN_INPUT = 'end-user-input-91fa';
const ERASED = 'erased-user-x9';

test('EraseEndUser leaves no trace of the end user through any RPC, counts what it deleted, and touches nobody else', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const plugin = (await rpc(s.admin, s.admin.createPlugin, { accountId: tenant.accountId, name: 'lookup', description: '', requestId: '' }, s.adminMd)).plugin!;

  // The end user's genie sessions: one with dialogue, revisions and secondary storage (created with a request id), and its fork.
  const createId = randomUUID();
  const a = await createFor(tenant, ERASED, { topic: `card ${CARD}` }, createId);
  await g.send(a.sessionId, 'user_input', `my ssn is ${SSN}`);
  await g.send(a.sessionId, 'ai_response', 'noted', '', 0, randomUUID());
  await g.put(a.sessionId, 'doc', Buffer.from(NOTE));
  const fork = await g.fork(a.sessionId, 0, randomUUID());
  t.is((await g.get(a.sessionId)).revision, 4);
  t.truthy(await hotCopyOf(s.app.store.kv, a.sessionId), 'the read left a hot copy');
  const sessionWatch = new Watcher(s.genie, tenant.md, a.sessionId, 4);
  await sessionWatch.until((w) => w.caughtUp() !== undefined, 'the watch to catch up');

  // The end user's prompt with every log, opened with a request id.
  const openId = randomUUID();
  const p = (await open(tenant, { endUserId: ERASED, requestId: openId })).prompt!;
  const historyReq = {
    promptId: p.id,
    request: { card: CARD },
    response: {},
    messages: [{ role: ChatRole.CHAT_ROLE_USER, content: `ssn ${SSN}`, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }],
    requestId: randomUUID(),
  };
  await rpc(s.prompt, s.prompt.appendHistory, historyReq, tenant.md);
  await rpc(s.prompt, s.prompt.appendHistory, { ...historyReq, requestId: '' }, tenant.md);
  const toolReq = { promptId: p.id, pluginId: plugin.id, functionName: 'lookup', functionArgs: JSON.stringify({ ssn: SSN }), request: undefined, response: undefined, requestId: randomUUID() };
  await rpc(s.prompt, s.prompt.recordToolCall, toolReq, tenant.md);
  const usageReq = { promptId: p.id, pluginId: plugin.id, inputText: PLUGIN_INPUT, requestId: '' };
  await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq, tenant.md);
  await open(tenant, { sessionKey: p.sessionKey, llmClientId: '' });
  t.truthy((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value, 'the open cached the prompt');
  const promptWatch = s.prompt.watchPrompt({ promptId: p.id, afterRevision: 0 }, tenant.md);
  const promptUpdates: WatchPromptResponse[] = [];
  let promptWatchEnded = false;
  promptWatch.on('data', (r: WatchPromptResponse) => promptUpdates.push(r));
  promptWatch.on('end', () => (promptWatchEnded = true));
  promptWatch.on('error', () => (promptWatchEnded = true));
  await eventually(() => promptUpdates.some((u) => u.update?.caughtUp), 'the prompt watch to catch up');

  // Others in the same account (another end user, none) and the same end user id in another account.
  const otherUser = await createFor(tenant, 'someone-else', { topic: 'other' });
  await g.send(otherUser.sessionId, 'user_input', 'keep me');
  const anonymous = await createFor(tenant, '', { topic: 'anon' });
  const otherPrompt = (await open(tenant, { endUserId: 'someone-else' })).prompt!;
  await rpc(s.prompt, s.prompt.appendHistory, { ...historyReq, promptId: otherPrompt.id, request: { keep: 'me' }, messages: [], requestId: '' }, tenant.md);
  const anonymousPrompt = (await open(tenant)).prompt!;
  const stranger = await tenantWithType();
  const theirs = await createFor(stranger, ERASED, { topic: 'theirs' });
  const theirPrompt = (await open(stranger, { endUserId: ERASED })).prompt!;

  const report = await erase(tenant, ERASED);
  const expected: EraseEndUserResponse = {
    sessions: 2,
    // a: 2 utterances; the fork copied them.
    dialogueElements: 4,
    // a: revisions 1-4; the fork: 1.
    sessionRevisions: 5,
    secondaryValues: 2,
    prompts: 1,
    historyEntries: 2,
    toolCalls: 1,
    pluginUsages: 1,
    // CreateSession, the second SendEvent, ForkSession, OpenPrompt, the first AppendHistory, RecordToolCall.
    requestIds: 6,
  };
  t.deepEqual(report, expected);

  // Watchers end as on deletion.
  await sessionWatch.until((w) => w.ended, 'the session watch to end');
  t.truthy(sessionWatch.updates.find((u) => u.commit)?.commit?.events[0]?.sessionDeleted);
  await eventually(() => promptWatchEnded, 'the prompt watch to end');
  t.truthy(promptUpdates.some((u) => u.update?.promptDeleted));

  // Nothing of theirs reads back, by any RPC.
  for (const id of [a.sessionId, fork.sessionId]) {
    for (const read of [
      () => g.get(id),
      () => g.get(id, 1),
      () => g.listDialogue(id),
      () => g.format(id, DialogueFormat.DIALOGUE_FORMAT_CHAT),
      () => g.getSecondary(id, 'doc'),
      () => g.keys(id),
      () => g.fork(id),
    ]) {
      t.is(code(await t.throwsAsync(read())), status.NOT_FOUND);
    }
    const w = new Watcher(s.genie, tenant.md, id, 0);
    await w.until((x) => x.ended, 'a new watch to end');
    t.false(JSON.stringify(w.updates).includes(CARD));
  }
  t.is(await hotCopyOf(s.app.store.kv, a.sessionId), undefined, 'the hot copy is gone');
  t.deepEqual((await listSessionsOf(tenant, ERASED)).sessions, []);
  t.false((await listSessionsOf(tenant, '')).sessions.some((x) => x.endUserId === ERASED));
  // A request-id retry runs afresh (a new session), never replaying the erased one.
  const retried = await createFor(tenant, ERASED, { topic: `card ${CARD}` }, createId);
  t.not(retried.sessionId, a.sessionId);
  await g.del(retried.sessionId);

  for (const read of [
    () => rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, tenant.md),
    () => rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: p.sessionKey }, tenant.md),
    () => rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md),
    () => rpc(s.prompt, s.prompt.listToolCalls, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md),
    () => rpc(s.prompt, s.prompt.listPluginUsage, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md),
    () => rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, tenant.md),
    () => open(tenant, { sessionKey: p.sessionKey, llmClientId: '' }),
    () => rpc(s.prompt, s.prompt.appendHistory, historyReq, tenant.md),
    () => rpc(s.prompt, s.prompt.recordToolCall, toolReq, tenant.md),
  ]) {
    t.is(code(await t.throwsAsync(read())), status.NOT_FOUND);
  }
  const reopened = (await open(tenant, { endUserId: ERASED, requestId: openId })).prompt!;
  t.not(reopened.id, p.id, 'a retried OpenPrompt does not hand back the erased prompt');
  await rpc(s.prompt, s.prompt.deletePrompt, { id: reopened.id, requestId: '', expectedRevision: undefined }, tenant.md);
  const watchAfter = s.prompt.watchPrompt({ promptId: p.id, afterRevision: 0 }, tenant.md);
  let watchErr: ServiceError | undefined;
  watchAfter.on('data', () => {});
  watchAfter.on('error', (e: ServiceError) => (watchErr = e));
  await eventually(() => watchErr !== undefined, 'WatchPrompt to fail');
  t.is(watchErr?.code, status.NOT_FOUND);
  t.deepEqual((await listPrompts(tenant, { endUserId: ERASED })).prompts, []);
  t.is((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value, null, 'the cached prompt is gone');

  // Everybody else is untouched.
  t.is((await g.get(otherUser.sessionId)).dialogueLength, 1);
  t.is((await g.get(anonymous.sessionId)).revision, 1);
  t.is((await genie(s, stranger).get(theirs.sessionId)).endUserId, ERASED);
  t.is((await rpc(s.prompt, s.prompt.listHistory, { promptId: otherPrompt.id, pageSize: 0, pageToken: '' }, tenant.md)).history.length, 1);
  t.truthy((await rpc(s.prompt, s.prompt.getPrompt, { id: anonymousPrompt.id, sessionKey: '' }, tenant.md)).prompt);
  t.is((await rpc(s.prompt, s.prompt.getPrompt, { id: theirPrompt.id, sessionKey: '' }, stranger.md)).prompt!.endUserId, ERASED);

  // No table keeps their content, nor their id, except the other account's rows under it.
  t.deepEqual(await tablesHolding(s.app.db, [CARD, SSN, NOTE, PLUGIN_INPUT]), [], 'no table keeps the content');
  const keptIds = (await s.app.db('genie_sessions').where({ end_user_id: ERASED }).pluck('account_id')).concat(await s.app.db('prompts').where({ end_user_id: ERASED }).pluck('account_id'));
  t.deepEqual([...new Set(keptIds)], [stranger.accountId], 'only the other account still names that end user');

  // A repeat has nothing left to do.
  t.deepEqual(await erase(tenant, ERASED), { sessions: 0, dialogueElements: 0, sessionRevisions: 0, secondaryValues: 0, prompts: 0, historyEntries: 0, toolCalls: 0, pluginUsages: 0, requestIds: 0 });
});

test('EraseEndUser through buf curl (JSON), with a session and a prompt', async (t) => {
  const tenant = await tenantWithType();
  const key = tenant.md.get('authorization')[0] as string;
  const created = await bufCurl(s.address, 'parley.genie.v1.GenieService/CreateSession', { model_type: 'qa', fields: { topic: 'json' }, end_user_id: 'json-user' }, key);
  t.is(created.session.endUserId, 'json-user');
  const listed = await bufCurl(s.address, 'parley.genie.v1.GenieService/ListSessions', { end_user_id: 'json-user' }, key);
  t.deepEqual(
    listed.sessions.map((x: { sessionId: string }) => x.sessionId),
    [created.session.sessionId],
  );
  const opened = await bufCurl(s.address, 'parley.prompt.v1.PromptService/OpenPrompt', { llm_client_id: tenant.llmClientId, end_user_id: 'json-user' }, key);
  t.is(opened.prompt.endUserId, 'json-user');
  const erased = await bufCurl(s.address, 'parley.enduser.v1.EndUserService/EraseEndUser', { end_user_id: 'json-user' }, key);
  t.like(erased, { sessions: '1', prompts: '1', sessionRevisions: '1' });
  const bad = await bufCurl(s.address, 'parley.enduser.v1.EndUserService/EraseEndUser', { end_user_id: ' padded' }, key);
  t.is(bad.code, 'invalid_argument');
  t.is(curlReason(bad), 'INVALID_ARGUMENT');
  t.is(reasonOf(await t.throwsAsync(genie(s, tenant).get(created.session.sessionId))), 'SESSION_NOT_FOUND');
});

/** A hot-copy store that becomes unreachable for deletions after `ok` of them. */
class FailingCache extends GenieCache {
  ok = 3;
  override async tombstoneBeforeDelete(sessionId: string): Promise<void> {
    if (this.ok-- <= 0) throw unavailable('the session cache is unreachable; nothing was deleted, retry later', 'CACHE_UNAVAILABLE');
    return super.tombstoneBeforeDelete(sessionId);
  }
}

test('EraseEndUser goes in batches; a call cut short commits the batches it finished and a repeat finishes the rest', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const sessions = [];
  for (let i = 0; i < 5; i++) sessions.push(await createFor(tenant, 'bulk', { topic: `t${i}` }));
  await g.send(sessions[4]!.sessionId, 'user_input', 'hello');
  for (let i = 0; i < 3; i++) await open(tenant, { endUserId: 'bulk' });
  const caller = { apiKeyId: tenant.apiKeyId, userProfileId: tenant.userProfileId, accountId: tenant.accountId };
  const cache = new FailingCache(s.app.store.kv, s.app.store.bus);
  const cut = new EndUserErasure(genieUseCases(s.app.db, s.app.store, undefined, cache), promptUseCases(s.app.db, s.app.store, s.app.config), 2);

  const e = await t.throwsAsync(cut.erase(caller, 'bulk'), { instanceOf: AppError });
  t.is(e.reason, 'CACHE_UNAVAILABLE');
  // The first batch (2 sessions) committed; the second failed before its transaction, so nothing of it went.
  const left = (await listSessionsOf(tenant, 'bulk')).sessions.map((x) => x.sessionId);
  t.deepEqual(
    left,
    sessions.slice(2).map((x) => x.sessionId),
  );
  t.is((await g.get(sessions[2]!.sessionId)).revision, 1, 'a session whose copy was fenced but not deleted still reads');
  t.is((await listPrompts(tenant, { endUserId: 'bulk' })).prompts.length, 3, 'the prompts come after the sessions');

  const finished = await erase(tenant, 'bulk');
  t.like(finished, { sessions: 3, dialogueElements: 1, sessionRevisions: 4, prompts: 3 });
  t.deepEqual((await listSessionsOf(tenant, 'bulk')).sessions, []);
  t.deepEqual((await listPrompts(tenant, { endUserId: 'bulk' })).prompts, []);

  // With a reachable cache, batches smaller than what there is to erase take all of it in one call.
  for (let i = 0; i < 5; i++) await createFor(tenant, 'bulk');
  for (let i = 0; i < 3; i++) await open(tenant, { endUserId: 'bulk' });
  const batched = new EndUserErasure(genieUseCases(s.app.db, s.app.store), promptUseCases(s.app.db, s.app.store, s.app.config), 2);
  t.like(await batched.erase(caller, 'bulk'), { sessions: 5, sessionRevisions: 5, prompts: 3 });
  t.deepEqual((await listSessionsOf(tenant, 'bulk')).sessions, []);
});
