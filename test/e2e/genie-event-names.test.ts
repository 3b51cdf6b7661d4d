import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, type ChatResponse, type SessionUpdate, type StreamUtteranceResponse } from '../../src/gen/parley/genie/v1/genie.js';
import { chunk, decodeViolatedFields } from '../helpers/genie-stream.js';
import { createTenant, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';
import { genie, modelType } from '../genie/fixtures.js';

let s: TestServer;
let tenant: Tenant;
let g: ReturnType<typeof genie>;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  g = genie(s, tenant);
  await g.register(modelType({ jsonSchema: undefined }));
});
test.after.always(async () => {
  await s?.stop();
});

/** Event names no transition can carry (names are 1–100 of letters, digits, _ . : -). */
const BAD_EVENTS = ['', ' ', ' user_input', 'user_input ', '\t', 'événement', 'user input', '\uFEFFuser_input', 'e'.repeat(101), 'x'.repeat(100_000)];

/** Every read of a session, so a stored oddity cannot hide behind one of them. */
async function readsStillWork(t: any, sessionId: string, revision: number) {
  const got = await g.get(sessionId);
  t.is(got.revision, revision);
  for (let r = 1; r <= revision; r++) t.is((await g.get(sessionId, r)).revision, r);
  t.true((await g.list('', '', 1000)).sessions.some((x) => x.sessionId === sessionId));
  t.is(typeof (await g.format(sessionId, 1)), 'string');
  const updates: SessionUpdate[] = [];
  const watch = s.genie.watchSession({ sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined }, tenant.md);
  watch.on('data', (m: { update?: SessionUpdate }) => m.update && updates.push(m.update));
  const failed = new Promise<ServiceError>((resolve) => watch.on('error', resolve));
  await eventually(() => updates.filter((u) => u.commit).length === revision, 'the replay of every revision');
  watch.cancel();
  t.is((await failed).code, status.CANCELLED);
}

test('SendEvent: an empty, blank, padded, non-ASCII or over-long event is INVALID_ARGUMENT event_name, changes nothing, and every read still works', async (t) => {
  const { sessionId } = await g.create('qa');
  for (const event of BAD_EVENTS) {
    const err = (await t.throwsAsync(g.send(sessionId, event, 'hi', 'user'))) as ServiceError;
    t.is(err.code, status.INVALID_ARGUMENT, JSON.stringify(event.slice(0, 20)));
    t.deepEqual(violatedFields(err), ['event_name']);
    t.true(err.details.length < 200, 'the event is not echoed');
  }
  // A well-formed event the state machine does not have: FAILED_PRECONDITION, quoted briefly.
  const unknown = (await t.throwsAsync(g.send(sessionId, 'z'.repeat(100), 'hi', 'user'))) as ServiceError;
  t.is(unknown.code, status.FAILED_PRECONDITION);
  await readsStillWork(t, sessionId, 1);
  await g.send(sessionId, 'user_input', '', 'user'); // an empty actor_input is fine
  await readsStillWork(t, sessionId, 2);
});

test('Chat send_event: a bad event is INVALID_ARGUMENT on send_event.event_name, answered on the stream, which keeps serving', async (t) => {
  const { sessionId } = await g.create('qa');
  const responses: ChatResponse[] = [];
  const call = s.genie.chat(tenant.md);
  call.on('data', (r: ChatResponse) => responses.push(r));
  call.on('error', () => {});
  const none = { open: undefined, sendEvent: undefined, appendDialogue: undefined };
  call.write({ ...none, requestId: 'o', open: { sessionId, afterRevision: 0, afterDeltas: [], snapshot: undefined } });
  BAD_EVENTS.forEach((event, i) => call.write({ ...none, requestId: `bad${i}`, sendEvent: { eventName: event, actor: Actor.ACTOR_USER, actorInput: 'hi', expectedRevision: undefined } }));
  call.write({ ...none, requestId: 'ok', sendEvent: { eventName: 'user_input', actor: Actor.ACTOR_USER, actorInput: 'hi', expectedRevision: undefined } });
  await eventually(() => responses.some((r) => r.ack?.requestId === 'ok'), 'the ack of the good event');
  const errors = responses.flatMap((r) => (r.error ? [r.error] : []));
  t.deepEqual(errors.map((e) => e.requestId), BAD_EVENTS.map((_, i) => `bad${i}`));
  for (const e of errors) {
    t.is(e.status!.code, status.INVALID_ARGUMENT);
    t.regex(e.status!.message, /^send_event\.event_name: /);
    t.deepEqual(decodeViolatedFields(e.status!), ['send_event.event_name']);
    t.true(e.status!.message.length < 200);
  }
  t.is(responses.find((r) => r.ack?.requestId === 'ok')!.ack!.revision, 2);
  call.end();
  await readsStillWork(t, sessionId, 2);
});

function utterance(sessionId: string, event: string): Promise<StreamUtteranceResponse> {
  return new Promise((resolve, reject) => {
    const call = s.genie.streamUtterance(tenant.md, (err: ServiceError | null, res?: StreamUtteranceResponse) => (err ? reject(err) : resolve(res!)));
    call.write(chunk({ sessionId, actor: 'user', eventName: event, text: 'hello', lastChunk: true }));
    call.end();
  });
}

test('StreamUtterance: an empty event_name appends dialogue; any other bad one is INVALID_ARGUMENT event_name and nothing is written', async (t) => {
  const { sessionId } = await g.create('qa');
  for (const event of BAD_EVENTS.slice(1)) {
    const err = (await t.throwsAsync(utterance(sessionId, event))) as ServiceError;
    t.is(err.code, status.INVALID_ARGUMENT, JSON.stringify(event.slice(0, 20)));
    t.deepEqual(violatedFields(err), ['event_name']);
  }
  await readsStillWork(t, sessionId, 1);
  const appended = await utterance(sessionId, '');
  t.is(appended.revision, 2);
  t.is(appended.state, 'awaiting_question', 'no event: the state stays');
  t.is(appended.dialogueIndex, 1);
  const sent = await utterance(sessionId, 'user_input');
  t.is(sent.state, 'awaiting_answer');
  t.is(sent.dialogueIndex, 2);
  const read = await g.get(sessionId);
  t.deepEqual(read.dialogue.map((d) => d.eventName), ['', 'user_input']);
  await readsStillWork(t, sessionId, 3);
});
