import test from 'ava';
import { AppError } from '../../src/errors.js';
import { GenieCache } from '../../src/genie/cache.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { GenieUseCases } from '../../src/genie/service.js';
import type { ModelTypeDef } from '../../src/genie/model-type.js';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { MemoryGenieStore } from './memory-store.js';

const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acct' };
const qa: ModelTypeDef = {
  name: 'qa',
  schemaVersion: 1,
  jsonSchema: { type: 'object', properties: { topic: { type: 'string' } } },
  stateMachine: {
    states: ['asking', 'answering'],
    initialState: 'asking',
    transitions: [
      { fromState: 'asking', event: 'user_input', toState: 'answering', actor: 'user' },
      { fromState: 'answering', event: 'ai_response', toState: 'asking', actor: 'assistant' },
    ],
  },
  upgrades: [],
  cacheTtlSeconds: 60,
  sessionTtlSeconds: 0,
};

/** The use cases over the in-memory stores and fast store: no database anywhere. */
function world() {
  const store = new MemoryGenieStore();
  const kv = new MemoryKv();
  const bus = new MemoryBus();
  const genie = new GenieUseCases({ types: store, sessions: store, cache: new GenieCache(kv, bus), unitOfWork: store, bus });
  return { genie, store, kv, bus };
}

async function session(genie: GenieUseCases) {
  await genie.modelTypes.register(caller, qa);
  return (await genie.createSession(caller, 'qa', { topic: 'tax' })).session;
}

test('registerModelType stores a version, and the same version again is ALREADY_EXISTS', async (t) => {
  const { genie } = world();
  const row = await genie.modelTypes.register(caller, qa);
  t.like(row, { name: 'qa', schemaVersion: 1 });
  t.is((await genie.modelTypes.get(caller, 'qa', undefined)).schemaVersion, 1);
  const again = await t.throwsAsync(genie.modelTypes.register(caller, qa), { instanceOf: AppError });
  t.is(again?.code, 'ALREADY_EXISTS');
});

test('createSession starts in the initial state at revision 1 and checks the fields against the schema', async (t) => {
  const { genie } = world();
  const s = await session(genie);
  t.like(s, { modelType: 'qa', state: 'asking', revision: 1, fields: { topic: 'tax' } });
  const bad = await t.throwsAsync(genie.createSession(caller, 'qa', { topic: 7 }), { instanceOf: AppError });
  t.is(bad?.code, 'INVALID_ARGUMENT');
  t.deepEqual(
    bad?.violations.map((v) => v.field),
    ['fields.topic'],
  );
});

test('sendEvent takes an allowed transition and refuses another with FAILED_PRECONDITION TRANSITION_NOT_ALLOWED', async (t) => {
  const { genie } = world();
  const s = await session(genie);
  const sent = await genie.sendEvent(caller, { sessionId: s.id, event: 'user_input', actor: undefined, actorInput: 'how much?' });
  t.like(sent, { previousState: 'asking', view: { session: { state: 'answering', revision: 2, actor: 'user', dialogueLength: 1 } } });
  t.like(sent.element, { index: 1, actor: 'user', event: 'user_input', textBytes: 9 });
  const refused = await t.throwsAsync(genie.sendEvent(caller, { sessionId: s.id, event: 'user_input', actor: 'user', actorInput: 'again' }), { instanceOf: AppError });
  t.is(refused?.code, 'FAILED_PRECONDITION');
  t.is(refused?.reason, 'TRANSITION_NOT_ALLOWED');
  t.is((await genie.getSession(caller, s.id, undefined)).session.revision, 2, 'the refused event committed nothing');
});

test('a write at a stale expected_revision is ABORTED and writes nothing', async (t) => {
  const { genie } = world();
  const s = await session(genie);
  await genie.appendDialogue(caller, { sessionId: s.id, actor: 'system', actorText: 'note' });
  const stale = await t.throwsAsync(genie.appendDialogue(caller, { sessionId: s.id, actor: 'system', actorText: 'late', expectedRevision: 1 }), { instanceOf: AppError });
  t.is(stale?.code, 'ABORTED');
  t.is(stale?.reason, 'REVISION_MISMATCH');
  const now = await genie.getSession(caller, s.id, undefined);
  t.is(now.session.revision, 2);
  t.deepEqual(
    now.dialogue?.map((d) => d.actorText),
    ['note'],
  );
});

test('a read fills the hot copy, and every write advances it, so the read after a write is a hit', async (t) => {
  const { genie, store, kv } = world();
  const s = await session(genie);
  t.like(await hotCopyOf(kv, s.id), { revision: 1, texts: [] }, 'a new session is cached as it is created');
  await kv.clear();
  await genie.getSession(caller, s.id, undefined);
  t.truthy(await hotCopyOf(kv, s.id), 'the read filled the hot copy');
  await genie.getSession(caller, s.id, undefined); // the process caches the type's versions here
  const reads = store.typeReads;
  t.is((await genie.getSession(caller, s.id, undefined)).session.revision, 1);
  t.is(store.typeReads, reads, 'the hot read touched no store');
  await genie.appendDialogue(caller, { sessionId: s.id, actor: 'user', actorText: 'hi' });
  t.like(await hotCopyOf(kv, s.id), { revision: 2, texts: ['hi'] }, 'the write advanced the copy');
  const after = store.typeReads;
  t.is((await genie.getSession(caller, s.id, undefined)).session.revision, 2);
  t.is(store.typeReads, after, 'the read after the write was a hit');
});

test('a cache or bus failure after the commit does not fail the write', async (t) => {
  const { genie, kv, bus } = world();
  const s = await session(genie);
  await genie.getSession(caller, s.id, undefined);
  const down = async () => {
    throw new Error('redis is down');
  };
  kv.fence = down;
  bus.publish = down;
  const sent = await genie.sendEvent(caller, { sessionId: s.id, event: 'user_input', actor: 'user', actorInput: 'q' });
  t.is(sent.view.session.revision, 2);
  const updated = await genie.updateSession(caller, s.id, { paths: [], values: { actor: '', actorInput: '', expireTime: undefined }, fieldsPatch: { topic: 'vat' } }, undefined);
  t.true(updated.changed);
  t.is(updated.view.session.revision, 3);
  await t.notThrowsAsync(genie.modelTypes.register(caller, { ...qa, schemaVersion: 2 }));
});

test('a repeated request id replays the first answer and writes nothing', async (t) => {
  const { genie } = world();
  const s = await session(genie);
  const requestId = '00000000-0000-4000-8000-00000000000a';
  const first = await genie.sendEvent(caller, { sessionId: s.id, event: 'user_input', actor: 'user', actorInput: 'q', requestId });
  const again = await genie.sendEvent(caller, { sessionId: s.id, event: 'user_input', actor: 'user', actorInput: 'q', requestId });
  t.is(again.view.replayed, true);
  t.is(again.previousState, first.previousState);
  t.is(again.view.session.revision, 2);
  t.is((await genie.getSession(caller, s.id, undefined)).session.revision, 2);
});

test('eraseEndUser tombstones the end user\'s sessions (forks included) batch by batch, counts their content, and leaves the rest', async (t) => {
  const { genie } = world();
  await genie.modelTypes.register(caller, qa);
  const a = (await genie.createSession(caller, 'qa', { topic: 'a' }, undefined, undefined, 'eu-1')).session;
  await genie.sendEvent(caller, { sessionId: a.id, event: 'user_input', actor: undefined, actorInput: 'hello' });
  const fork = (await genie.forkSession(caller, a.id, undefined)).session;
  t.is(fork.endUserId, 'eu-1');
  const b = (await genie.createSession(caller, 'qa', { topic: 'b' }, undefined, undefined, 'eu-1')).session;
  const other = (await genie.createSession(caller, 'qa', { topic: 'c' }, undefined, undefined, 'eu-2')).session;
  const none = (await genie.createSession(caller, 'qa', { topic: 'd' })).session;
  const elsewhere = { ...caller, accountId: 'other' };
  await genie.modelTypes.register(elsewhere, qa);
  const theirs = (await genie.createSession(elsewhere, 'qa', { topic: 'e' }, undefined, undefined, 'eu-1')).session;

  const report = await genie.eraseEndUser(caller, 'eu-1', 2);
  t.deepEqual(report, { sessions: 3, dialogue: 2, revisions: 4, secondary: 0, requestIds: 0 });
  for (const id of [a.id, fork.id, b.id]) t.is((await t.throwsAsync(genie.getSession(caller, id, undefined), { instanceOf: AppError })).code, 'NOT_FOUND');
  t.is((await genie.getSession(caller, other.id, undefined)).session.endUserId, 'eu-2');
  t.is((await genie.getSession(caller, none.id, undefined)).session.endUserId, undefined);
  t.is((await genie.getSession(elsewhere, theirs.id, undefined)).session.endUserId, 'eu-1');
  t.deepEqual(
    (await genie.listSessions(caller, { modelType: undefined, state: undefined, endUserId: 'eu-1' }, 10, undefined)).items,
    [],
  );
  t.deepEqual(await genie.eraseEndUser(caller, 'eu-1', 2), { sessions: 0, dialogue: 0, revisions: 0, secondary: 0, requestIds: 0 });
});
