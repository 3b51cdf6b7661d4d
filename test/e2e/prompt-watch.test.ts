import { eventually } from '../helpers/eventually.js';
import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';

let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
});
test.after.always(async () => {
  await s?.stop();
});

class PromptWatcher {
  readonly got: WatchPromptResponse[] = [];
  error: ServiceError | undefined;
  ended = false;
  readonly call;
  constructor(promptId: string, afterRevision: number, md = tenant.md) {
    this.call = s.prompt.watchPrompt({ promptId, afterRevision }, md);
    this.call.on('data', (r: WatchPromptResponse) => this.got.push(r));
    this.call.on('error', (e: ServiceError) => (this.error = e));
    this.call.on('end', () => (this.ended = true));
  }
  revisions() {
    return this.got.filter((r) => r.revision > 0).map((r) => r.revision);
  }
  async until(pred: () => boolean, what: string) {
    await eventually(() => {
      if (this.error) throw new Error(`stream failed (${this.error.code} ${this.error.details}) before ${what}`);
      return pred();
    }, `${what}; revisions ${this.revisions().join(',')}`);
  }
}

const open = async () =>
  (await rpc(s.prompt, s.prompt.openPrompt, { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md)).prompt!;
const history = (promptId: string, content: string) =>
  rpc(
    s.prompt,
    s.prompt.appendHistory,
    { promptId, request: {}, response: {}, messages: [{ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '' }], requestId: '' },
    tenant.md,
  );
const toolCall = (promptId: string, functionName: string) =>
  rpc(s.prompt, s.prompt.recordToolCall, { promptId, pluginId: '', functionName, functionArgs: '{}', request: undefined, response: undefined, requestId: '' }, tenant.md);

test('WatchPrompt replays the log after a revision, then continues live, and ends when the prompt is deleted', async (t) => {
  const p = await open();
  await history(p.id, 'one');
  await toolCall(p.id, 'lookup');
  await history(p.id, 'three');
  const w = new PromptWatcher(p.id, 1);
  await w.until(() => w.revisions().length === 2, 'the replay of revisions 2 and 3');
  await toolCall(p.id, 'live');
  await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, description: 'renamed' }, updateMask: ['description'], requestId: '' }, tenant.md);
  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, tenant.md);
  await w.until(() => w.ended, 'the end after the delete');
  t.deepEqual(w.revisions(), [2, 3, 4]);
  t.is(w.got[0]!.toolCall?.functionName, 'lookup');
  t.is(w.got[1]!.history?.messages[0]?.content, 'three');
  t.is(w.got[2]!.toolCall?.functionName, 'live');
  t.is(w.got[3]!.promptUpdated?.description, 'renamed');
  t.truthy(w.got[4]!.promptDeleted);
});

test('WatchPrompt: writes racing the switch from replay to live arrive once each, in order', async (t) => {
  for (let run = 0; run < 10; run++) {
    const p = await open();
    for (let i = 0; i < run % 3; i++) await history(p.id, `before ${i}`);
    const w = new PromptWatcher(p.id, 0);
    await Promise.all(Array.from({ length: 5 }, (_, i) => history(p.id, `during ${i}`)));
    const total = (run % 3) + 5;
    await w.until(() => w.revisions().length >= total, `${total} entries`);
    t.deepEqual(w.revisions(), Array.from({ length: total }, (_, i) => i + 1), `run ${run}`);
    w.call.cancel();
  }
});

test("WatchPrompt: another account's prompt is NOT_FOUND", async (t) => {
  const p = await open();
  const other = await createTenant(s);
  const w = new PromptWatcher(p.id, 0, other.md);
  await t.throwsAsync(w.until(() => false, 'an error'));
  t.is(w.error?.code, status.NOT_FOUND);
});
