import test from 'ava';
import { eventually } from '../helpers/eventually.js';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat } from '../../src/gen/parley/genie/v1/genie.js';
import { hotKey } from '../../src/genie/cache.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { sessionChannel } from '../../src/genie/events.js';
import { createTenant, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { code, details, genie, modelType, reasonOf, step } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const fresh = async () => genie(s, await createTenant(s));

/** One state that every `say` loops back to, so any number of events can race on one session. */
const chat = modelType({
  name: 'chat',
  jsonSchema: undefined,
  stateMachine: { states: ['open'], initialState: 'open', transitions: [{ fromState: 'open', eventName: 'say', toState: 'open', actor: Actor.ACTOR_UNSPECIFIED }] },
});

test('100 parallel SendEvents on one session: no lost or duplicated dialogue element, revisions strictly increasing', async (t) => {
  const g = await fresh();
  await g.register(chat);
  const { sessionId } = await g.create('chat', {});
  const texts = Array.from({ length: 100 }, (_, i) => `message ${i}`);
  const results = await Promise.all(texts.map((text, i) => g.send(sessionId, 'say', text, i % 2 ? 'user' : 'assistant')));

  const revisions = results.map((r) => r.revision).sort((a, b) => a - b);
  t.deepEqual(revisions, Array.from({ length: 100 }, (_, i) => i + 2), 'each event committed exactly one revision, 2..101');
  for (const r of results) {
    // The response describes its own commit: its own utterance is the last one.
    t.is(r.element!.index, r.revision - 1);
    t.true(r.element!.textSizeBytes >= 9 && r.element!.textSizeBytes <= 10);
  }
  const final = await g.get(sessionId);
  t.is(final.revision, 101);
  t.is(final.dialogue.length, 100);
  t.deepEqual([...final.dialogue.map((d) => d.actorText)].sort(), [...texts].sort());
  const rows = await s.app.db('genie_dialogue').where({ session_id: sessionId }).orderBy('seq').select('seq', 'revision');
  t.deepEqual(
    rows.map((r) => [Number(r.seq), Number(r.revision)]),
    rows.map((_, i) => [i + 1, i + 2]),
    'element n was appended by revision n+1',
  );
  const times = final.dialogue.map((d) => d.timestamp!.getTime());
  t.deepEqual(times, [...times].sort((a, b) => a - b));
});

test('racing conditional writers on one revision: exactly one wins, the others are ABORTED and wrote nothing', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa', { topic: 'tax', turns: 0 });
  const outcomes = await Promise.allSettled(
    Array.from({ length: 10 }, (_, i) => g.update(sessionId, [], { fieldsPatch: { turns: i + 1 } }, 1)),
  );
  const won = outcomes.filter((o) => o.status === 'fulfilled');
  const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
  t.is(won.length, 1);
  t.true(lost.every((o) => code(o.reason) === status.ABORTED && reasonOf(o.reason) === 'REVISION_MISMATCH'));
  const final = await g.get(sessionId);
  t.is(final.revision, 2);
  t.deepEqual(final.fields, (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof g.update>>>).value.session!.fields);
});

// Serial tests flush or inspect this server's whole Redis prefix, which would race with concurrent tests.
test.serial('the hot copy lives in Redis under a hash-tagged key; a flushed Redis loses nothing', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  await g.send(sessionId, 'user_input', 'hello');
  const before = await g.get(sessionId);
  t.is(hotKey(sessionId), `genie:{${sessionId}}:hot`);
  t.like(await hotCopyOf(s.app.store.kv, sessionId), { revision: 2, texts: ['hello'] }, 'a read fills the hot copy');

  await s.app.store.kv.clear();
  t.deepEqual(await g.get(sessionId), before);
  await g.send(sessionId, 'ai_response', 'hi');
  t.like(await hotCopyOf(s.app.store.kv, sessionId), { revision: 3, dialogueLength: 2, texts: ['hello', 'hi'] }, 'a write advances the hot copy');
  await s.app.store.kv.clear();
  const after = await g.get(sessionId);
  t.is(after.revision, 3);
  t.is(after.dialogue.length, 2);
});

test.serial('the hot copy\'s TTL comes from the model type (cache_ttl)', async (t) => {
  const g = await fresh();
  await g.register(modelType({ name: 'brief', cacheTtl: { seconds: 1, nanos: 0 } }));
  const { sessionId } = await g.create('brief');
  await g.get(sessionId);
  t.truthy(await hotCopyOf(s.app.store.kv, sessionId));
  await eventually(async () => (await hotCopyOf(s.app.store.kv, sessionId)) === undefined, 'the hot copy to expire');
  t.is((await g.get(sessionId)).revision, 1);
});

test('every change writes its session_commits row in its transaction and publishes it on genie:{<session id>} after commit', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const heard: Array<{ type: string; v: number; revision: number; events: Array<Record<string, unknown> & { type: string }> }> = [];
  const sub = await s.app.store.bus.subscribe(sessionChannel(sessionId), (m) => heard.push(JSON.parse(m)));
  t.is(sessionChannel(sessionId), `genie:{${sessionId}}`);
  try {
    await g.send(sessionId, 'user_input', 'q');
    await g.update(sessionId, [], { fieldsPatch: { turns: 1 } });
    await g.put(sessionId, 'doc', Buffer.from('abc'));
    await g.append(sessionId, 'system', 'note');
    // One row per revision, its events in order, in their stored form (text left to genie_dialogue).
    const storedLog = async () =>
      (await s.app.db('session_commits').where({ session_id: sessionId }).orderBy('revision')).flatMap((r) =>
        (typeof r.events === 'string' ? JSON.parse(r.events) : r.events).map((e: Record<string, unknown>) => ({ ...e, revision: Number(r.revision) })),
      );
    const logOf = async () => (await storedLog()).map((e) => [e.type, e.revision]);
    const rows = await storedLog();
    const log = await logOf();
    t.deepEqual(log, [
      ['session_created', 1],
      ['state_changed', 2],
      ['dialogue_appended', 2],
      ['fields_updated', 3],
      ['secondary_put', 4],
      ['dialogue_appended', 5],
    ]);
    t.like(rows[1], { type: 'state_changed', v: 1, fromState: 'awaiting_question', toState: 'awaiting_answer', event: 'user_input', actor: 'user', actorInputSeq: 1 });
    t.false('actorInput' in rows[1]! || 'actorText' in rows[2]!, 'the utterance is stored once, in genie_dialogue');
    await g.del(sessionId);
    // The log repeats the content, so a deletion leaves only itself there.
    t.deepEqual(await logOf(), [['session_deleted', 6]]);
    // One message per revision, carrying all of that revision's events in order.
    await eventually(() => heard.length >= 5, 'five published revisions');
    t.deepEqual(
      heard.flatMap((h) => h.events.map((e) => [e.type, h.revision])),
      [...log.slice(1), ['session_deleted', 6]],
    );
    t.like(heard[3], { type: 'commit', v: 1 });
    t.like(heard[3]!.events[0], { type: 'dialogue_appended', v: 1, seq: 2, actor: 'system', actorText: 'note' });
  } finally {
    await sub.close();
  }
});

test('PutSecondary stores a value once: a second put is ALREADY_EXISTS and the stored value stays', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const put = await g.put(sessionId, 'report', Buffer.from('v1'));
  t.is(put.revision, 2);
  t.like(put.entry, { key: 'report', sizeBytes: 2, revision: 2 });
  const dup = await t.throwsAsync(g.put(sessionId, 'report', Buffer.from('v2')));
  t.is(code(dup), status.ALREADY_EXISTS);
  const got = await g.getSecondary(sessionId, 'report');
  t.is(Buffer.from(got.value).toString(), 'v1');
  t.like(got.entry, { key: 'report', sizeBytes: 2, revision: 2 });
  t.is((await g.get(sessionId)).revision, 2, 'the refused put wrote nothing');

  t.is(code(await t.throwsAsync(g.getSecondary(sessionId, 'absent'))), status.NOT_FOUND);
  const badKey = await t.throwsAsync<ServiceError>(g.put(sessionId, '', Buffer.from('x')));
  t.deepEqual(violatedFields(badKey!), ['key']);
  t.is(code(await t.throwsAsync(g.put(sessionId, 'other', Buffer.from('x'), 1))), status.ABORTED);
});

test('ListSecondaryKeys pages through keys in order, without the values', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  for (const k of ['c', 'a', 'b']) await g.put(sessionId, k, Buffer.from(k.repeat(3)));
  const p1 = await g.keys(sessionId, 2);
  t.deepEqual(p1.entries.map((e) => [e.key, e.sizeBytes]), [['a', 3], ['b', 3]]);
  const p2 = await g.keys(sessionId, 2, p1.nextPageToken);
  t.deepEqual(p2.entries.map((e) => e.key), ['c']);
  t.is(p2.nextPageToken, '');
  const bad = await t.throwsAsync<ServiceError>(g.keys(sessionId, 2, 'xx'));
  t.deepEqual(violatedFields(bad!), ['page_token']);
});

test('a 3 MiB secondary value round-trips over gRPC within a default 4 MiB client and is not loaded with the session; larger is INVALID_ARGUMENT FIELD_TOO_LARGE', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const big = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  await g.put(sessionId, 'blob', big);
  const got = await g.getSecondary(sessionId, 'blob');
  t.is(got.entry?.sizeBytes, big.length);
  t.true(Buffer.from(got.value).equals(big));
  const session = await g.get(sessionId);
  t.false(JSON.stringify(session).length > 10_000, 'the session read does not carry the value');
  t.true(((await hotCopyOf(s.app.store.kv, sessionId))?.bytes ?? 0) < 10_000, 'nor does its hot copy');
  const tooBig = await t.throwsAsync<ServiceError>(g.put(sessionId, 'huge', Buffer.alloc(3 * 1024 * 1024 + 1)));
  t.deepEqual(violatedFields(tooBig!), ['value']);
  t.is(reasonOf(tooBig), 'FIELD_TOO_LARGE');
});

test('time travel: GetSession reads any earlier revision exactly as it was; FormatDialogue too', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa', { topic: 'tax' });
  await g.send(sessionId, 'user_input', 'q1');
  const r2 = await g.get(sessionId);
  await g.update(sessionId, [], { fieldsPatch: { turns: 1 } });
  const r3 = await g.get(sessionId);
  await g.send(sessionId, 'ai_response', 'a1');
  const r4 = await g.get(sessionId);
  await g.put(sessionId, 'doc', Buffer.from('x'));

  const at1 = await g.get(sessionId, 1);
  t.is(at1.revision, 1);
  t.is(at1.state, 'awaiting_question');
  t.deepEqual(at1.dialogue, []);
  t.is(at1.currentResponse, undefined);
  t.deepEqual(at1.fields, { topic: 'tax' });
  t.deepEqual(await g.get(sessionId, 2), r2);
  t.deepEqual(await g.get(sessionId, 3), r3);
  t.deepEqual(await g.get(sessionId, 4), r4);
  t.is((await g.get(sessionId, 5)).revision, 5);
  t.is(await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, 2), '[USER]: q1\n');

  const beyond = await t.throwsAsync(g.get(sessionId, 6));
  t.is(code(beyond), status.NOT_FOUND);
  t.is(reasonOf(beyond), 'REVISION_NOT_FOUND');
  t.regex(details(beyond), /revision 6/);
});

test('ForkSession starts a new session from any revision, with the dialogue and secondary values of that point', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa', { topic: 'tax' });
  await g.put(sessionId, 'early', Buffer.from('e')); // r2
  await g.send(sessionId, 'user_input', 'q1'); // r3
  await g.send(sessionId, 'ai_response', 'a1'); // r4
  await g.put(sessionId, 'late', Buffer.from('l')); // r5

  const fork = await g.fork(sessionId, 3);
  t.not(fork.sessionId, sessionId);
  t.is(fork.revision, 1);
  t.is(fork.forkedFromSessionId, sessionId);
  t.is(fork.forkedFromRevision, 3);
  t.is(fork.state, 'awaiting_answer');
  t.deepEqual(fork.dialogue, [], 'the reply carries no dialogue');
  t.is(fork.dialogueLength, 1);
  t.deepEqual((await g.get(fork.sessionId)).dialogue.map((d) => d.actorText), ['q1']);
  t.deepEqual((await g.keys(fork.sessionId)).entries.map((e) => e.key), ['early']);
  t.is(Buffer.from((await g.getSecondary(fork.sessionId, 'early')).value).toString(), 'e');

  // The fork goes its own way; the source is untouched.
  await g.send(fork.sessionId, 'ai_response', 'another answer');
  const forkAnswered = await g.get(fork.sessionId);
  t.deepEqual(forkAnswered.dialogue.map((d) => d.actorText), ['q1', 'another answer']);
  const source = await g.get(sessionId);
  t.deepEqual(source.dialogue.map((d) => d.actorText), ['q1', 'a1']);
  t.is(source.revision, 5);

  const head = await g.fork(sessionId);
  t.is(head.forkedFromRevision, 5);
  t.deepEqual((await g.keys(head.sessionId)).entries.map((e) => e.key), ['early', 'late']);
  t.is(code(await t.throwsAsync(g.fork(sessionId, 9))), status.NOT_FOUND);
});

// ---------------------------------------------------------------------------------------------------------
// Schema versions

/** Version 1: states asking/answering, fields name + legacy_score. */
const v1 = modelType({
  name: 'interview',
  jsonSchema: { type: 'object', properties: { name: { type: 'string' }, legacy_score: { type: 'number' } } },
  stateMachine: {
    states: ['asking', 'answering'],
    initialState: 'asking',
    transitions: [
      { fromState: 'asking', eventName: 'user_input', toState: 'answering', actor: Actor.ACTOR_USER },
      { fromState: 'answering', eventName: 'ai_response', toState: 'asking', actor: Actor.ACTOR_ASSISTANT },
    ],
  },
});
/** Version 2 renames the state `asking` and the field `name`, and drops `legacy_score`. */
const v2 = modelType({
  name: 'interview',
  schemaVersion: 2,
  jsonSchema: { type: 'object', properties: { title: { type: 'string' } }, additionalProperties: false },
  stateMachine: {
    states: ['awaiting_question', 'answering'],
    initialState: 'awaiting_question',
    transitions: [
      { fromState: 'awaiting_question', eventName: 'user_input', toState: 'answering', actor: Actor.ACTOR_USER },
      { fromState: 'answering', eventName: 'ai_response', toState: 'awaiting_question', actor: Actor.ACTOR_ASSISTANT },
    ],
  },
  upgrades: [
    step(1, { mapStates: { mapping: { asking: 'awaiting_question' } } }),
    step(1, { renameField: { oldName: 'name', newName: 'title' } }),
    step(1, { dropField: { name: 'legacy_score' } }),
  ],
});
/** Version 3 renames `answering` and adds `turns` with a default. */
const v3 = modelType({
  name: 'interview',
  schemaVersion: 3,
  jsonSchema: { type: 'object', properties: { title: { type: 'string' }, turns: { type: 'integer' } }, required: ['turns'], additionalProperties: false },
  stateMachine: {
    states: ['awaiting_question', 'awaiting_answer'],
    initialState: 'awaiting_question',
    transitions: [
      { fromState: 'awaiting_question', eventName: 'user_input', toState: 'awaiting_answer', actor: Actor.ACTOR_USER },
      { fromState: 'awaiting_answer', eventName: 'ai_response', toState: 'awaiting_question', actor: Actor.ACTOR_ASSISTANT },
    ],
  },
  upgrades: [step(2, { mapStates: { mapping: { answering: 'awaiting_answer' } } }), step(2, { addField: { name: 'turns', defaultValue: 0 } })],
});

const storedRow = (id: string) => s.app.db('genie_sessions').where({ id }).first();

test('a session stored at version 1 is upgraded on read across two versions (state renames, renamed and dropped fields) and written back at version 3 on its next write', async (t) => {
  const g = await fresh();
  await g.register(v1);
  const asking = await g.create('interview', { name: 'Ada', legacy_score: 7 });
  const answering = await g.create('interview', { name: 'Bob', legacy_score: 1 });
  await g.send(answering.sessionId, 'user_input', 'why?');
  await g.register(v2);
  await g.register(v3);

  const a = await g.get(asking.sessionId);
  t.is(a.schemaVersion, 3);
  t.is(a.state, 'awaiting_question');
  t.deepEqual(a.fields, { title: 'Ada', turns: 0 });
  const b = await g.get(answering.sessionId);
  t.is(b.state, 'awaiting_answer', 'answering (v1, v2) → awaiting_answer (v3)');
  t.deepEqual(b.fields, { title: 'Bob', turns: 0 });
  t.deepEqual(b.dialogue.map((d) => d.actorText), ['why?']);
  t.is((await g.get(answering.sessionId, 1)).state, 'awaiting_question', 'earlier revisions are upgraded too');
  t.like(await storedRow(asking.sessionId), { schema_version: 1, state: 'asking' }, 'a read does not write');

  // Filters see stored sessions by the state they read as.
  const listed = await g.list('interview', 'awaiting_answer');
  t.deepEqual(listed.sessions.map((x) => [x.sessionId, x.schemaVersion, x.state]), [[answering.sessionId, 3, 'awaiting_answer']]);

  // The machine of the latest version applies, and the next write stores the upgraded data.
  const sent = await g.send(answering.sessionId, 'ai_response', 'because');
  t.is(sent.state, 'awaiting_question');
  const row = await storedRow(answering.sessionId);
  t.like(row, { schema_version: 3, state: 'awaiting_question' });
  t.deepEqual(typeof row.fields === 'string' ? JSON.parse(row.fields) : row.fields, { title: 'Bob', turns: 0 });
  const u = await g.update(asking.sessionId, [], { fieldsPatch: { turns: 2 } });
  t.deepEqual(u.session!.fields, { title: 'Ada', turns: 2 });
  t.like(await storedRow(asking.sessionId), { schema_version: 3 });

  // Forking an old revision stores the fork at the latest version.
  const fork = await g.fork(answering.sessionId, 1);
  t.like(await storedRow(fork.sessionId), { schema_version: 3, state: 'awaiting_question' });
});

test.serial('data from a version newer than the server knows, or with no upgrade path, is FAILED_PRECONDITION naming both versions — the reference\'s base VersionedModel raises ValueError for any mismatch, newer versions included', async (t) => {
  const g = await fresh();
  await g.register(v1);
  await g.register(v2);
  const newer = await g.create('interview', { title: 'x' });
  const unknown = await g.create('interview', { title: 'y' });
  // As a newer server (or a removed version) would have left them:
  await s.app.db('genie_sessions').where({ id: newer.sessionId }).update({ schema_version: 9 });
  await s.app.db('genie_session_revisions').where({ session_id: newer.sessionId }).update({ schema_version: 9 });
  await s.app.db('genie_sessions').where({ id: unknown.sessionId }).update({ schema_version: 0 });
  await s.app.store.kv.clear();

  for (const read of [() => g.get(newer.sessionId), () => g.get(newer.sessionId, 1), () => g.send(newer.sessionId, 'user_input', 'x'), () => g.fork(newer.sessionId)]) {
    const e = await t.throwsAsync(read());
    t.is(code(e), status.FAILED_PRECONDITION);
    t.regex(details(e), /version 9\b.*knows 2\b/);
  }
  const noPath = await t.throwsAsync(g.send(unknown.sessionId, 'user_input', 'x'));
  t.is(code(noPath), status.FAILED_PRECONDITION);
  t.regex(details(noPath), /version 0\b.*no upgrade path.*knows 2\b/);
  const listed = await g.list('interview');
  t.deepEqual(
    listed.sessions.map((x) => [x.sessionId, x.schemaVersion]),
    [
      [newer.sessionId, 9],
      [unknown.sessionId, 0],
    ],
    'a list shows such sessions as stored instead of failing',
  );
  // The server keeps serving, and such a session can still be deleted.
  await g.del(newer.sessionId);
  t.is(code(await t.throwsAsync(g.get(newer.sessionId))), status.NOT_FOUND);
  t.is((await g.create('interview', {})).schemaVersion, 2);
});
