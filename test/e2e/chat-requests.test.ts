import test from 'ava';
import { Client, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { Actor, ChatRequest, ChatResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { decodeErrorInfo, decodeViolatedFields } from '../helpers/genie-stream.js';
import { createTenant, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { chatType, genie } from '../genie/fixtures.js';
import { eventually } from '../helpers/eventually.js';


/** A Chat stream whose responses, error and end a test can wait for. */
class Chat {
  readonly responses: ChatResponse[] = [];
  error: ServiceError | undefined;
  ended = false;
  readonly call;

  constructor(s: TestServer, tenant: Tenant, deadlineMs?: number) {
    this.call = s.genie.chat(tenant.md, deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs });
    this.call.on('data', (r: ChatResponse) => this.responses.push(r));
    this.call.on('error', (e: ServiceError) => (this.error = e));
    this.call.on('end', () => (this.ended = true));
  }

  write(r: Partial<ChatRequest>): void {
    this.call.write({ requestId: '', open: undefined, sendEvent: undefined, appendDialogue: undefined, ...r });
  }

  /** The answers to the requests after the open. */
  answers() {
    return this.responses.filter((r) => (r.ack && r.ack.requestId !== 'open') || r.error);
  }
}

async function setup() {
  const s = await startTestServer();
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(chatType);
  const sessionId = (await g.create('chat', {})).sessionId;
  return { s, tenant, sessionId };
}

const say = (requestId: string, actorInput: string): Partial<ChatRequest> => ({
  requestId,
  sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_UNSPECIFIED, actorInput, expectedRevision: undefined },
});

test.serial('Chat answers a request that fails the request checks with a per-request INVALID_ARGUMENT naming the field, and serves the next ones', async (t) => {
  const { s, tenant, sessionId } = await setup();
  try {
    const c = new Chat(s, tenant);
    c.write({ requestId: 'open', open: { sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
    c.write(say('r1', 'hello'));
    c.write(say('r2', 'nul\u0000inside'));
    c.write(say('bad\u0000id', 'fine'));
    c.write({ requestId: 'r4', appendDialogue: { actor: Actor.ACTOR_USER, actorText: 'another\u0000nul', expectedRevision: undefined } });
    c.write(say('r5', 'still served'));
    await eventually(() => c.answers().length === 5 || c.error !== undefined, 'five answers');
    t.is(c.error, undefined, 'the stream is still open');
    const [r1, r2, r3, r4, r5] = c.answers();
    t.is(r1!.ack?.requestId, 'r1');
    t.like(r2!.error, { requestId: 'r2', status: { code: status.INVALID_ARGUMENT } });
    t.regex(r2!.error!.status!.message, /^send_event\.actor_input: /);
    t.deepEqual(decodeViolatedFields(r2!.error!.status!), ['send_event.actor_input']);
    t.like(r3!.error, { requestId: '', status: { code: status.INVALID_ARGUMENT } }, 'an invalid request id is not echoed');
    t.regex(r3!.error!.status!.message, /^request_id: /);
    t.like(r4!.error, { requestId: 'r4', status: { code: status.INVALID_ARGUMENT } });
    t.regex(r4!.error!.status!.message, /^append_dialogue\.actor_text: /);
    t.deepEqual(decodeViolatedFields(r4!.error!.status!), ['append_dialogue.actor_text']);
    t.is(r5!.ack?.requestId, 'r5');
    t.is(r5!.ack?.revision, 3, 'only the valid requests were written');
    for (const a of [r2, r3, r4]) {
      t.notRegex(a!.error!.status!.message, /internal|Error|at .*\.ts/);
      t.like(decodeErrorInfo(a!.error!.status!), { domain: 'parley' }, 'every ChatError carries an ErrorInfo');
    }
    c.call.end();
    await eventually(() => c.ended || c.error !== undefined, 'the end of the chat');
    t.is(c.error, undefined);
  } finally {
    await s.stop();
  }
});

test.serial('Chat ends with INVALID_ARGUMENT, never INTERNAL, when there is no request to answer: an invalid open, or bytes that are no ChatRequest', async (t) => {
  const { s, tenant, sessionId } = await setup();
  try {
    const badOpen = new Chat(s, tenant);
    badOpen.write({ requestId: 'open', open: { sessionId: `${sessionId}\u0000`, afterRevision: undefined, afterDeltas: [], snapshot: undefined } });
    await eventually(() => badOpen.error !== undefined, 'the invalid open to end the stream');
    t.is(badOpen.error!.code, status.INVALID_ARGUMENT);
    t.deepEqual(violatedFields(badOpen.error!), ['open.session_id']);

    // A client that frames its own bytes: a valid open, then a length-delimited field cut short.
    const raw = new Client(s.address, credentials.createInsecure());
    try {
      const call = raw.makeBidiStreamRequest('/parley.genie.v1.GenieService/Chat', (b: Buffer) => b, (b: Buffer) => ChatResponse.decode(b), tenant.md);
      const responses: ChatResponse[] = [];
      let error: ServiceError | undefined;
      call.on('data', (r: ChatResponse) => responses.push(r));
      call.on('error', (e: ServiceError) => (error = e));
      call.write(Buffer.from(ChatRequest.encode({ requestId: 'open', open: { sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } }).finish()));
      await eventually(() => responses.some((r) => r.update), 'the replay after open');
      call.write(Buffer.from([0x0a, 0x10, 0x61]));
      await eventually(() => error !== undefined, 'the undecodable message to end the stream');
      t.is(error!.code, status.INVALID_ARGUMENT);
      t.deepEqual(violatedFields(error!), ['(request)']);
    } finally {
      raw.close();
    }
    await eventually(() => s.app.limits.accountsHolding === 0, 'both streams to give back their slots');
  } finally {
    await s.stop();
  }
});

test.serial('Chat on another tenant\'s session ends with NOT_FOUND even when the open fails while answers are still being written', async (t) => {
  // The open's NOT_FOUND used to end the call by emitting 'error' while the request loop was parked on Node's
  // stream iterator; the iterator destroyed the call in response, before its pending answer was flushed and the
  // status sent, and the client waited for its deadline. The window is a write in flight, so it is repeated.
  const { s, sessionId } = await setup();
  try {
    const other = await createTenant(s);
    for (let i = 0; i < 50; i++) {
      const c = new Chat(s, other, 5_000);
      c.write({ requestId: 'open', open: { sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
      for (let j = 0; j < 10; j++) c.write({ requestId: `r${j}` });
      await eventually(() => c.error !== undefined || c.ended, `the end of chat ${i}`);
      t.is(c.error?.code, status.NOT_FOUND, `chat ${i}: ${c.error?.details}`);
      for (const a of c.answers()) t.like(a.error, { code: status.INVALID_ARGUMENT });
    }
  } finally {
    await s.stop();
  }
});

test.serial('Chat answers its open first, with the revision the session was at, then replays, marks caught_up, and goes live', async (t) => {
  const { s, tenant, sessionId } = await setup();
  try {
    const g = genie(s, tenant);
    await g.send(sessionId, 'user_says', 'before the open');
    const c = new Chat(s, tenant);
    c.write({ requestId: 'open', open: { sessionId, afterRevision: undefined, afterDeltas: [], snapshot: undefined } });
    await eventually(() => c.responses.some((r) => r.update?.caughtUp) || c.error !== undefined, 'the caught_up marker');
    t.like(c.responses[0], { ack: { requestId: 'open', revision: 2 } }, 'the open is answered first, with the revision at open');
    t.deepEqual(
      c.responses.slice(1).map((r) => [r.update?.revision, r.update?.commit ? 'commit' : r.update?.caughtUp ? 'caught_up' : 'other']),
      [
        [1, 'commit'],
        [2, 'commit'],
        [2, 'caught_up'],
      ],
      'the replay, then one caught_up at the revision it reached',
    );
    c.write(say('r1', 'live'));
    await eventually(() => c.responses.some((r) => r.update?.revision === 3) && c.answers().length === 1, 'the live commit and its ack');
    t.is(c.responses.filter((r) => r.update?.caughtUp).length, 1, 'caught_up is sent once');
    t.like(c.answers()[0], { ack: { requestId: 'r1', revision: 3 } });

    // An open with after_revision at the head: acked, nothing to replay, caught_up at once.
    const at = new Chat(s, tenant);
    at.write({ requestId: 'open', open: { sessionId, afterRevision: 3, afterDeltas: [], snapshot: undefined } });
    await eventually(() => at.responses.length === 2 || at.error !== undefined, 'the ack and caught_up');
    t.like(at.responses[0], { ack: { requestId: 'open', revision: 3 } });
    t.like(at.responses[1], { update: { sessionId, revision: 3, caughtUp: {} } });
    for (const x of [c, at]) x.call.end();
    await eventually(() => c.ended && at.ended, 'the chats to end');
  } finally {
    await s.stop();
  }
});

test.serial('ChatError.status is the google.rpc.Status a unary call would carry: code, message, ErrorInfo reason, BadRequest', async (t) => {
  const { s, tenant, sessionId } = await setup();
  try {
    const c = new Chat(s, tenant);
    c.write({ requestId: 'open', open: { sessionId, afterRevision: undefined, afterDeltas: [], snapshot: undefined } });
    const huge = 'x'.repeat(1024 * 1024 + 1);
    c.write({ requestId: 'big', sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_USER, actorInput: huge, expectedRevision: undefined } });
    c.write({ requestId: 'big2', appendDialogue: { actor: Actor.ACTOR_USER, actorText: huge, expectedRevision: undefined } });
    c.write({ requestId: 'noactor', appendDialogue: { actor: Actor.ACTOR_UNSPECIFIED, actorText: 'hi', expectedRevision: undefined } });
    c.write({ requestId: 'zero', sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_USER, actorInput: 'hi', expectedRevision: 0 } });
    c.write({ requestId: 'stale', sendEvent: { eventName: 'user_says', actor: Actor.ACTOR_USER, actorInput: 'hi', expectedRevision: 7 } });
    c.write({ ...say('', 'hi'), requestId: 'x'.repeat(129) });
    await eventually(() => c.answers().length === 6 || c.error !== undefined, 'six answers');
    t.is(c.error, undefined);
    const [big, big2, noactor, zero, stale, longId] = c.answers().map((a) => a.error!);
    for (const [e, field] of [
      [big, 'send_event.actor_input'],
      [big2, 'append_dialogue.actor_text'],
    ] as const) {
      t.is(e!.status!.code, status.INVALID_ARGUMENT);
      t.like(decodeErrorInfo(e!.status!), { reason: 'FIELD_TOO_LARGE', domain: 'parley', metadata: { max_bytes: '1048576' } });
      t.deepEqual(decodeViolatedFields(e!.status!), [field]);
      t.true(e!.status!.message.length < 300, 'the text is not echoed');
    }
    t.is(noactor!.requestId, 'noactor');
    t.deepEqual(decodeViolatedFields(noactor!.status!), ['append_dialogue.actor']);
    t.regex(noactor!.status!.message, /must be one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);
    t.deepEqual(decodeViolatedFields(zero!.status!), ['send_event.expected_revision']);
    t.is(stale!.status!.code, status.ABORTED);
    t.like(decodeErrorInfo(stale!.status!), { reason: 'REVISION_MISMATCH', metadata: { current_revision: '1' } });
    t.is(longId!.requestId, '', 'an over-long request id is not echoed');
    t.deepEqual(decodeViolatedFields(longId!.status!), ['request_id']);
    t.is((await genie(s, tenant).get(sessionId)).revision, 1, 'nothing was written');
    c.call.end();
    await eventually(() => c.ended || c.error !== undefined, 'the end of the chat');
  } finally {
    await s.stop();
  }
});
