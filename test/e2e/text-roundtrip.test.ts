import test from 'ava';
import type { ServiceError } from '@grpc/grpc-js';
import type { GenieSession, StreamUtteranceResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { ChatRole } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';
import { chunk } from '../helpers/genie-stream.js';

let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  await genie(s, tenant).register(modelType({ jsonSchema: undefined }));
});
test.after.always(async () => {
  await s?.stop();
});

/**
 * Texts whose edges a decoder or a validator might "clean": a leading byte order mark (which a default
 * TextDecoder drops), leading and trailing spaces, tabs and newlines, other invisible characters.
 */
const TEXTS = ['\uFEFF', '\uFEFFhello', '\uFEFF\uFEFF  two marks  ', '  spaced  ', '\t\ttabbed\n\n', '\r\nline\r\n', '\u200B\u00A0zero width\u2028', 'mid\uFEFFdle\uFEFF'];

/** UTF-8 bytes of a string, so a failure shows exactly which code units differ. */
const hex = (s: string) => Buffer.from(s, 'utf8').toString('hex');

test('text round trip: prompt history content, tool call arguments and plugin usage input come back byte for byte', async (t) => {
  const p = s.prompt;
  const md = tenant.md;
  const { plugin } = await rpc(s.admin, s.admin.createPlugin, { accountId: tenant.accountId, name: 'roundtrip', description: '', requestId: '' }, s.adminMd);
  const { prompt } = await rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: TEXTS[1]!, url: '', requestId: '' }, md);
  const promptId = prompt!.id;
  const messages = TEXTS.map((content) => ({ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }));
  await rpc(p, p.appendHistory, { promptId, request: { text: TEXTS[2] }, response: {}, messages, requestId: '' }, md);
  for (const text of TEXTS) {
    await rpc(p, p.recordToolCall, { promptId, pluginId: plugin!.id, functionName: 'f', functionArgs: text, request: {}, response: {}, requestId: '' }, md);
    await rpc(p, p.recordPluginUsage, { promptId, pluginId: plugin!.id, inputText: text, requestId: '' }, md);
  }
  const page = { promptId, pageSize: 100, pageToken: '' };
  const { history } = await rpc(p, p.listHistory, page, md);
  t.deepEqual(history[0]!.messages.map((m) => hex(m.content)), TEXTS.map(hex));
  t.is(hex(history[0]!.request!.text), hex(TEXTS[2]!));
  const { toolCalls } = await rpc(p, p.listToolCalls, page, md);
  t.deepEqual(toolCalls.map((c) => hex(c.functionArgs)), TEXTS.map(hex));
  const { pluginUsage } = await rpc(p, p.listPluginUsage, page, md);
  t.deepEqual(pluginUsage.map((u) => hex(u.inputText)), TEXTS.map(hex));
  const whole = await rpc(p, p.getPromptHistory, { id: promptId, sessionKey: '' }, md);
  t.deepEqual(whole.promptHistory.map((m) => hex(m.content)), TEXTS.map(hex));
  t.deepEqual(whole.pluginUsage.map((u) => hex(u.inputText)).sort(), TEXTS.map(hex).sort());
  const got = await rpc(p, p.getPrompt, { id: promptId, sessionKey: '' }, md);
  t.is(hex(got.prompt!.userAgent), hex(TEXTS[1]!));
});

function streamUtterance(sessionId: string, chunks: string[]): Promise<StreamUtteranceResponse> {
  return new Promise((resolve, reject) => {
    const call = s.genie.streamUtterance(tenant.md, (err: ServiceError | null, res?: StreamUtteranceResponse) => (err ? reject(err) : resolve(res!)));
    for (const text of chunks) call.write(chunk({ sessionId, actor: 'assistant', eventName: 'ai_response', text }));
    call.end();
  });
}

test('text round trip: genie actor_input, dialogue text and utterances come back byte for byte, from the hot copy and from Postgres', async (t) => {
  const g = genie(s, tenant);
  for (const text of TEXTS) {
    const { sessionId } = await g.create('qa', { topic: text });
    await g.send(sessionId, 'user_input', text, 'user');
    // The utterance's chunks are joined as sent: a chunk's leading mark or spaces are part of the text.
    await streamUtterance(sessionId, [text, text]);
    await g.append(sessionId, 'user', text);
    const expected = { input: hex(text), dialogue: [hex(text), hex(text + text), hex(text)], topic: hex(text) };
    const view = (x: GenieSession) => ({
      input: hex(x.actorInput),
      dialogue: x.dialogue.map((d) => hex(d.actorText)),
      topic: hex(x.fields!.topic as string),
    });
    t.deepEqual(view(await g.get(sessionId)), expected, `GetSession ${JSON.stringify(text)}`);
    // An earlier revision is read from Postgres' history, never from the hot copy.
    const sent = await g.get(sessionId, 2);
    t.is(hex(sent.actorInput), hex(text), `revision 2 of ${JSON.stringify(text)}`);
  }
  const { sessions } = await g.list('', '', 100);
  t.deepEqual(sessions.map((x) => hex(x.actorInput)).sort(), TEXTS.map(hex).sort(), 'ListSessions reads Postgres');
});
