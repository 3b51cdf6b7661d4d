import test from 'ava';
import { randomUUID } from 'node:crypto';
import { status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { ChatRole, Prompt, type ChatMessage } from '../../src/gen/parley/prompt/v1/prompt.js';
import { decodePromptEvent, promptChannel, type PromptEvent } from '../../src/prompt/events.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import { bearer, createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';
import { expectError, type DecodedError } from '../helpers/errors.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const code = (e: unknown) => (e as ServiceError).code;
const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };

async function open(t: Tenant, extra: Partial<typeof openReq> = {}): Promise<Prompt> {
  const r = await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientId: t.llmClientId, ...extra }, t.md);
  return r.prompt!;
}

async function plugin(t: Tenant, name: string): Promise<string> {
  const r = await rpc(s.admin, s.admin.createPlugin, { accountId: t.accountId, name, description: `${name} plugin`, requestId: '' }, s.adminMd);
  return r.plugin!.id;
}

const msg = (m: Partial<ChatMessage>): ChatMessage => ({ role: ChatRole.CHAT_ROLE_USER, content: '', name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined, ...m });
const historyReq = (promptId: string, extra: Record<string, unknown> = {}) => ({
  promptId,
  request: { model: 'gpt-4o' },
  response: { id: 'resp-1' },
  messages: [msg({ content: 'hello' })],
  requestId: '',
  ...extra,
});
const toolReq = (promptId: string, extra: Record<string, unknown> = {}) => ({
  promptId,
  pluginId: '',
  functionName: 'get_weather',
  functionArgs: '{"city":"Oslo"}',
  request: undefined,
  response: undefined,
  requestId: '',
  ...extra,
});
const usageReq = (promptId: string, pluginId: string, extra: Record<string, unknown> = {}) => ({ promptId, pluginId, inputText: 'weather?', requestId: '', ...extra });
const listReq = (promptId: string, pageSize = 0, pageToken = '') => ({ promptId, pageSize, pageToken });
const listPromptsReq = { pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '', filter: '', orderBy: '', showTotalSize: false };

async function invalid(t: any, p: Promise<unknown>, fields: string[]) {
  const e = await t.throwsAsync(p);
  t.is(code(e), status.INVALID_ARGUMENT, (e as Error)?.message);
  t.deepEqual(violatedFields(e as ServiceError), fields);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const fieldsOf = (d: DecodedError) => d.badRequest?.fieldViolations.map((v) => v.field);

async function tag(t: Tenant, p: Prompt, tags: string[]) {
  await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, tags }, updateMask: ['tags'], requestId: '' }, t.md);
}

test('ListPrompts pages newest first and filters by LLM client, tag and time range', async (t) => {
  const a = await createTenant(s, 'alpha');
  const { llmClient: other } = await rpc(s.admin, s.admin.createLlmClient, { accountId: a.accountId, name: 'beta', description: '', requestId: '' }, s.adminMd);
  const made: Prompt[] = [];
  for (let i = 0; i < 5; i++) made.push(await open(a, i === 4 ? { llmClientId: other!.id } : {}));
  await tag(a, made[1]!, ['vip', 'eu']);
  await tag(a, made[3]!, ['vip']);
  const b = await createTenant(s);
  await open(b);

  const seen: string[] = [];
  let token = '';
  let pages = 0;
  do {
    const r = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageSize: 2, pageToken: token }, a.md);
    t.true(r.prompts.length <= 2);
    seen.push(...r.prompts.map((p) => p.id));
    token = r.nextPageToken;
    pages++;
  } while (token);
  t.is(pages, 3);
  t.deepEqual(seen, made.map((p) => p.id).reverse(), 'newest first, every prompt once, no other account');

  const byClient = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, llmClientId: other!.id }, a.md);
  t.deepEqual(byClient.prompts.map((p) => p.id), [made[4]!.id]);
  const byTag = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, tag: 'vip' }, a.md);
  t.deepEqual(byTag.prompts.map((p) => p.id), [made[3]!.id, made[1]!.id]);
  const from = made[2]!.createTime!;
  const to = made[4]!.createTime!;
  const range = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, createdAfter: from, createdBefore: to }, a.md);
  t.deepEqual(range.prompts.map((p) => p.id), [made[3]!.id, made[2]!.id]);
  const foreignClient = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, llmClientId: b.llmClientId }, a.md);
  t.deepEqual(foreignClient.prompts, []);
});

test('ListPrompts validates paging and filters', async (t) => {
  const a = await createTenant(s);
  await open(a);
  await open(a);
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageSize: -1 }, a.md), ['page_size']);
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageToken: 'garbage!' }, a.md), ['page_token']);
  const first = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageSize: 1 }, a.md);
  t.truthy(first.nextPageToken);
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageSize: 1, tag: 'x', pageToken: first.nextPageToken }, a.md), ['page_token']);
  await invalid(t, rpc(s.prompt, s.prompt.listHistory, listReq(first.prompts[0]!.id, 1, first.nextPageToken), a.md), ['page_token']);
  const now = new Date();
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, createdAfter: now, createdBefore: now }, a.md), ['created_before']);
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, tag: 'bad\ttag' }, a.md), ['tag']);
  await invalid(t, rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, llmClientId: 'nope' }, a.md), ['llm_client_id']);
  const capped = await rpc(s.prompt, s.prompt.listPrompts, { ...listPromptsReq, pageSize: 5000 }, a.md);
  t.is(capped.prompts.length, 2);
  await expectError(t, rpc(s.prompt, s.prompt.listPrompts, listPromptsReq), status.UNAUTHENTICATED, 'CREDENTIALS_MISSING');
});

test('UpdatePrompt changes only the masked fields', async (t) => {
  const a = await createTenant(s);
  const p = await open(a, { ipAddress: '192.0.2.1' });
  const r = await rpc(
    s.prompt,
    s.prompt.updatePrompt,
    {
      prompt: { ...p, name: 'hrSupport', description: '  Answers HR questions  ', version: '2.1.0-beta.1', tags: ['hr', ' hr ', 'eu'], annotations: { 'example.com/team': 'people' }, ipAddress: '10.0.0.1' },
      updateMask: ['name', 'description', 'tags'],
      requestId: '',
    },
    a.md,
  );
  const u = r.prompt!;
  t.is(u.name, 'hrSupport');
  t.is(u.description, 'Answers HR questions');
  t.deepEqual(u.tags, ['hr', 'eu']);
  t.is(u.version, '1.0.0', 'not in the mask');
  t.deepEqual(u.annotations, {}, 'not in the mask');
  t.is(u.ipAddress, '192.0.2.1', 'request metadata is not updatable');
  t.true(u.updateTime!.getTime() >= p.updateTime!.getTime());
  t.true(r.changed);
  t.is(u.revision, p.revision + 1, 'an update bumps the revision');

  const all = await rpc(
    s.prompt,
    s.prompt.updatePrompt,
    { prompt: { ...u, version: '', annotations: { owner: 'hr' }, description: '' }, updateMask: ['*'], requestId: '' },
    a.md,
  );
  t.is(all.prompt!.version, '1.0.0', 'an empty version takes the default');
  t.deepEqual(all.prompt!.annotations, { owner: 'hr' });
  t.is(all.prompt!.description, '');
  const got = await rpc(s.prompt, s.prompt.getPrompt, { id: p.id }, a.md);
  t.deepEqual(got.prompt, all.prompt);

  // Without a mask, the fields the request sets (AIP-134): here only the name.
  const implied = await rpc(s.prompt, s.prompt.updatePrompt, { prompt: Prompt.fromPartial({ id: p.id, name: 'implied' }), updateMask: [], requestId: '' }, a.md);
  t.is(implied.prompt!.name, 'implied');
  t.deepEqual(implied.prompt!.annotations, { owner: 'hr' }, 'an empty field is not in the implied mask');
});

test('UpdatePrompt validates the mask and each masked field', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const upd = (prompt: Partial<Prompt>, updateMask: string[] | undefined) =>
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, ...prompt }, updateMask, requestId: '' }, a.md);
  for (const path of ['session_key', 'revision', 'create_time', 'nope', 'sessionKey']) {
    const e = await expectError(t, upd({}, [path]), status.INVALID_ARGUMENT, 'UPDATE_MASK_INVALID');
    t.deepEqual(fieldsOf(e), ['update_mask']);
    t.true(e.error.details.includes(JSON.stringify(path)), `the message names ${path}: ${e.error.details}`);
    t.true(e.badRequest!.fieldViolations[0]!.description.includes(JSON.stringify(path)));
  }
  await invalid(t, upd({ name: 'hr_support' }, ['name']), ['prompt.name']);
  await invalid(t, upd({ name: 'x'.repeat(51) }, ['name']), ['prompt.name']);
  await invalid(t, upd({ version: '1.0' }, ['version']), ['prompt.version']);
  await invalid(t, upd({ tags: ['ok', 'bad\ntag'] }, ['tags']), ['prompt.tags[1]']);
  await invalid(t, upd({ annotations: { 'has space': 'v' } }, ['annotations']), ['prompt.annotations']);
  await invalid(t, upd({ annotations: { k: 'v'.repeat(2049) } }, ['annotations']), ['prompt.annotations']);
  await expectError(t, upd({ annotations: { k: 'v'.repeat(2049) } }, ['annotations']), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  await expectError(t, upd({ description: 'd'.repeat(4097) }, ['description']), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  await expectError(t, upd({ tags: Array.from({ length: 65 }, (_, i) => `t${i}`) }, ['tags']), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
  await expectError(t, upd({ annotations: many }, ['annotations']), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  await invalid(t, upd({ id: 'nope' }, ['name']), ['prompt.id']);
  await invalid(t, rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p }, updateMask: ['name'], requestId: 'not-a-uuid' }, a.md), ['request_id']);
  // Fields outside the mask are ignored, valid or not.
  const ok = await upd({ name: 'Not Camel', description: 'kept' }, ['description']);
  t.is(ok.prompt!.name, p.name);
  await expectError(t, upd({ id: randomUUID() }, ['description']), status.NOT_FOUND, 'PROMPT_NOT_FOUND');
});

test('UpdatePrompt: a no-op commits nothing and says changed: false; expected_revision makes it conditional', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const upd = (prompt: Partial<Prompt>, updateMask: string[], expectedRevision?: number) =>
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, ...prompt }, updateMask, requestId: '', expectedRevision }, a.md);
  const events: string[] = [];
  const sub = await s.app.store.bus.subscribe(promptChannel(p.id), (m) => events.push(m));
  try {
    const same = await upd({}, ['name', 'description', 'tags']);
    t.false(same.changed);
    t.is(same.prompt!.revision, p.revision, 'no revision bump');
    t.deepEqual(same.prompt!.updateTime, p.updateTime, 'no update_time change');
    const changed = await upd({ description: 'new' }, ['description'], p.revision);
    t.true(changed.changed);
    t.is(changed.prompt!.revision, p.revision + 1);
    const again = await upd({ description: 'new' }, ['*']);
    t.false(again.changed, 'the same value again is a no-op, * included');
    await eventually(() => events.length === 1, 'the one change published');
    t.is(events.length, 1, 'a no-op publishes nothing');
  } finally {
    await sub.close();
  }
  const stale = await expectError(t, upd({ description: 'late' }, ['description'], p.revision), status.ABORTED, 'REVISION_MISMATCH');
  t.is(stale.errorInfo?.metadata.current_revision, String(p.revision + 1));
  t.is((await rpc(s.prompt, s.prompt.getPrompt, { id: p.id }, a.md)).prompt!.description, 'new', 'a mismatch writes nothing');

  // DeletePrompt takes expected_revision too.
  const del = (expectedRevision?: number) => rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '', expectedRevision }, a.md);
  const e = await expectError(t, del(p.revision), status.ABORTED, 'REVISION_MISMATCH');
  t.is(e.errorInfo?.metadata.current_revision, String(p.revision + 1));
  t.is((await del(p.revision + 1)).revision, p.revision + 1);
  await expectError(t, del(), status.NOT_FOUND, 'PROMPT_NOT_FOUND');
});

test('the session cache is filled on open, evicted on update and delete, and a flush changes no answer', async (t) => {
  const a = await createTenant(s);
  const kv = s.app.store.kv;
  const p = await open(a);
  t.truthy((await kv.readCached(promptCacheKey(p.sessionKey))).value, 'OpenPrompt caches the session');
  await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, name: 'renamed' }, updateMask: ['name'], requestId: '' }, a.md);
  t.is((await kv.readCached(promptCacheKey(p.sessionKey))).value, null, 'UpdatePrompt evicts it');
  const reopened = await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: p.sessionKey }, a.md);
  t.false(reopened.created);
  t.is(reopened.prompt!.name, 'renamed');
  const byKey = await rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: p.sessionKey.toUpperCase() }, a.md);
  t.is(byKey.prompt!.name, 'renamed');

  await kv.clear();
  const afterFlush = await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: p.sessionKey }, a.md);
  t.deepEqual(afterFlush.prompt, reopened.prompt);

  t.truthy((await kv.readCached(promptCacheKey(p.sessionKey))).value);
  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, a.md);
  t.is((await kv.readCached(promptCacheKey(p.sessionKey))).value, null, 'DeletePrompt evicts it');
  const gone = await t.throwsAsync(rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: p.sessionKey }, a.md));
  t.is(code(gone), status.NOT_FOUND);
  const gone2 = await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: p.sessionKey }, a.md));
  t.is(code(gone2), status.NOT_FOUND);
});

test('DeletePrompt deletes the prompt with its logs', async (t) => {
  const a = await createTenant(s);
  const pid = await plugin(a, 'weather');
  const p = await open(a);
  await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id), a.md);
  await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { pluginId: pid }), a.md);
  await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, pid), a.md);
  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, a.md);
  for (const table of ['prompt_history', 'prompt_tool_calls', 'prompt_plugin_usage']) {
    const [row] = await s.app.db(table).where({ prompt_id: p.id }).count({ n: '*' });
    t.is(Number(row!.n), 0, table);
  }
  const list = await t.throwsAsync(rpc(s.prompt, s.prompt.listHistory, listReq(p.id), a.md));
  t.is(code(list), status.NOT_FOUND);
  const again = await t.throwsAsync(rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, a.md));
  t.is(code(again), status.NOT_FOUND);
  await invalid(t, rpc(s.prompt, s.prompt.deletePrompt, { id: '', requestId: '' }, a.md), ['id']);
});

test('AppendHistory logs typed chat messages and ListHistory pages them in creation order', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const messages = [
    msg({ role: ChatRole.CHAT_ROLE_SYSTEM, content: 'You are helpful.' }),
    msg({ role: ChatRole.CHAT_ROLE_USER, content: 'Weather in Oslo?', name: 'ada' }),
    msg({
      role: ChatRole.CHAT_ROLE_ASSISTANT,
      toolCalls: [{ id: 'call_1', callType: '', functionName: 'get_weather', functionArguments: '{"city":"Oslo"}' }],
    }),
    msg({ role: ChatRole.CHAT_ROLE_TOOL, content: '{"temp":3}', toolCallId: 'call_1' }),
  ];
  const first = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { messages, request: { model: 'gpt-4o', temperature: 0.2 } }), a.md);
  t.regex(first.id, UUID_RE, 'log entry ids are UUIDs');
  t.is(first.revision, p.revision + 1);
  t.is(first.messageCount, 4);
  t.true(first.sizeBytes > 0);
  t.truthy(first.createTime);
  t.deepEqual(Object.keys(first).sort(), ['createTime', 'id', 'messageCount', 'revision', 'sizeBytes'], 'the write answers metadata, not the content');
  const h = (await rpc(s.prompt, s.prompt.listHistory, listReq(p.id), a.md)).history[0]!;
  t.is(h.id, first.id);
  t.is(h.revision, first.revision);
  t.is(h.promptId, p.id);
  t.deepEqual(h.request, { model: 'gpt-4o', temperature: 0.2 });
  t.deepEqual(h.response, { id: 'resp-1' });
  t.deepEqual(h.messages, messages.map((m) => ({ ...m, toolCalls: m.toolCalls.map((c) => ({ ...c, callType: 'function' })) })));
  const ids = [h.id];
  for (let i = 0; i < 4; i++) ids.push((await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id), a.md)).id);

  const seen: string[] = [];
  let token = '';
  do {
    const r = await rpc(s.prompt, s.prompt.listHistory, listReq(p.id, 2, token), a.md);
    seen.push(...r.history.map((x) => x.id));
    token = r.nextPageToken;
  } while (token);
  t.deepEqual(seen, ids);
  const row = await s.app.db('prompt_history').where({ uid: h.id }).first();
  t.deepEqual(row.messages[2].tool_calls, [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }], 'stored in the OpenAI wire shape');
});

test('AppendHistory validates every message', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const append = (messages: ChatMessage[], extra: Record<string, unknown> = {}) => rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { messages, ...extra }), a.md);
  await invalid(t, append([msg({ content: 'hi' }), msg({ role: ChatRole.CHAT_ROLE_UNSPECIFIED, content: 'x' })]), ['messages[1].role']);
  await invalid(t, append([msg({ role: 42 as ChatRole, content: 'x' })]), ['messages[0].role']);
  const role = await t.throwsAsync(append([msg({ role: ChatRole.CHAT_ROLE_UNSPECIFIED, content: 'x' })]));
  t.regex((role as ServiceError).details, /must be one of CHAT_ROLE_SYSTEM, CHAT_ROLE_USER, CHAT_ROLE_ASSISTANT, CHAT_ROLE_TOOL, CHAT_ROLE_DEVELOPER/, 'names the values a JSON client sends');
  await invalid(t, append([msg({ role: ChatRole.CHAT_ROLE_TOOL, content: '{}' })]), ['messages[0].tool_call_id']);
  await invalid(t, append([msg({ content: 'x', toolCallId: 'call_1' })]), ['messages[0].tool_call_id']);
  await invalid(t, append([msg({ content: 'x', toolCalls: [{ id: 'c', callType: 'function', functionName: 'f', functionArguments: '{}' }] })]), ['messages[0].tool_calls']);
  await invalid(
    t,
    append([msg({ role: ChatRole.CHAT_ROLE_ASSISTANT, toolCalls: [{ id: '', callType: 'web', functionName: '', functionArguments: '' }] })]),
    ['messages[0].tool_calls[0].id', 'messages[0].tool_calls[0].call_type', 'messages[0].tool_calls[0].function_name'],
  );
  await invalid(t, append([msg({ content: '' })]), ['messages[0].content']);
  await invalid(t, append([msg({ role: ChatRole.CHAT_ROLE_ASSISTANT })]), ['messages[0].content']);
  await invalid(t, append([msg({ content: 'x', name: 'has space' })]), ['messages[0].name']);
  await invalid(t, append([], { request: undefined, response: undefined }), ['messages']);
  await invalid(t, rpc(s.prompt, s.prompt.appendHistory, historyReq('nope'), a.md), ['prompt_id']);
  const missing = await t.throwsAsync(rpc(s.prompt, s.prompt.appendHistory, historyReq(randomUUID()), a.md));
  t.is(code(missing), status.NOT_FOUND);
  const [row] = await s.app.db('prompt_history').where({ prompt_id: p.id }).count({ n: '*' });
  t.is(Number(row!.n), 0, 'nothing invalid was written');
});

test('RecordToolCall and RecordPluginUsage log against the account’s plugins and list in creation order (reference bug fixed: tool call arguments are not cut at 255 characters)', async (t) => {
  const a = await createTenant(s);
  const weather = await plugin(a, 'weather');
  const p = await open(a);
  const longArgs = JSON.stringify({ text: 'x'.repeat(5000) });
  const w1 = await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { pluginId: weather, request: { q: 1 }, response: { a: 2 } }), a.md);
  t.regex(w1.id, UUID_RE);
  t.is(w1.revision, p.revision + 1);
  t.true(w1.sizeBytes > 0);
  const w2 = await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { functionArgs: longArgs }), a.md);
  const calls = await rpc(s.prompt, s.prompt.listToolCalls, listReq(p.id), a.md);
  const [c1, c2] = calls.toolCalls;
  t.deepEqual(calls.toolCalls.map((c) => c.id), [w1.id, w2.id]);
  t.is(calls.nextPageToken, '');
  t.is(c1!.pluginId, weather);
  t.is(c1!.functionName, 'get_weather');
  t.deepEqual(c1!.request, { q: 1 });
  t.is(c2!.pluginId, '', 'a tool call need not belong to a plugin');
  t.is(c2!.functionArgs, longArgs, 'arguments are not cut at 255 characters (reference bug: varchar(255))');

  const u1 = await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, weather), a.md);
  const u2 = await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, weather, { inputText: 'again' }), a.md);
  t.regex(u1.id, UUID_RE);
  const page1 = await rpc(s.prompt, s.prompt.listPluginUsage, listReq(p.id, 1), a.md);
  const page2 = await rpc(s.prompt, s.prompt.listPluginUsage, listReq(p.id, 1, page1.nextPageToken), a.md);
  t.deepEqual([...page1.pluginUsage, ...page2.pluginUsage].map((u) => u.id), [u1.id, u2.id]);
  t.is(page1.pluginUsage[0]!.inputText, 'weather?');
  t.is(page2.nextPageToken, '');
});

test('tool call and plugin usage validation; another account’s plugin is NOT_FOUND', async (t) => {
  const a = await createTenant(s);
  const b = await createTenant(s);
  const theirs = await plugin(b, 'search');
  const p = await open(a);
  await invalid(t, rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { functionName: 'f'.repeat(256) }), a.md), ['function_name']);
  await invalid(t, rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { pluginId: 'nope' }), a.md), ['plugin_id']);
  await invalid(t, rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, ''), a.md), ['plugin_id']);
  await invalid(t, rpc(s.prompt, s.prompt.recordPluginUsage, usageReq('', theirs), a.md), ['prompt_id']);
  await expectError(t, rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { pluginId: theirs }), a.md), status.NOT_FOUND, 'PLUGIN_NOT_FOUND');
  await expectError(t, rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, theirs), a.md), status.NOT_FOUND, 'PLUGIN_NOT_FOUND');
  await expectError(t, rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, randomUUID()), a.md), status.NOT_FOUND, 'PLUGIN_NOT_FOUND');
  const big = await expectError(t, rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, theirs, { inputText: 'é'.repeat(32 * 1024 + 1) }), a.md), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  t.deepEqual(fieldsOf(big), ['input_text']);
  const args = await expectError(t, rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { functionArgs: 'x'.repeat(1024 * 1024 + 1) }), a.md), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  t.deepEqual(fieldsOf(args), ['function_args']);
  const rows = await s.app.db('prompts').where({ id: p.id }).first('revision');
  t.is(Number(rows.revision), 1, 'a refused log write leaves no trace, not even a revision bump');
});

test('GetPromptHistory returns what PromptHelper.history does, in one response', async (t) => {
  const a = await createTenant(s);
  const weather = await plugin(a, 'weather');
  const p = await open(a);
  const empty = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, a.md);
  t.deepEqual(empty.promptHistory, []);
  t.is(empty.latestHistory, undefined);
  t.is(empty.revision, 1);
  t.false(empty.truncated);

  await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { messages: [msg({ content: 'first' })] }), a.md);
  const c1 = await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { pluginId: weather }), a.md);
  const c2 = await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id), a.md);
  const u1 = await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, weather), a.md);
  const latest =
    await rpc(
      s.prompt,
      s.prompt.appendHistory,
      historyReq(p.id, { messages: [msg({ content: 'second' }), msg({ role: ChatRole.CHAT_ROLE_ASSISTANT, content: 'answer' })] }),
      a.md,
    );

  const h = await rpc(s.prompt, s.prompt.getPromptHistory, { sessionKey: p.sessionKey }, a.md);
  t.is(h.prompt!.id, p.id);
  t.deepEqual(h.promptHistory.map((m) => m.content), ['second', 'answer'], 'only the latest entry’s messages');
  t.is(h.latestHistory!.id, latest.id);
  t.deepEqual(h.toolCalls.map((c) => c.id), [c2.id, c1.id], 'newest first');
  t.deepEqual(h.pluginUsage.map((u) => u.id), [u1.id]);
  t.is(h.revision, 6, 'one revision per log write, after 1 on creation');
  t.is(h.prompt!.revision, 6);

  // An entry without messages falls back to the messages of the request it logged.
  await rpc(
    s.prompt,
    s.prompt.appendHistory,
    historyReq(p.id, { messages: [], request: { messages: [{ role: 'user', content: [{ type: 'text', text: 'from request' }] }] } }),
    a.md,
  );
  const fallback = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id }, a.md);
  // Kept as the list of parts it was, not flattened to a string.
  t.deepEqual(fallback.promptHistory, [msg({ contentParts: [{ text: 'from request', imageUrl: undefined, inputAudio: undefined, file: undefined, refusal: undefined }] })]);
  await invalid(t, rpc(s.prompt, s.prompt.getPromptHistory, {}, a.md), ['id']);
  await expectError(t, rpc(s.prompt, s.prompt.getPromptHistory, { id: randomUUID() }, a.md), status.NOT_FOUND, 'PROMPT_NOT_FOUND');
});

test('log writes bump the revision, stamp it on the row and publish it after commit', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const events: PromptEvent[] = [];
  const sub = await s.app.store.bus.subscribe(promptChannel(p.id), (m) => {
    const e = decodePromptEvent(m);
    if (e) events.push(e);
  });
  try {
    const h = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id), a.md);
    const c = await rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id), a.md);
    await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, description: 'x' }, updateMask: ['description'], requestId: '' }, a.md);
    await eventually(() => events.length >= 3, 'three events on the bus');
    t.deepEqual(
      events.map((e) => [e.type, e.v, e.revision, 'row' in e ? e.row.id : undefined]),
      [
        ['history', 1, 2, h.id],
        ['tool_call', 1, 3, c.id],
        ['prompt_updated', 1, 4, p.id],
      ],
    );
    const row = await s.app.db('prompt_tool_calls').where({ uid: c.id }).first();
    t.is(Number(row.revision), 3);
  } finally {
    await sub.close();
  }
});

test('another account can neither see nor change a prompt, its logs or its plugins', async (t) => {
  const a = await createTenant(s);
  const b = await createTenant(s);
  const pid = await plugin(a, 'weather');
  const theirs = await plugin(b, 'search');
  const p = await open(a);
  await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id), a.md);
  const notFound = async (call: Promise<unknown>, what: string) => t.is(code(await t.throwsAsync(call)), status.NOT_FOUND, what);
  await notFound(rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, b.md), 'GetPrompt by id');
  await notFound(rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: p.sessionKey }, b.md), 'GetPrompt by key');
  await notFound(rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, name: 'mine' }, updateMask: ['name'], requestId: '' }, b.md), 'UpdatePrompt');
  await notFound(rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, b.md), 'DeletePrompt');
  await notFound(rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id), b.md), 'AppendHistory');
  await notFound(rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id), b.md), 'RecordToolCall');
  await notFound(rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, theirs), b.md), 'RecordPluginUsage');
  await notFound(rpc(s.prompt, s.prompt.listHistory, listReq(p.id), b.md), 'ListHistory');
  await notFound(rpc(s.prompt, s.prompt.listToolCalls, listReq(p.id), b.md), 'ListToolCalls');
  await notFound(rpc(s.prompt, s.prompt.listPluginUsage, listReq(p.id), b.md), 'ListPluginUsage');
  await notFound(rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, b.md), 'GetPromptHistory');
  const listed = await rpc(s.prompt, s.prompt.listPrompts, listPromptsReq, b.md);
  t.false(listed.prompts.some((x) => x.id === p.id));
  const plugins = await rpc(s.prompt, s.prompt.listPlugins, { pageSize: 0, pageToken: '' }, b.md);
  t.deepEqual(plugins.plugins.map((x) => x.id), [theirs]);
  const still = await rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, a.md);
  t.is(still.prompt!.name, p.name);
  const mine = await rpc(s.prompt, s.prompt.listPlugins, { pageSize: 0, pageToken: '' }, a.md);
  t.deepEqual(mine.plugins.map((x) => x.id), [pid]);
});

test('a repeated request_id returns the first result and writes nothing twice', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const rid = randomUUID();
  const first = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { requestId: rid }), a.md);
  const retry = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { requestId: rid }), a.md);
  t.deepEqual(retry, first);
  const count = async (table: string) => Number((await s.app.db(table).where({ prompt_id: p.id }).count({ n: '*' }))[0]!.n);
  t.is(await count('prompt_history'), 1);
  await invalid(t, rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { requestId: rid, response: { id: 'other' } }), a.md), ['request_id']);

  // Concurrent duplicates: one write, one answer.
  const rid2 = randomUUID();
  const same = await Promise.all([1, 2, 3].map(() => rpc(s.prompt, s.prompt.recordToolCall, toolReq(p.id, { requestId: rid2 }), a.md)));
  t.is(new Set(same.map((r) => r.id)).size, 1);
  t.is(await count('prompt_tool_calls'), 1);

  // Another account's identical request id is its own request.
  const b = await createTenant(s);
  const pb = await open(b);
  const theirs = await rpc(s.prompt, s.prompt.appendHistory, historyReq(pb.id, { requestId: rid }), b.md);
  t.not(theirs.id, first.id);

  // OpenPrompt: without a request id each call makes a session; with one, a retry returns the first. (An id
  // names one request of its caller whatever the RPC, so this is a fresh one.)
  const orid = randomUUID();
  const o1 = await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientId: a.llmClientId, requestId: orid }, a.md);
  const o2 = await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientId: a.llmClientId, requestId: orid }, a.md);
  t.is(o2.prompt!.sessionKey, o1.prompt!.sessionKey);
  t.true(o2.created, 'the first result, replayed');

  // UpdatePrompt: a late retry returns the first result and does not undo a later change.
  const urid = randomUUID();
  const upd = (name: string, requestId: string) => rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, name }, updateMask: ['name'], requestId }, a.md);
  const u1 = await upd('first', urid);
  await upd('second', '');
  const u1again = await upd('first', urid);
  t.deepEqual(u1again, u1);
  t.is((await rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, a.md)).prompt!.name, 'second');

  // DeletePrompt: a retry succeeds like the first call did.
  const drid = randomUUID();
  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: drid }, a.md);
  await t.notThrowsAsync(rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: drid }, a.md));
  await invalid(t, rpc(s.prompt, s.prompt.appendHistory, historyReq(pb.id, { requestId: 'abc' }), b.md), ['request_id']);
});

test('a failed call does not burn its request_id, and an id older than 24 h is used afresh', async (t) => {
  const a = await createTenant(s);
  const p = await open(a);
  const rid = randomUUID();
  const fails = await t.throwsAsync(rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, randomUUID(), { requestId: rid }), a.md));
  t.is(code(fails), status.NOT_FOUND);
  const pid = await plugin(a, 'weather');
  const ok = await rpc(s.prompt, s.prompt.recordPluginUsage, usageReq(p.id, pid, { requestId: rid }), a.md);
  t.truthy(ok.id);

  const rid2 = randomUUID();
  const h1 = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { requestId: rid2 }), a.md);
  await s.app.db('request_ids').where({ request_id: rid2 }).update({ created_at: new Date(Date.now() - 25 * 3600_000) });
  const h2 = await rpc(s.prompt, s.prompt.appendHistory, historyReq(p.id, { requestId: rid2 }), a.md);
  t.not(h2.id, h1.id);
});

test('AdminService registers, gets and lists plugins', async (t) => {
  const a = await createTenant(s);
  const names = ['zeta', 'alpha', 'Mid_1', 'beta-2'];
  for (const n of names) await plugin(a, n);
  const seen: string[] = [];
  let token = '';
  do {
    const r = await rpc(s.admin, s.admin.listPlugins, { accountId: a.accountId, pageSize: 3, pageToken: token }, s.adminMd);
    seen.push(...r.plugins.map((x) => x.name));
    token = r.nextPageToken;
  } while (token);
  t.deepEqual([...seen].sort(), [...names].sort());
  t.is(new Set(seen).size, names.length);
  const { plugins } = await rpc(s.admin, s.admin.listPlugins, { accountId: a.accountId, pageSize: 1, pageToken: '' }, s.adminMd);
  const got = await rpc(s.admin, s.admin.getPlugin, { id: plugins[0]!.id }, s.adminMd);
  t.deepEqual(got.plugin, plugins[0]);

  const dup = await t.throwsAsync(rpc(s.admin, s.admin.createPlugin, { accountId: a.accountId, name: 'zeta', description: '', requestId: '' }, s.adminMd));
  t.is(code(dup), status.ALREADY_EXISTS);
  await invalid(t, rpc(s.admin, s.admin.createPlugin, { accountId: a.accountId, name: '1bad', description: '', requestId: '' }, s.adminMd), ['name']);
  await invalid(t, rpc(s.admin, s.admin.createPlugin, { accountId: randomUUID(), name: 'ok', description: '', requestId: '' }, s.adminMd), ['account_id']);
  await invalid(t, rpc(s.admin, s.admin.listPlugins, { accountId: a.accountId, pageSize: 0, pageToken: 'x' }, s.adminMd), ['page_token']);
  const missing = await t.throwsAsync(rpc(s.admin, s.admin.getPlugin, { id: randomUUID() }, s.adminMd));
  t.is(code(missing), status.NOT_FOUND);
  const noToken = await t.throwsAsync(rpc(s.admin, s.admin.createPlugin, { accountId: a.accountId, name: 'x', description: '', requestId: '' }, a.md as Metadata));
  t.is(code(noToken), status.UNAUTHENTICATED);
  await expectError(t, rpc(s.prompt, s.prompt.listPlugins, { pageSize: 0, pageToken: '' }, bearer('pk_nobody')), status.UNAUTHENTICATED, 'API_KEY_INVALID');
});
