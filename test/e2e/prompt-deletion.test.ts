import test from 'ava';
import { randomUUID } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole } from '../../src/gen/parley/prompt/v1/prompt.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';
import { tablesHolding } from '../helpers/leaks.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const CARD = '5500005555555559';
const SSN = '219-09-9999';
const NAME = 'secretName9a1';

const codeOf = (e: unknown) => (e as ServiceError).code;

test('DeletePrompt leaves no content: request-id replays, watch, reads, lists, the cache and every table', async (t) => {
  const a = await createTenant(s);
  const openReq = { sessionKey: '', llmClientId: a.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: randomUUID(), endUserId: '', labels: {} };
  const p = (await rpc(s.prompt, s.prompt.openPrompt, openReq, a.md)).prompt!;
  const appendReq = {
    promptId: p.id,
    request: { card: CARD },
    response: {},
    messages: [{ role: ChatRole.CHAT_ROLE_USER, content: `ssn ${SSN}`, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }],
    requestId: randomUUID(),
  };
  await rpc(s.prompt, s.prompt.appendHistory, appendReq, a.md);
  const toolReq = { promptId: p.id, pluginId: '', functionName: 'lookup', functionArgs: JSON.stringify({ ssn: SSN }), request: undefined, response: undefined, requestId: randomUUID() };
  await rpc(s.prompt, s.prompt.recordToolCall, toolReq, a.md);
  const updateReq = { prompt: { ...p, name: NAME }, updateMask: ['name'], requestId: randomUUID() };
  await rpc(s.prompt, s.prompt.updatePrompt, updateReq, a.md);
  await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: p.sessionKey, llmClientId: '', requestId: '' }, a.md);
  t.truthy((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value, 'the open cached the prompt');

  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, a.md);

  // Retrying a write with its request id must not replay the stored result, which repeats the content.
  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.appendHistory, appendReq, a.md))), status.NOT_FOUND);
  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.recordToolCall, toolReq, a.md))), status.NOT_FOUND);
  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.updatePrompt, updateReq, a.md))), status.NOT_FOUND);
  const reopened = await rpc(s.prompt, s.prompt.openPrompt, openReq, a.md);
  t.not(reopened.prompt?.id, p.id, 'a retried open does not hand back the deleted prompt');

  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, a.md))), status.NOT_FOUND);
  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, a.md))), status.NOT_FOUND);
  t.is(codeOf(await t.throwsAsync(rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, a.md))), status.NOT_FOUND);
  const sessionOpen = await t.throwsAsync(rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: p.sessionKey, llmClientId: '', requestId: '' }, a.md));
  t.is(codeOf(sessionOpen), status.NOT_FOUND, 'its session key no longer opens anything');
  const listed = await rpc(s.prompt, s.prompt.listPrompts, { filter: '', orderBy: '', showTotalSize: false, endUserId: '', pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined }, a.md);
  t.false(listed.prompts.some((x) => x.id === p.id));
  t.is((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value, null);

  const watch = s.prompt.watchPrompt({ promptId: p.id, afterRevision: 0 }, a.md);
  let err: ServiceError | undefined;
  watch.on('data', () => {});
  watch.on('error', (e: ServiceError) => (err = e));
  await eventually(() => err !== undefined, 'WatchPrompt to fail');
  t.is(err?.code, status.NOT_FOUND);

  t.deepEqual(await tablesHolding(s.app.db, [CARD, SSN, NAME]), [], 'no table keeps any of the content');
});
