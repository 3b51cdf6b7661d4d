import test from 'ava';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { eventually } from '../helpers/eventually.js';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { Actor, GenieServiceClient, type ChatResponse, type StreamUtteranceResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { chunk, decodeErrorInfo } from '../helpers/genie-stream.js';
import { createTenant, errorInfo, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { Watcher } from '../helpers/watch.js';
import { chatType, genie } from '../genie/fixtures.js';


let s: TestServer;
let tenant: Tenant;
let g: ReturnType<typeof genie>;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  g = genie(s, tenant);
  await g.register(chatType);
});
test.after.always(async () => {
  await s?.stop();
});

const newSession = async () => (await g.create('chat', {})).sessionId;

test('WatchSession replays revisions after after_revision, marks caught_up, continues live, and ends after a delete', async (t) => {
  const id = await newSession();
  for (const text of ['a', 'b', 'c']) await g.send(id, 'user_says', text);
  const w = new Watcher(s.genie, tenant.md, id, 2);
  await w.until((x) => x.caughtUp() !== undefined, 'the caught_up marker after the replay of revisions 3 and 4');
  t.deepEqual(w.revisions(), [3, 4], 'the replay comes before caught_up');
  t.is(w.caughtUp(), 4, 'caught_up carries the revision the replay reached');
  await g.send(id, 'llm_says', 'live');
  await g.del(id);
  await w.until((x) => x.ended, 'the end of the stream after the delete');
  t.deepEqual(w.revisions(), [3, 4, 5, 6]);
  const live = w.updates.find((u) => u.revision === 5)!;
  const kinds = live.commit!.events.map((e) => Object.keys(e).find((k) => (e as Record<string, unknown>)[k] !== undefined));
  t.deepEqual(kinds, ['stateChanged', 'dialogueAppended'], 'one revision carries all of its events, in order');
  t.is(live.commit!.events[1]!.dialogueAppended!.element!.actorText, 'live');
  t.is(live.commit!.events[1]!.dialogueAppended!.index, 4);
  t.truthy(w.updates.at(-1)!.commit!.events[0]!.sessionDeleted);
  t.deepEqual(
    w.updates.map((u) => (u.caughtUp ? 'caught_up' : u.revision)),
    [3, 4, 'caught_up', 5, 6],
    'one caught_up, between the replay and the live updates',
  );
});

test('WatchSession with no after_revision replays from the creation; one at the head is caught up at once', async (t) => {
  const id = await newSession();
  await g.send(id, 'user_says', 'a');
  const all = new Watcher(s.genie, tenant.md, id);
  await all.until((x) => x.caughtUp() !== undefined, 'caught_up');
  t.deepEqual(all.revisions(), [1, 2]);
  t.is(all.caughtUp(), 2);
  const head = new Watcher(s.genie, tenant.md, id, 2);
  await head.until((x) => x.caughtUp() !== undefined, 'caught_up');
  t.deepEqual(head.updates.map((u) => [u.revision, Boolean(u.caughtUp)]), [[2, true]], 'nothing to replay: caught_up alone');
  all.cancel();
  head.cancel();
});

test('a write racing the switch from replay to live is delivered exactly once, over many runs', async (t) => {
  for (let run = 0; run < 25; run++) {
    const id = await newSession();
    for (let i = 0; i < run % 4; i++) await g.send(id, 'user_says', `before ${i}`);
    const w = new Watcher(s.genie, tenant.md, id, 0);
    // Writes start together with the watch, so some land during its replay and some after.
    await Promise.all(Array.from({ length: 5 }, (_, i) => g.send(id, 'user_says', `during ${i}`)));
    const total = 1 + (run % 4) + 5;
    await w.until((x) => x.revisions().length >= total, `${total} revisions in run ${run}`);
    // A marker written last arrives after anything before it: once it is here, a duplicate would be too.
    await g.send(id, 'user_says', 'marker');
    await w.until((x) => x.revisions().includes(total + 1), `the marker in run ${run}`);
    t.deepEqual(w.revisions(), Array.from({ length: total + 1 }, (_, i) => i + 1), `run ${run}`);
    w.cancel();
  }
});

test('another account cannot watch a session, and a bad request names its field', async (t) => {
  const id = await newSession();
  const other = await createTenant(s);
  const w = new Watcher(s.genie, other.md, id);
  await t.throwsAsync(w.until(() => false, 'an error', 5_000));
  t.is(w.error?.code, status.NOT_FOUND);
  const bad = new Watcher(s.genie, tenant.md, 'not-a-uuid');
  await t.throwsAsync(bad.until(() => false, 'an error', 5_000));
  t.is(bad.error?.code, status.INVALID_ARGUMENT);
  const ahead = new Watcher(s.genie, tenant.md, id, 99);
  await t.throwsAsync(ahead.until(() => false, 'an error', 5_000));
  t.is(ahead.error?.code, status.INVALID_ARGUMENT);
});

function streamUtterance(chunks: Array<Parameters<typeof chunk>[0]>) {
  let resolve!: (r: StreamUtteranceResponse) => void;
  let reject!: (e: ServiceError) => void;
  const done = new Promise<StreamUtteranceResponse>((a, b) => ((resolve = a), (reject = b)));
  const call = s.genie.streamUtterance(tenant.md, (err, res) => (err ? reject(err) : resolve(res!)));
  const write = (c: (typeof chunks)[number]) => call.write(chunk(c));
  for (const c of chunks) write(c);
  return { call, done, write };
}

test('StreamUtterance: watchers see each chunk as a delta, and closing commits the whole utterance as one revision', async (t) => {
  const id = await newSession();
  const w = new Watcher(s.genie, tenant.md, id, 0);
  // Deltas are live-only: start streaming once the watcher is subscribed (it has replayed revision 1).
  await w.until((x) => x.caughtUp() !== undefined, 'the replay of the creation');
  const u = streamUtterance([{ sessionId: id, actor: 'assistant', eventName: 'llm_says', text: 'Hel' }, { text: 'lo, ' }]);
  await w.until((x) => x.updates.filter((v) => v.delta).length === 2, 'two deltas');
  u.write({ text: 'world' });
  await w.until((x) => x.updates.filter((v) => v.delta).length === 3, 'three deltas');
  t.deepEqual(w.revisions(), [1], 'nothing is committed while the worker is still streaming');
  u.call.end();
  const r = await u.done;
  t.like(r, { revision: 2, dialogueIndex: 1, state: 'open' });
  const read = await g.get(id);
  t.is(read.currentResponse!.actorText, 'Hello, world');
  t.is(read.currentResponse!.actor, Actor.ACTOR_ASSISTANT);
  await w.until((x) => x.revisions().length === 2, 'the commit');
  const deltas = w.updates.filter((v) => v.delta).map((v) => v.delta!);
  t.deepEqual(deltas.map((d) => [d.chunkIndex, d.text]), [[0, 'Hel'], [1, 'lo, '], [2, 'world']]);
  t.true(deltas.every((d) => d.utteranceId === r.utteranceId && d.actor === Actor.ACTOR_ASSISTANT));
  t.is(w.updates.at(-1)!.commit!.events[1]!.dialogueAppended!.element!.actorText, 'Hello, world');
  w.cancel();
});

test('StreamUtterance: a worker cancelled midway commits nothing and watchers get an aborted update', async (t) => {
  const id = await newSession();
  const w = new Watcher(s.genie, tenant.md, id, 0);
  await w.until((x) => x.caughtUp() !== undefined, 'the replay of the creation');
  const u = streamUtterance([{ sessionId: id, actor: 'assistant', text: 'half an ' }, { text: 'answer' }]);
  await w.until((x) => x.updates.filter((v) => v.delta).length === 2, 'two deltas');
  u.call.cancel();
  await t.throwsAsync(u.done);
  await w.until((x) => x.updates.some((v) => v.aborted), 'the aborted update');
  const aborted = w.updates.find((v) => v.aborted)!.aborted!;
  t.is(aborted.utteranceId, w.updates.find((v) => v.delta)!.delta!.utteranceId);
  const session = await g.get(id);
  t.is(session.revision, 1, 'the cancelled utterance wrote nothing');
  t.deepEqual(session.dialogue, []);
  t.deepEqual(w.revisions(), [1]);
  w.cancel();
});

test('StreamUtterance: a chunk marked last_chunk commits at once, before the worker closes; the answer follows the close', async (t) => {
  const id = await newSession();
  const w = new Watcher(s.genie, tenant.md, id);
  await w.until((x) => x.caughtUp() !== undefined, 'caught_up');
  const u = streamUtterance([{ sessionId: id, actor: 'user', eventName: 'user_says', text: 'quick ' }, { text: 'question', lastChunk: true }]);
  await w.until((x) => x.revisions().includes(2), 'the commit, while the worker has not closed');
  t.is((await g.get(id)).currentResponse!.actorText, 'quick question');
  u.call.end();
  const r = await u.done;
  t.like(r, { revision: 2, dialogueIndex: 1, state: 'open' });
  w.cancel();
});

test('StreamUtterance: a message after last_chunk is INVALID_ARGUMENT MESSAGE_AFTER_LAST_CHUNK; the committed utterance stays, nothing is committed twice', async (t) => {
  const id = await newSession();
  const w = new Watcher(s.genie, tenant.md, id);
  await w.until((x) => x.caughtUp() !== undefined, 'caught_up');
  const u = streamUtterance([{ sessionId: id, actor: 'assistant', text: 'done', lastChunk: true }]);
  await w.until((x) => x.revisions().includes(2), 'the commit on last_chunk');
  u.write({ text: ' and more' });
  u.call.end();
  const err = await t.throwsAsync<ServiceError>(u.done);
  t.is(err?.code, status.INVALID_ARGUMENT);
  t.deepEqual(errorInfo(err!), { reason: 'MESSAGE_AFTER_LAST_CHUNK', domain: 'parley', metadata: { revision: '2' } });
  const read = await g.get(id);
  t.is(read.revision, 2, 'nothing committed twice');
  t.deepEqual(read.dialogue.map((d) => d.actorText), ['done'], 'the committed utterance stays');
  t.false(w.updates.some((x) => x.aborted), 'watchers are not told to drop a committed utterance');
  // A second last_chunk is refused the same way, whatever it holds (even a chunk past the size limit).
  const twice = streamUtterance([{ sessionId: id, actor: 'assistant', text: 'one', lastChunk: true }, { text: 'x'.repeat(5 * 1024 * 1024), lastChunk: true }]);
  twice.call.end();
  const err2 = await t.throwsAsync<ServiceError>(twice.done);
  t.is(errorInfo(err2!)?.reason, 'MESSAGE_AFTER_LAST_CHUNK');
  t.is((await g.get(id)).revision, 3);
  w.cancel();
});

test('StreamUtterance with a request_id: a retry returns the first commit and writes nothing; the same id for another utterance is INVALID_ARGUMENT', async (t) => {
  const id = await newSession();
  const requestId = randomUUID();
  const once = async (text: string, rid: string = requestId) => {
    const u = streamUtterance([{ sessionId: id, actor: 'user', eventName: 'user_says', requestId: rid, text: text.slice(0, 3) }, { text: text.slice(3), requestId: rid }]);
    u.call.end();
    return u.done;
  };
  const first = await once('hello there');
  t.like(first, { revision: 2, dialogueIndex: 1, state: 'open' });
  const w = new Watcher(s.genie, tenant.md, id, 2);
  await w.until((x) => x.caughtUp() !== undefined, 'caught_up');
  const retry = await once('hello there');
  t.like(retry, { revision: 2, dialogueIndex: 1, state: 'open', utteranceId: first.utteranceId }, 'the retry returns the first result');
  t.deepEqual(retry.updateTime, first.updateTime);
  const read = await g.get(id);
  t.is(read.revision, 2, 'the retry wrote nothing');
  t.deepEqual(read.dialogue.map((d) => d.actorText), ['hello there']);
  await w.until((x) => x.updates.some((v) => v.aborted), "the retry's deltas voided");
  t.deepEqual(w.revisions(), [], 'no revision was committed by the retry');

  const reused = await t.throwsAsync<ServiceError>(once('something else'));
  t.is(reused?.code, status.INVALID_ARGUMENT);
  t.is(errorInfo(reused!)?.reason, 'REQUEST_ID_REUSED');
  t.is((await g.get(id)).revision, 2);
  // Request ids are per caller across RPCs: the same id on another RPC is refused too.
  const openPrompt = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId, endUserId: '', labels: {} };
  const other = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, openPrompt, tenant.md));
  t.is(errorInfo(other!)?.reason, 'REQUEST_ID_REUSED');
  const bad = await t.throwsAsync<ServiceError>(once('x', 'not-a-uuid'));
  t.is(bad?.code, status.INVALID_ARGUMENT);
  // A different id commits again.
  t.is((await once('hello there', randomUUID())).revision, 3);
  w.cancel();
});

test('StreamUtterance validates its messages and commits nothing on a bad one', async (t) => {
  const id = await newSession();
  const badActor = streamUtterance([{ sessionId: id, actor: Actor.ACTOR_UNSPECIFIED, text: 'x' }]);
  badActor.call.end();
  const e1 = await t.throwsAsync<ServiceError>(badActor.done);
  t.is(e1?.code, status.INVALID_ARGUMENT);
  t.regex(e1!.details, /ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);
  const zero = streamUtterance([{ sessionId: id, actor: 'user', text: 'x', expectedRevision: 0 }]);
  zero.call.end();
  t.is((await t.throwsAsync<ServiceError>(zero.done))?.code, status.INVALID_ARGUMENT);
  const switched = streamUtterance([{ sessionId: id, actor: 'user', text: 'x' }, { actor: 'assistant', text: 'y' }]);
  switched.call.end();
  const e2 = await t.throwsAsync<ServiceError>(switched.done);
  t.is(e2?.code, status.INVALID_ARGUMENT);
  const notAllowed = streamUtterance([{ sessionId: id, actor: 'user', eventName: 'no_such_event', text: 'x' }]);
  notAllowed.call.end();
  const e3 = await t.throwsAsync<ServiceError>(notAllowed.done);
  t.is(e3?.code, status.FAILED_PRECONDITION);
  t.is((await g.get(id)).revision, 1);
});

test('Chat: the gateway sends events and receives every update of the session on the same stream', async (t) => {
  const id = await newSession();
  const responses: ChatResponse[] = [];
  const call = s.genie.chat(tenant.md);
  let ended = false;
  call.on('data', (r: ChatResponse) => responses.push(r));
  call.on('end', () => (ended = true));
  call.on('error', () => (ended = true));
  const wait = async (pred: () => boolean, what: string) => {
    for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
    if (!pred()) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(responses)}`);
  };
  const none = { open: undefined, sendEvent: undefined, appendDialogue: undefined };
  call.write({ ...none, requestId: 'o', open: { sessionId: id, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
  call.write({ ...none, requestId: 'r1', sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_UNSPECIFIED, actorInput: 'hi', expectedRevision: undefined } });
  await wait(() => responses.some((r) => r.ack?.requestId === 'r1'), 'the ack of r1');
  // Another writer's change reaches the gateway too.
  await g.send(id, 'llm_says', 'hello from elsewhere');
  call.write({ ...none, requestId: 'bad', sendEvent: { eventName: 'nope', actor: Actor.ACTOR_UNSPECIFIED, actorInput: '', expectedRevision: undefined } });
  call.write({ ...none, requestId: 'r2', appendDialogue: { actor: Actor.ACTOR_SYSTEM, actorText: 'note', expectedRevision: undefined } });
  // The ack of r2 and its committed update travel independently: wait for both.
  await wait(
    () => responses.filter((r) => r.update?.commit).length === 4 && responses.some((r) => r.ack?.requestId === 'r2'),
    'four committed updates and the ack of r2',
  );
  const err = responses.find((r) => r.error)?.error;
  t.is(err?.requestId, 'bad');
  t.is(err?.status?.code, status.FAILED_PRECONDITION);
  t.like(decodeErrorInfo(err!.status!), { reason: 'TRANSITION_NOT_ALLOWED', metadata: { event: 'nope' } }, 'the ChatError carries the ErrorInfo of the refusal');
  t.deepEqual(responses.filter((r) => r.update?.commit).map((r) => r.update!.revision), [1, 2, 3, 4]);
  t.is(responses.find((r) => r.ack?.requestId === 'r2')?.ack?.revision, 4);
  const texts = responses.flatMap((r) => r.update?.commit?.events ?? []).map((e) => e.dialogueAppended?.element?.actorText).filter(Boolean);
  t.deepEqual(texts, ['hi', 'hello from elsewhere', 'note']);
  call.end();
  await wait(() => ended, 'the end of the stream after the gateway closed its side');
  t.true(ended);
});

test('Chat must start with open', async (t) => {
  const call = s.genie.chat(tenant.md);
  const error = new Promise<ServiceError>((resolve) => call.on('error', resolve));
  call.on('data', () => {});
  call.write({ requestId: 'x', open: undefined, appendDialogue: { actor: Actor.ACTOR_USER, actorText: 'hi', expectedRevision: undefined }, sendEvent: undefined });
  t.is((await error).code, status.INVALID_ARGUMENT);
});

test('a JSON client (buf curl) sees the replay, then caughtUp with the revision it reached, then live updates until the delete', async (t) => {
  const id = await newSession();
  await g.send(id, 'user_says', 'hi');
  const curl = spawn(
    path.resolve('node_modules/.bin/buf'),
    [
      'curl', '--protocol', 'grpc', '--http2-prior-knowledge',
      '-H', `authorization: ${tenant.md.get('authorization')[0]}`,
      '-d', JSON.stringify({ session_id: id }),
      `http://${s.address}/parley.genie.v1.GenieService/WatchSession`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  curl.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
  curl.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => curl.on('close', resolve));
  try {
    await eventually(() => stdout.includes('"caughtUp"') || curl.exitCode !== null, 'caughtUp in the JSON output', 60_000);
    await g.send(id, 'llm_says', 'live');
    await g.del(id);
    t.is(await exited, 0, stderr);
  } finally {
    curl.kill();
  }
  // buf curl prints each response as an indented JSON object; top-level objects start a line with `{`.
  const messages = JSON.parse(`[${stdout.trim().replace(/\n\}\n\{/g, '\n},\n{')}]`) as Array<{ update: Record<string, unknown> & { revision?: string } }>;
  const kinds = messages.map((m) => (m.update.caughtUp ? 'caughtUp' : m.update.commit ? 'commit' : 'other') + `@${m.update.revision}`);
  t.deepEqual(kinds, ['commit@1', 'commit@2', 'caughtUp@2', 'commit@3', 'commit@4'], 'int64 revisions are JSON strings; caughtUp is an empty object');
  t.deepEqual(messages[2]!.update.caughtUp, {});
});

test('a streamed utterance at the 1 MiB limit commits as one update a client with the default 4 MiB receive limit reads; one byte more is UTTERANCE_SIZE_LIMIT', async (t) => {
  const id = await newSession();
  const plain = new GenieServiceClient(s.address, credentials.createInsecure());
  try {
    const w = new Watcher(plain, tenant.md, id);
    await w.until((x) => x.caughtUp() !== undefined, 'caught_up');
    const mib = 1024 * 1024;
    // As SendEvent: the commit carries the state change and the dialogue element, and the text only once.
    const u = streamUtterance([{ sessionId: id, actor: 'user', eventName: 'user_says', text: 'x'.repeat(mib / 2) }, { text: 'y'.repeat(mib / 2), lastChunk: true }]);
    u.call.end();
    t.is((await u.done).revision, 2);
    await w.until((x) => x.revisions().includes(2), 'the 1 MiB commit');
    const events = w.updates.find((x) => x.revision === 2 && x.commit)!.commit!.events;
    t.is(events[1]!.dialogueAppended!.element!.actorText.length, mib);
    t.deepEqual(Object.keys(events[0]!.stateChanged!).sort(), ['actor', 'eventName', 'fromState', 'toState']);
    const over = streamUtterance([{ sessionId: id, actor: 'user', text: 'z'.repeat(mib + 1) }]);
    over.call.end();
    t.is(errorInfo((await t.throwsAsync<ServiceError>(over.done))!)?.reason, 'UTTERANCE_SIZE_LIMIT');
    w.cancel();
  } finally {
    plain.close();
  }
});

test('StreamUtterance: a worker that sends last_chunk and never half-closes gets the commit, not an error, at the idle limit', async (t) => {
  const idle = await startTestServer({ clientStreamIdleMs: 1000 });
  try {
    const other = await createTenant(idle);
    const og = genie(idle, other);
    await og.register(chatType);
    const id = (await og.create('chat', {})).sessionId;
    const done = new Promise<StreamUtteranceResponse>((resolve, reject) => {
      const call = idle.genie.streamUtterance(other.md, (err, res) => (err ? reject(err) : resolve(res!)));
      call.write(chunk({ sessionId: id, actor: 'assistant', text: 'final answer', lastChunk: true }));
    });
    t.like(await done, { revision: 2, dialogueIndex: 1 });
    t.is((await og.get(id)).currentResponse!.actorText, 'final answer');
  } finally {
    await idle.stop();
  }
});
