import { eventually } from '../helpers/eventually.js';
import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole, type PromptUpdate, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, errorInfo, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';

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
  /** Every update received, the caught_up marker included. */
  readonly all: PromptUpdate[] = [];
  error: ServiceError | undefined;
  ended = false;
  readonly call;
  constructor(promptId: string, afterRevision: number, md = tenant.md) {
    this.call = s.prompt.watchPrompt({ promptId, afterRevision }, md);
    this.call.on('data', (r: WatchPromptResponse) => this.all.push(r.update!));
    this.call.on('error', (e: ServiceError) => (this.error = e));
    this.call.on('end', () => (this.ended = true));
  }
  /** The changes received (without the marker). */
  get got() {
    return this.all.filter((u) => !u.caughtUp);
  }
  revisions() {
    return this.got.filter((u) => !u.promptDeleted).map((u) => u.revision);
  }
  caughtUp() {
    return this.all.findIndex((u) => u.caughtUp);
  }
  async until(pred: () => boolean, what: string) {
    await eventually(() => {
      if (this.error) throw new Error(`stream failed (${this.error.code} ${this.error.details}) before ${what}`);
      return pred();
    }, `${what}; revisions ${this.revisions().join(',')}`);
  }
}

const open = async () =>
  (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md)).prompt!;
const history = (promptId: string, content: string) =>
  rpc(
    s.prompt,
    s.prompt.appendHistory,
    { promptId, request: {}, response: {}, messages: [{ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }], requestId: '' },
    tenant.md,
  );
const toolCall = (promptId: string, functionName: string) =>
  rpc(s.prompt, s.prompt.recordToolCall, { promptId, pluginId: '', functionName, functionArgs: '{}', request: undefined, response: undefined, requestId: '' }, tenant.md);

test('WatchPrompt replays the log after a revision, marks caught_up, then continues live, and ends when the prompt is deleted', async (t) => {
  const p = await open();
  t.is(p.revision, 1, 'a new prompt is at revision 1');
  await history(p.id, 'one');
  await toolCall(p.id, 'lookup');
  await history(p.id, 'three');
  const w = new PromptWatcher(p.id, 2);
  await w.until(() => w.caughtUp() >= 0, 'the replay of revisions 3 and 4, then caught_up');
  t.is(w.caughtUp(), 2, 'caught_up follows the replay');
  t.is(w.all[2]!.revision, 4, 'caught_up carries the revision the replay reached');
  await toolCall(p.id, 'live');
  await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, description: 'renamed' }, updateMask: ['description'], requestId: '' }, tenant.md);
  await rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: '' }, tenant.md);
  await w.until(() => w.ended, 'the end after the delete');
  t.deepEqual(w.revisions(), [3, 4, 5, 6], 'an update takes a revision too');
  t.is(w.got[0]!.toolCall?.functionName, 'lookup');
  t.is(w.got[1]!.history?.messages[0]?.content, 'three');
  t.is(w.got[2]!.toolCall?.functionName, 'live');
  t.is(w.got[3]!.promptUpdated?.description, 'renamed');
  t.is(w.got[3]!.promptUpdated?.revision, 6);
  t.truthy(w.got[4]!.promptDeleted);
  t.is(w.got[4]!.revision, 6, 'the deletion carries the last revision');
  t.is(w.all.filter((u) => u.caughtUp).length, 1, 'one caught_up per stream');
});

test('WatchPrompt replays only the latest prompt update, and caught_up comes at once on an idle prompt', async (t) => {
  const p = await open();
  const update = (description: string) =>
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, description }, updateMask: ['description'], requestId: '' }, tenant.md);
  await update('first'); // 2
  await history(p.id, 'one'); // 3
  await update('second'); // 4
  await update('third'); // 5
  const w = new PromptWatcher(p.id, 0);
  await w.until(() => w.caughtUp() >= 0, 'caught_up');
  t.deepEqual(w.revisions(), [3, 5], 'superseded updates (2, 4) are not replayed');
  t.is(w.got[1]!.promptUpdated?.description, 'third');
  t.is(w.all[w.caughtUp()]!.revision, 5);
  w.call.cancel();

  const idle = new PromptWatcher(p.id, 5);
  await idle.until(() => idle.caughtUp() === 0, 'caught_up first');
  t.is(idle.all[0]!.revision, 5);
  idle.call.cancel();
});

test('WatchPrompt: writes racing the switch from replay to live arrive once each, in order', async (t) => {
  for (let run = 0; run < 10; run++) {
    const p = await open();
    for (let i = 0; i < run % 3; i++) await history(p.id, `before ${i}`);
    const w = new PromptWatcher(p.id, 0);
    await Promise.all(Array.from({ length: 5 }, (_, i) => history(p.id, `during ${i}`)));
    const total = (run % 3) + 5;
    await w.until(() => w.revisions().length >= total, `${total} entries`);
    t.deepEqual(w.revisions(), Array.from({ length: total }, (_, i) => i + 2), `run ${run}`);
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

test.serial('WatchPrompt: a watcher that reads too slowly is cut off with RESOURCE_EXHAUSTED WATCHER_TOO_SLOW, having received no gap', async (t) => {
  const slow = await startTestServer({ watchBufferSize: 4 });
  try {
    const a = await createTenant(slow);
    const { prompt } = await rpc(slow.prompt, slow.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: a.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, a.md);
    const got: PromptUpdate[] = [];
    let error: ServiceError | undefined;
    const call = slow.prompt.watchPrompt({ promptId: prompt!.id, afterRevision: 0 }, a.md);
    call.on('data', (r: WatchPromptResponse) => got.push(r.update!));
    call.on('error', (e: ServiceError) => (error = e));
    await eventually(() => got.some((u) => u.caughtUp), 'caught_up');
    call.pause(); // a consumer that stops reading
    // Enough to fill the client's buffers and both HTTP/2 windows, then the server's bounded buffer.
    const big = 'x'.repeat(128 * 1024);
    for (let i = 0; i < 64; i++) {
      await rpc(slow.prompt, slow.prompt.appendHistory, { promptId: prompt!.id, request: {}, response: {}, messages: [{ role: ChatRole.CHAT_ROLE_USER, content: `${i} ${big}`, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }], requestId: '' }, a.md);
    }
    call.resume();
    await eventually(() => error !== undefined, 'the cut-off', 20_000);
    t.is(error?.code, status.RESOURCE_EXHAUSTED, error?.details);
    t.is(errorInfo(error!)?.reason, 'WATCHER_TOO_SLOW');
    const seen = got.filter((u) => u.history).map((u) => u.revision);
    t.true(seen.length < 64, 'the slow watcher did not receive everything');
    t.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => i + 2), 'what it did receive has no gap');
  } finally {
    await slow.stop();
  }
});
