import test from 'ava';
import http2 from 'node:http2';
import type { ClientDuplexStream, ClientReadableStream, ClientWritableStream } from '@grpc/grpc-js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { chatType, genie } from '../genie/fixtures.js';
import { eventually } from '../helpers/eventually.js';
import { WatchSessionRequest } from '../../src/gen/parley/genie/v1/genie.js';
import { chunk } from '../helpers/genie-stream.js';


/** A server whose stop has room to wait (a long grace), a tenant with a session and a prompt. */
async function setup() {
  const s = await startTestServer({ accountMaxStreams: 1000, shutdownGraceMs: 10_000 });
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(chatType);
  const sessionId = (await g.create('chat', {})).sessionId;
  const openPrompt = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
  const promptId = (await rpc(s.prompt, s.prompt.openPrompt, openPrompt, tenant.md)).prompt!.id;
  return { s, tenant, ids: { sessionId, promptId } };
}

type Ids = { sessionId: string; promptId: string };
type Call = ClientReadableStream<unknown> | ClientDuplexStream<any, unknown> | ClientWritableStream<any>;

/** Each streaming RPC, opened as a client would, up to its first read of Postgres. */
const streams: Record<string, (s: TestServer, t: Tenant, ids: Ids) => Call> = {
  WatchSession: (s, t, { sessionId }) => s.genie.watchSession({ sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined }, t.md),
  WatchPrompt: (s, t, { promptId }) => s.prompt.watchPrompt({ promptId, afterRevision: 0 }, t.md),
  Chat: (s, t, { sessionId }) => {
    const c = s.genie.chat(t.md);
    c.write({ requestId: 'open', open: { sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
    return c;
  },
  StreamUtterance: (s, t, { sessionId }) => {
    const c = s.genie.streamUtterance(t.md, () => {});
    c.write(chunk({ sessionId, actor: 'assistant', text: 'half' }));
    return c;
  },
};

function open(s: TestServer, tenant: Tenant, ids: Ids, name: string): Call {
  const call = streams[name]!(s, tenant, ids);
  call.on('error', () => {});
  call.on('data', () => {});
  return call;
}

/** stop() with nothing left to wait for: well inside the grace period it would otherwise wait out. */
async function stopQuickly(t: { true(v: boolean, m: string): void }, s: TestServer): Promise<void> {
  const started = Date.now();
  await s.app.stop();
  const ms = Date.now() - started;
  t.true(ms < 5_000, `stop took ${ms} ms`);
  await s.stop();
}

test.serial('streams cancelled while their first read waits on Postgres give back their slots at once, then end, and stop() is quick', async (t) => {
  const { s, tenant, ids } = await setup();
  const names = Object.keys(streams);
  const perKind = 5;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  // Every first read (the session's or the prompt's head) waits behind this lock.
  const holder = s.app.db.transaction(async (trx) => {
    await trx.raw('LOCK TABLE genie_sessions, prompts IN ACCESS EXCLUSIVE MODE');
    locked();
    await held;
  });
  try {
    await isLocked;
    const calls = names.flatMap((name) => Array.from({ length: perKind }, () => open(s, tenant, ids, name)));
    await eventually(() => s.app.limits.streamsOf(tenant.accountId) === calls.length, 'every stream to be admitted and parked on its read');
    for (const c of calls) c.cancel();
    await eventually(() => s.app.limits.streamsOf(tenant.accountId) === 0, 'the cancelled streams to give back their slots while their reads still wait');
    t.is(s.app.server.calls.size, 0, 'shutdown has no cancelled stream to wait for');
  } finally {
    release();
    await holder;
  }
  // Once their reads return, the handlers see the cancellation: no bus subscription is left behind.
  await eventually(() => s.app.store.bus.subscribedChannels() === 0 && s.app.limits.accountsHolding === 0, 'the handlers to wind down: unsubscribed, utterance bytes released');
  await stopQuickly(t, s);
});

for (const name of Object.keys(streams)) {
  test.serial(`${name}: streams cancelled at any moment after they open (same tick, next tick, after a message) give back their slots, and stop() is quick`, async (t) => {
    const { s, tenant, ids } = await setup();
    const moments: Array<(c: Call) => void> = [
      (c) => c.cancel(),
      (c) => process.nextTick(() => c.cancel()),
      (c) => setImmediate(() => c.cancel()),
      (c) => setTimeout(() => c.cancel(), 1),
      // StreamUtterance answers only at its end: cancel it once a second chunk has gone out instead.
      name === 'StreamUtterance'
        ? (c) => (c as ClientWritableStream<any>).write(chunk({ text: 'more' }), () => c.cancel())
        : (c) => c.once('data', () => c.cancel()),
    ];
    for (let i = 0; i < 40; i++) moments[i % moments.length]!(open(s, tenant, ids, name));
    await eventually(() => s.app.limits.accountsHolding === 0 && s.app.server.calls.size === 0, 'every stream to give back its slot');
    await eventually(() => s.app.store.bus.subscribedChannels() === 0, 'every subscription to close');
    await stopQuickly(t, s);
  });
}

test('WatchSession of a client that stops reading and never resets the stream is released at its deadline', async (t) => {
  // grpc-js tells the handler of a passed deadline only once its DEADLINE_EXCEEDED has gone out, and that status
  // waits behind the updates buffered for the client. A client with a flow-control window of zero reads none of
  // them: the watch, its call and its stream slot used to be held for as long as the connection lived.
  const { s, tenant, ids } = await setup();
  const client = http2.connect(`http://${s.address}`, { settings: { initialWindowSize: 0 } });
  try {
    const body = WatchSessionRequest.encode({ sessionId: ids.sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined }).finish();
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const stream = client.request({
      ':method': 'POST',
      ':path': '/parley.genie.v1.GenieService/WatchSession',
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': '1S',
      authorization: String(tenant.md.get('authorization')[0]),
    });
    stream.on('error', () => {});
    stream.end(frame);
    await eventually(() => s.app.limits.accountsHolding === 1, 'the watch to hold its stream slot');
    await eventually(() => s.app.server.calls.size === 0 && s.app.limits.accountsHolding === 0, 'the server to release the watch at its deadline', 10_000);
    t.false(stream.closed, 'the client neither read nor reset the stream');
  } finally {
    client.destroy();
    await s.stop();
  }
});
