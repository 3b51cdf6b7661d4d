import { eventually } from '../helpers/eventually.js';
import test from 'ava';
import http2 from 'node:http2';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import type { Config } from '../../src/config.js';
import { GenieServiceClient, type ChatRequest, type ChatResponse, type StreamUtteranceResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { REFUSALS } from '../../src/metrics.js';
import { createTenant, errorInfo, retryDelayMs, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { Watcher } from '../helpers/watch.js';
import { chatType, genie } from '../genie/fixtures.js';
import { chunk } from '../helpers/genie-stream.js';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { decodeErrorInfo } from '../helpers/genie-stream.js';


/** A server with `overrides` and tenants A and B, each with the chat type and one session. */
async function setup(overrides: Partial<Config>) {
  const s = await startTestServer(overrides);
  const tenant = async () => {
    const t = await createTenant(s);
    const g = genie(s, t);
    await g.register(chatType);
    const sessionId = (await g.create('chat', {})).sessionId;
    return { ...t, g, sessionId };
  };
  return { s, a: await tenant(), b: await tenant() };
}

const waitFor = (cond: () => boolean, what: string) => eventually(cond, what);

/** Waits for a watcher's replay of the session's creation: the stream is open and counted. */
async function watching(s: TestServer, tenant: Tenant, sessionId: string, client = s.genie): Promise<Watcher> {
  const w = new Watcher(client, tenant.md, sessionId, 0);
  await w.until((x) => x.revisions().length === 1, 'the replay of the creation');
  return w;
}

/** The error a stream fails with (it must fail). */
async function failure(w: Watcher): Promise<ServiceError> {
  await w.until((x) => x.error !== undefined, 'the stream to fail').catch(() => {});
  if (!w.error) throw new Error('the stream did not fail');
  return w.error;
}

function utterance(s: TestServer, tenant: Tenant) {
  let resolve!: (r: StreamUtteranceResponse) => void;
  let reject!: (e: ServiceError) => void;
  const done = new Promise<StreamUtteranceResponse>((a, b) => ((resolve = a), (reject = b)));
  let settled = false;
  done.then(
    () => (settled = true),
    () => (settled = true),
  );
  const call = s.genie.streamUtterance(tenant.md, (err, res) => (err ? reject(err) : resolve(res!)));
  const write = (c: Partial<{ sessionId: string; actor: string; text: string; lastChunk: boolean }>) => call.write(chunk(c));
  return { call, done, write, settled: () => settled };
}

/** A Chat stream whose responses, error and end a test can wait for. */
class Chat {
  readonly responses: ChatResponse[] = [];
  error: ServiceError | undefined;
  ended = false;
  readonly call;

  constructor(s: TestServer, tenant: Tenant) {
    this.call = s.genie.chat(tenant.md);
    this.call.on('data', (r: ChatResponse) => this.responses.push(r));
    this.call.on('error', (e: ServiceError) => (this.error = e));
    this.call.on('end', () => (this.ended = true));
  }

  write(r: Partial<ChatRequest>): void {
    this.call.write({ requestId: '', open: undefined, sendEvent: undefined, appendDialogue: undefined, ...r });
  }
}

test.serial('STREAM_LIMIT: tenant A at its stream limit is refused, on every streaming RPC, while tenant B still opens streams', async (t) => {
  const { s, a, b } = await setup({ accountMaxStreams: 3 });
  try {
    const open = [await watching(s, a, a.sessionId), await watching(s, a, a.sessionId)];
    const prompt = (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: a.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, a.md)).prompt!;
    const promptWatch = s.prompt.watchPrompt({ promptId: prompt.id, afterRevision: 0 }, a.md);
    promptWatch.on('data', () => {});
    promptWatch.on('error', () => {});
    await waitFor(() => s.app.limits.streamsOf(a.accountId) === 3, 'three open streams of A');

    const refused = await failure(new Watcher(s.genie, a.md, a.sessionId, 0));
    t.is(refused.code, status.RESOURCE_EXHAUSTED);
    t.deepEqual(errorInfo(refused), { reason: 'STREAM_LIMIT', domain: 'parley', metadata: { max_streams: '3' } });
    const u = utterance(s, a);
    u.write({ sessionId: a.sessionId, actor: 'assistant', text: 'x' });
    const e2 = await t.throwsAsync<ServiceError>(u.done);
    t.is(errorInfo(e2!)?.reason, 'STREAM_LIMIT', 'StreamUtterance counts too');
    const c = new Chat(s, a);
    c.write({ open: { sessionId: a.sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
    await waitFor(() => c.error !== undefined, 'the Chat refusal');
    t.is(errorInfo(c.error!)?.reason, 'STREAM_LIMIT', 'Chat counts too');
    t.is(s.app.limits.streamsOf(a.accountId), 3, 'refused streams hold nothing');

    const others = await Promise.all([1, 2, 3].map(() => watching(s, b, b.sessionId)));
    t.is(s.app.limits.streamsOf(b.accountId), 3, 'B is not held back by A');

    open[0]!.cancel();
    await waitFor(() => s.app.limits.streamsOf(a.accountId) === 2, 'the cancelled stream to give back its slot');
    const again = await watching(s, a, a.sessionId);
    t.is(s.app.limits.streamsOf(a.accountId), 3, 'a freed slot can be used again');

    for (const w of [open[1]!, again, ...others]) w.cancel();
    promptWatch.cancel();
    await waitFor(() => s.app.limits.accountsHolding === 0, 'every stream to give back its slot');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'STREAM_LIMIT' }), 3);
  } finally {
    await s.stop();
  }
});

test.serial('RATE_LIMIT: rate-limited tenant A gets RESOURCE_EXHAUSTED with a retry delay, on unary calls and streams, while tenant B is served', async (t) => {
  // Hardly any refill during the test: what A may do is its burst.
  const { s, a, b } = await setup({ accountRequestRate: 0.01, accountRequestBurst: 10 });
  try {
    let refused: ServiceError | undefined;
    let served = 0;
    while (!refused && served < 20) {
      await a.g.get(a.sessionId).then(
        () => served++,
        (e: ServiceError) => (refused = e),
      );
    }
    t.is(served, 8, 'A was served the rest of its burst of 10 (setup took 2), then refused');
    t.is(refused?.code, status.RESOURCE_EXHAUSTED);
    t.deepEqual(errorInfo(refused!), { reason: 'RATE_LIMIT', domain: 'parley', metadata: { requests_per_second: '0.01', burst: '10' } });
    const delay = retryDelayMs(refused!);
    t.true(delay !== undefined && delay > 0 && delay <= 100_000, `retry delay ${delay} ms`);

    const stream = await failure(new Watcher(s.genie, a.md, a.sessionId, 0));
    t.is(errorInfo(stream)?.reason, 'RATE_LIMIT', 'opening a stream is a request too');

    t.is((await b.g.get(b.sessionId)).revision, 1, 'B is served');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'RATE_LIMIT' }), 2);
    t.is(s.app.limits.accountsHolding, 0, 'a refused stream holds no slot');
  } finally {
    await s.stop();
  }
});

test.serial('RATE_LIMIT: a request on a Chat stream takes a token, and a refused one is answered on the stream, which stays open', async (t) => {
  const { s, a } = await setup({ accountRequestRate: 0.01, accountRequestBurst: 5 });
  try {
    // Setup took 2 tokens and opening the stream takes 1: two requests go through, the third is refused.
    const c = new Chat(s, a);
    c.write({ requestId: 'open', open: { sessionId: a.sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
    for (const id of ['r1', 'r2', 'r3']) c.write({ requestId: id, sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_UNSPECIFIED, actorInput: id, expectedRevision: undefined } });
    await waitFor(() => c.responses.filter((r) => r.ack || r.error).length === 4, 'the ack of the open and three answers');
    t.deepEqual(
      c.responses.filter((r) => r.ack).map((r) => r.ack!.requestId),
      ['open', 'r1', 'r2'],
    );
    const err = c.responses.find((r) => r.error)?.error;
    t.is(err?.requestId, 'r3');
    t.is(err?.status?.code, status.RESOURCE_EXHAUSTED);
    t.is(decodeErrorInfo(err!.status!)?.reason, 'RATE_LIMIT', 'the ChatError carries the ErrorInfo a unary call would');
    t.is(c.error, undefined, 'the stream is still open');
    c.call.end();
    await waitFor(() => c.ended || c.error !== undefined, 'the end of the chat');
    await waitFor(() => s.app.limits.accountsHolding === 0, 'the chat to give back its slot');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'RATE_LIMIT' }), 1);
  } finally {
    await s.stop();
  }
});

test.serial('CLIENT_STREAM_IDLE: a stalled StreamUtterance is ended after the idle time, commits nothing, and releases its bytes and slot', async (t) => {
  const { s, a } = await setup({ clientStreamIdleMs: 300 });
  try {
    const w = await watching(s, a, a.sessionId);
    const u = utterance(s, a);
    u.write({ sessionId: a.sessionId, actor: 'assistant', text: 'half a thought' });
    await w.until((x) => x.updates.some((v) => v.delta), 'the delta');
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 14, 'the chunk is held while the worker stalls');

    // The worker now sends nothing more: the server ends the stream.
    const e = await t.throwsAsync<ServiceError>(u.done);
    t.is(e?.code, status.RESOURCE_EXHAUSTED);
    t.deepEqual(errorInfo(e!), { reason: 'CLIENT_STREAM_IDLE', domain: 'parley', metadata: { idle_timeout_ms: '300' } });
    await w.until((x) => x.updates.some((v) => v.aborted), 'the aborted update');
    t.is(w.updates.find((v) => v.aborted)!.aborted!.utteranceId, w.updates.find((v) => v.delta)!.delta!.utteranceId);
    t.is((await a.g.get(a.sessionId)).revision, 1, 'nothing was committed');
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 0, 'its bytes were released');
    t.is(s.app.limits.streamsOf(a.accountId), 1, 'only the watcher holds a slot');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'CLIENT_STREAM_IDLE' }), 1);
    u.call.end();
    w.cancel();
    await waitFor(() => s.app.limits.accountsHolding === 0, 'the watcher to give back its slot');
  } finally {
    await s.stop();
  }
});

test.serial('CLIENT_STREAM_IDLE: a Chat whose gateway sends no request is ended, though updates flow out; so is one that never opens', async (t) => {
  const { s, a } = await setup({ clientStreamIdleMs: 400 });
  try {
    const c = new Chat(s, a);
    c.write({ requestId: 'open', open: { sessionId: a.sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
    await waitFor(() => c.responses.some((r) => r.update?.revision === 1), 'the replay');
    await a.g.send(a.sessionId, 'llm_says', 'an update that is not a request');
    await waitFor(() => c.error !== undefined, 'the idle Chat to be ended');
    t.is(c.error!.code, status.RESOURCE_EXHAUSTED);
    t.is(errorInfo(c.error!)?.reason, 'CLIENT_STREAM_IDLE');

    const silent = new Chat(s, a);
    await waitFor(() => silent.error !== undefined, 'the Chat that never opened to be ended');
    t.is(errorInfo(silent.error!)?.reason, 'CLIENT_STREAM_IDLE');
    await waitFor(() => s.app.limits.accountsHolding === 0, 'both chats to give back their slots');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'CLIENT_STREAM_IDLE' }), 2);
  } finally {
    await s.stop();
  }
});

test.serial('UTTERANCE_BYTES_LIMIT and UTTERANCE_SIZE_LIMIT: text in flight is bounded per account and per utterance; B streams meanwhile', async (t) => {
  const { s, a, b } = await setup({ maxUtteranceBytes: 1024, accountMaxUtteranceBytes: 2048 });
  try {
    const w = await watching(s, a, a.sessionId);
    const kilo = 'k'.repeat(1000);
    const u1 = utterance(s, a);
    u1.write({ sessionId: a.sessionId, actor: 'assistant', text: kilo });
    const u2 = utterance(s, a);
    u2.write({ sessionId: a.sessionId, actor: 'assistant', text: kilo });
    await w.until((x) => x.updates.filter((v) => v.delta).length === 2, 'two deltas');
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 2000);

    const u3 = utterance(s, a);
    u3.write({ sessionId: a.sessionId, actor: 'assistant', text: 'é'.repeat(25) }); // 50 bytes of UTF-8
    const e3 = await t.throwsAsync<ServiceError>(u3.done);
    t.is(e3?.code, status.RESOURCE_EXHAUSTED);
    t.deepEqual(errorInfo(e3!), { reason: 'UTTERANCE_BYTES_LIMIT', domain: 'parley', metadata: { max_bytes: '2048' } });

    const ub = utterance(s, b);
    ub.write({ sessionId: b.sessionId, actor: 'assistant', text: kilo, lastChunk: true });
    ub.call.end();
    t.is((await ub.done).revision, 2, "B's utterance is not held back by A's");

    u1.write({ text: 'k'.repeat(25) });
    const e1 = await t.throwsAsync<ServiceError>(u1.done);
    t.deepEqual(errorInfo(e1!), { reason: 'UTTERANCE_SIZE_LIMIT', domain: 'parley', metadata: { max_bytes: '1024' } });
    await w.until((x) => x.updates.some((v) => v.aborted), 'the aborted update of the oversized utterance');
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 1000, 'the refused utterance released its bytes');

    u2.write({ text: '!', lastChunk: true });
    u2.call.end();
    const r2 = await u2.done;
    t.is((await a.g.get(a.sessionId)).currentResponse!.actorText, `${kilo}!`);
    t.is(r2.revision, 2, 'only the utterance within its limits was committed');
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 0, 'a committed utterance releases its bytes');
    for (const u of [u1, u2, u3, ub]) u.call.end();
    w.cancel();
    await waitFor(() => s.app.limits.accountsHolding === 0, 'every slot and byte to be given back');
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'UTTERANCE_BYTES_LIMIT' }), 1);
    t.is(await s.app.metrics.value(REFUSALS, { reason: 'UTTERANCE_SIZE_LIMIT' }), 1);
  } finally {
    await s.stop();
  }
});

test.serial('shutdown releases every slot and byte, and its UNAVAILABLE echoes nothing of the request', async (t) => {
  const { s, a } = await setup({});
  let stopped = false;
  try {
    const w = await watching(s, a, a.sessionId);
    const u = utterance(s, a);
    u.write({ sessionId: a.sessionId, actor: 'assistant', text: 'in flight' });
    await w.until((x) => x.updates.some((v) => v.delta), 'the delta');
    t.is(s.app.limits.streamsOf(a.accountId), 2);
    t.is(s.app.limits.utteranceBytesOf(a.accountId), 9);
    await s.stop();
    stopped = true;
    const e = await failure(w);
    t.is(e.code, status.UNAVAILABLE);
    t.is(errorInfo(e)?.reason, 'SERVER_SHUTTING_DOWN');
    t.deepEqual(e.metadata.get('authorization'), [], 'the API key is not sent back in the trailers');
    await t.throwsAsync(u.done);
    await waitFor(() => s.app.limits.accountsHolding === 0, 'every slot and byte to be given back');
  } finally {
    if (!stopped) await s.stop();
  }
});

test.serial('grpc.max_concurrent_streams: one connection has at most that many streams; the client queues the rest', async (t) => {
  const { s, a } = await setup({ maxStreamsPerConnection: 2 });
  try {
    const session = http2.connect(`http://${s.address}`);
    session.on('error', () => {});
    const settings = await new Promise<http2.Settings>((resolve) => session.once('remoteSettings', resolve));
    session.close();
    t.is(settings.maxConcurrentStreams, 2, 'the server announces the bound');

    const client = new GenieServiceClient(s.address, credentials.createInsecure());
    try {
      const first = [await watching(s, a, a.sessionId, client), await watching(s, a, a.sessionId, client)];
      const third = new Watcher(client, a.md, a.sessionId, 0);
      const elsewhere = await watching(s, a, a.sessionId);
      t.is(s.app.limits.streamsOf(a.accountId), 3, 'two streams on the full connection, one on another');
      t.deepEqual(third.updates, [], 'the third stream on the full connection waits');
      first[0]!.cancel();
      await third.until((x) => x.revisions().length === 1, 'the queued stream to start once a slot is free');
      for (const w of [first[1]!, third, elsewhere]) w.cancel();
      await waitFor(() => s.app.limits.accountsHolding === 0, 'every stream to give back its slot');
    } finally {
      client.close();
    }
  } finally {
    await s.stop();
  }
});

test.serial('every error through the server carries an ErrorInfo; a bad request keeps its BadRequest beside it', async (t) => {
  const { s, a } = await setup({});
  try {
    const bad = await t.throwsAsync<ServiceError>(a.g.get('not-a-uuid'));
    t.is(bad?.code, status.INVALID_ARGUMENT);
    t.deepEqual(violatedFields(bad!), ['session_id']);
    t.deepEqual(errorInfo(bad!), { reason: 'INVALID_ARGUMENT', domain: 'parley', metadata: {} });
    const missing = await t.throwsAsync<ServiceError>(a.g.get('00000000-0000-4000-8000-000000000000'));
    t.deepEqual(errorInfo(missing!), { reason: 'SESSION_NOT_FOUND', domain: 'parley', metadata: {} });
    const anonymous = await t.throwsAsync<ServiceError>(rpc(s.genie, s.genie.getSession, { sessionId: a.sessionId, revision: undefined }));
    t.is(anonymous?.code, status.UNAUTHENTICATED);
    t.is(errorInfo(anonymous!)?.reason, 'CREDENTIALS_MISSING');
  } finally {
    await s.stop();
  }
});
