import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { BadRequest } from '../../src/gen/google/rpc/error_details.js';
import { ChatMessage, type ChatContentShape, ChatRole, type PromptUpdate, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { bufCurl, curlReason } from '../helpers/buf-curl.js';
import { CHAT_MESSAGE_CASES } from '../helpers/chat-messages.js';
import { expectError } from '../helpers/errors.js';
import { eventually } from '../helpers/eventually.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';

let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
});
test.after.always(async () => {
  await s?.stop();
});

const SERVICE = 'parley.prompt.v1.PromptService';
const open = async () =>
  (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md)).prompt!;
const append = (promptId: string, messages: ChatMessage[], request: Record<string, unknown> = {}) =>
  rpc(s.prompt, s.prompt.appendHistory, { promptId, request, response: {}, messages, requestId: '' }, tenant.md);
const sent = CHAT_MESSAGE_CASES.map((c) => ChatMessage.fromJSON(c.json));
/** Each message as the generated toJSON prints it. */
const jsonOf = (messages: ChatMessage[]) => messages.map((m) => JSON.stringify(ChatMessage.toJSON(m)));
const expected = CHAT_MESSAGE_CASES.map((c) => JSON.stringify(c.json));

/** Message by message, so a failure names the content form. */
function sameBytes(t: { is: (a: unknown, b: unknown, m?: string) => void }, got: string[], where: string) {
  t.is(got.length, expected.length, `${where}: one message per form`);
  CHAT_MESSAGE_CASES.forEach((c, i) => t.is(got[i], expected[i], `${where}: ${c.form}`));
}

test('every content form round-trips through the TS client byte for byte: ListHistory, GetPromptHistory and WatchPrompt', async (t) => {
  const p = await open();
  const w = s.prompt.watchPrompt({ promptId: p.id, afterRevision: 0 }, tenant.md);
  const updates: PromptUpdate[] = [];
  let failed: ServiceError | undefined;
  w.on('data', (r: WatchPromptResponse) => updates.push(r.update!));
  w.on('error', (e: ServiceError) => (failed = e));
  try {
    const entry = await append(p.id, sent);
    // Stored in OpenAI's wire shape (the jsonb column keeps the keys, in its own order).
    const row = await s.app.db('prompt_history').where({ uid: entry.id }).first(s.app.db.raw('messages::text as text'));
    const stored = JSON.parse(row.text as string) as unknown[];
    t.deepEqual(stored, CHAT_MESSAGE_CASES.map((c) => c.openai));
    // …which is why reads rebuild the canonical order rather than trust the column's.
    t.notDeepEqual(stored.map((m) => JSON.stringify(m)), CHAT_MESSAGE_CASES.map((c) => JSON.stringify(c.openai)), 'jsonb reorders keys');
    const listed = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md);
    sameBytes(t, jsonOf(listed.history[0]!.messages), 'ListHistory');
    const h = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, tenant.md);
    sameBytes(t, jsonOf(h.promptHistory), 'GetPromptHistory.prompt_history');
    sameBytes(t, jsonOf(h.latestHistory!.messages), 'GetPromptHistory.latest_history');
    await eventually(() => {
      if (failed) throw new Error(`watch failed: ${failed.code} ${failed.details}`);
      return updates.some((u) => u.history?.id === entry.id);
    }, 'the entry on the watch');
    sameBytes(t, jsonOf(updates.find((u) => u.history?.id === entry.id)!.history!.messages), 'WatchPrompt');
  } finally {
    w.cancel();
  }
});

test('an entry logged with only its request: GetPromptHistory reads request.messages (OpenAI dicts) without flattening anything', async (t) => {
  const p = await open();
  await append(p.id, [], { model: 'gpt-4o', messages: CHAT_MESSAGE_CASES.map((c) => c.openai) });
  const h = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id, sessionKey: '' }, tenant.md);
  sameBytes(t, jsonOf(h.promptHistory), 'GetPromptHistory fallback');
});

test('every content form round-trips through buf curl (proto3 JSON) byte for byte', async (t) => {
  const key = tenant.md.get('authorization')[0] as string;
  const opened = await bufCurl(s.address, `${SERVICE}/OpenPrompt`, { llm_client_id: tenant.llmClientId }, key);
  const promptId = opened.prompt.id as string;
  const appended = await bufCurl(s.address, `${SERVICE}/AppendHistory`, { promptId, messages: CHAT_MESSAGE_CASES.map((c) => c.json) }, key);
  t.truthy(appended.id, JSON.stringify(appended).slice(0, 500));
  const listed = await bufCurl(s.address, `${SERVICE}/ListHistory`, { promptId }, key);
  sameBytes(t, (listed.history[0].messages as unknown[]).map((m) => JSON.stringify(m)), 'buf curl ListHistory');
  const h = await bufCurl(s.address, `${SERVICE}/GetPromptHistory`, { id: promptId }, key);
  sameBytes(t, (h.promptHistory as unknown[]).map((m) => JSON.stringify(m)), 'buf curl GetPromptHistory');

  const bad = await bufCurl(
    s.address,
    `${SERVICE}/AppendHistory`,
    { promptId, messages: [{ role: 'CHAT_ROLE_USER', contentParts: [{ imageUrl: { url: '' } }] }] },
    key,
  );
  t.is(bad.code, 'invalid_argument');
  t.is(curlReason(bad), 'INVALID_ARGUMENT');
  const br = (bad.details as Array<{ type: string; value: string }>).find((d) => d.type === 'google.rpc.BadRequest')!;
  t.deepEqual(BadRequest.decode(Buffer.from(br.value, 'base64')).fieldViolations.map((v) => v.field), ['messages[0].content_parts[0].image_url.url']);
});

const msg = (m: Partial<ChatMessage>): ChatMessage => ({ ...ChatMessage.fromPartial({ role: ChatRole.CHAT_ROLE_USER }), ...m });
const part = (p: Record<string, unknown>) => ({ text: undefined, imageUrl: undefined, inputAudio: undefined, file: undefined, refusal: undefined, ...p });

async function rejects(t: any, promptId: string, messages: ChatMessage[], fields: string[]) {
  const e = (await t.throwsAsync(append(promptId, messages))) as ServiceError;
  t.is(e?.code, status.INVALID_ARGUMENT, e?.message);
  t.deepEqual(violatedFields(e), fields);
  t.true(e.details.length < 2000, 'the error does not echo the input');
}

test('invalid messages are refused with INVALID_ARGUMENT naming each path', async (t) => {
  const p = await open();
  const long = 'x'.repeat(100_000);
  await rejects(t, p.id, [msg({ contentParts: [part({})] })], ['messages[0].content_parts[0]']);
  await rejects(t, p.id, [msg({ content: 'x' }), msg({ contentParts: [part({ text: 'ok' }), part({ imageUrl: { url: '', detail: '' } })] })], ['messages[1].content_parts[1].image_url.url']);
  await rejects(t, p.id, [msg({ contentParts: [part({ imageUrl: { url: `ftp://${long}`, detail: 'ultra' } })] })], ['messages[0].content_parts[0].image_url.url', 'messages[0].content_parts[0].image_url.detail']);
  await rejects(t, p.id, [msg({ contentParts: [part({ inputAudio: { data: '', format: 'ogg' } })] })], ['messages[0].content_parts[0].input_audio.data', 'messages[0].content_parts[0].input_audio.format']);
  await rejects(t, p.id, [msg({ contentParts: [part({ file: { fileData: '', fileId: '', filename: 'a.pdf' } })] })], ['messages[0].content_parts[0].file.file_id']);
  // Part kinds by role: media from the user only, refusals from the assistant only.
  await rejects(
    t,
    p.id,
    [
      msg({ role: ChatRole.CHAT_ROLE_ASSISTANT, contentParts: [part({ imageUrl: { url: 'https://example.com/a.png', detail: '' } })] }),
      msg({ contentParts: [part({ refusal: 'no' })] }),
      msg({ role: ChatRole.CHAT_ROLE_SYSTEM, contentParts: [part({ file: { fileData: '', fileId: 'file-1', filename: '' } })] }),
      msg({ role: ChatRole.CHAT_ROLE_TOOL, toolCallId: 'c', contentParts: [part({ inputAudio: { data: 'AA==', format: 'wav' } })] }),
      msg({ role: ChatRole.CHAT_ROLE_ASSISTANT, contentParts: [part({ refusal: '' })] }),
    ],
    [
      'messages[0].content_parts[0].image_url',
      'messages[1].content_parts[0].refusal',
      'messages[2].content_parts[0].file',
      'messages[3].content_parts[0].input_audio',
      'messages[4].content_parts[0].refusal',
    ],
  );
  // One content at a time; null or absent content only where OpenAI allows none.
  await rejects(t, p.id, [msg({ content: 'x', contentParts: [part({ text: 'y' })] })], ['messages[0].content_parts']);
  await rejects(t, p.id, [msg({ content: 'x', contentShape: 1 })], ['messages[0].content_shape']);
  await rejects(t, p.id, [msg({ contentShape: 2 })], ['messages[0].content_shape']);
  await rejects(t, p.id, [msg({ role: ChatRole.CHAT_ROLE_ASSISTANT, contentShape: 1 })], ['messages[0].content_shape']);
  await rejects(t, p.id, [msg({ contentShape: 9 as ChatContentShape })], ['messages[0].content_shape']);
  await rejects(t, p.id, [msg({ contentParts: Array.from({ length: 257 }, () => part({ text: 'a' })) })], ['messages[0].content_parts']);
  // Refusal and audio belong to the assistant; the smarter roles need content like any other.
  await rejects(t, p.id, [msg({ content: 'x', refusal: 'no', audio: { id: 'a' } })], ['messages[0].refusal', 'messages[0].audio']);
  await rejects(t, p.id, [msg({ role: ChatRole.CHAT_ROLE_SMARTER }), msg({ role: ChatRole.CHAT_ROLE_SMARTER_ERROR, contentShape: 1 })], ['messages[0].content', 'messages[1].content_shape']);
  // tool_call_id rules as before, with parts too.
  await rejects(t, p.id, [msg({ role: ChatRole.CHAT_ROLE_TOOL, contentParts: [part({ text: '3' })] })], ['messages[0].tool_call_id']);
  const listed = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md);
  t.deepEqual(listed.history, [], 'nothing refused was written');
});

test('parts count toward the 1 MiB of an entry: an image data URL past it is FIELD_TOO_LARGE on `messages`, one just under is kept', async (t) => {
  const p = await open();
  const image = (n: number) => msg({ contentParts: [part({ imageUrl: { url: `data:image/png;base64,${'A'.repeat(n)}`, detail: '' } })] });
  const e = await expectError(t, append(p.id, [image(1024 * 1024)]), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  t.deepEqual(e.badRequest?.fieldViolations.map((v) => v.field), ['messages']);
  const kept = await append(p.id, [image(1024 * 1024 - 200)]);
  const listed = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md);
  t.is(listed.history[0]!.id, kept.id);
  t.is(listed.history[0]!.messages[0]!.contentParts[0]!.imageUrl!.url.length, 'data:image/png;base64,'.length + 1024 * 1024 - 200);
});
