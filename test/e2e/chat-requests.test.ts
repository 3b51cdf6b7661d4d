import test from 'ava';
import { Client, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { ChatRequest, ChatResponse } from '../../src/gen/parley/genie/v1/genie.js';
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

  answers() {
    return this.responses.filter((r) => r.ack || r.error);
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

const say = (requestId: string, actorInput: string): Partial<ChatRequest> => ({ requestId, sendEvent: { event: 'user_says', actor: '', actorInput, expectedRevision: 0 } });

test.serial('Chat answers a request that fails the request checks with a per-request INVALID_ARGUMENT naming the field, and serves the next ones', async (t) => {
  const { s, tenant, sessionId } = await setup();
  try {
    const c = new Chat(s, tenant);
    c.write({ requestId: 'open', open: { sessionId, afterRevision: 0 } });
    c.write(say('r1', 'hello'));
    c.write(say('r2', 'nul\u0000inside'));
    c.write(say('bad\u0000id', 'fine'));
    c.write({ requestId: 'r4', appendDialogue: { actor: 'user', actorText: 'another\u0000nul', expectedRevision: 0 } });
    c.write(say('r5', 'still served'));
    await eventually(() => c.answers().length === 5 || c.error !== undefined, 'five answers');
    t.is(c.error, undefined, 'the stream is still open');
    const [r1, r2, r3, r4, r5] = c.answers();
    t.is(r1!.ack?.requestId, 'r1');
    t.like(r2!.error, { requestId: 'r2', code: status.INVALID_ARGUMENT });
    t.regex(r2!.error!.message, /^send_event\.actor_input: /);
    t.like(r3!.error, { requestId: '', code: status.INVALID_ARGUMENT }, 'an invalid request id is not echoed');
    t.regex(r3!.error!.message, /^request_id: /);
    t.like(r4!.error, { requestId: 'r4', code: status.INVALID_ARGUMENT });
    t.regex(r4!.error!.message, /^append_dialogue\.actor_text: /);
    t.is(r5!.ack?.requestId, 'r5');
    t.is(r5!.ack?.revision, 3, 'only the valid requests were written');
    for (const a of [r2, r3, r4]) t.notRegex(a!.error!.message, /internal|Error|at .*\.ts/);
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
    badOpen.write({ requestId: 'open', open: { sessionId: `${sessionId}\u0000`, afterRevision: 0 } });
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
      call.write(Buffer.from(ChatRequest.encode({ requestId: 'open', open: { sessionId, afterRevision: 0 } }).finish()));
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
      c.write({ requestId: 'open', open: { sessionId, afterRevision: 0 } });
      for (let j = 0; j < 10; j++) c.write({ requestId: `r${j}` });
      await eventually(() => c.error !== undefined || c.ended, `the end of chat ${i}`);
      t.is(c.error?.code, status.NOT_FOUND, `chat ${i}: ${c.error?.details}`);
      for (const a of c.answers()) t.like(a.error, { code: status.INVALID_ARGUMENT });
    }
  } finally {
    await s.stop();
  }
});
