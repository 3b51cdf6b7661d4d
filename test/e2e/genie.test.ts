import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat } from '../../src/gen/parley/genie/v1/genie.js';
import { createTenant, errorInfo, rpc, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { code, details, genie, modelType, qaMachine, reasonOf, sessionValues, step } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const fresh = async () => genie(s, await createTenant(s));

test('RegisterModelType stores a version, GetModelType reads it, and a new version keeps the old one readable', async (t) => {
  const g = await fresh();
  const v1 = (await g.register(modelType({ cacheTtl: { seconds: 120, nanos: 0 }, sessionTtl: { seconds: 86_400, nanos: 0 } }))).modelType!;
  t.is(v1.name, 'qa');
  t.is(v1.schemaVersion, 1);
  t.deepEqual(v1.stateMachine, qaMachine);
  t.deepEqual(v1.cacheTtl, { seconds: 120, nanos: 0 });
  t.deepEqual(v1.sessionTtl, { seconds: 86_400, nanos: 0 });
  t.true(v1.createTime instanceof Date);
  t.deepEqual(v1.jsonSchema, modelType().jsonSchema);

  await g.register(
    modelType({
      schemaVersion: 2,
      upgrades: [step(1, { addField: { name: 'turns', defaultValue: 0 } })],
    }),
  );
  t.is((await g.getType('qa')).modelType?.schemaVersion, 2, 'version 0 means the latest');
  const old = (await g.getType('qa', 1)).modelType!;
  t.is(old.schemaVersion, 1);
  t.deepEqual(old.cacheTtl, { seconds: 120, nanos: 0 });
  const v2 = (await g.getType('qa', 2)).modelType!;
  t.deepEqual(v2.upgrades[0]?.addField, { name: 'turns', defaultValue: 0 });

  const missing = await t.throwsAsync(g.getType('qa', 3));
  t.is(code(missing), status.NOT_FOUND);
  t.is(reasonOf(missing), 'MODEL_TYPE_NOT_FOUND');
  t.is(reasonOf(await t.throwsAsync(g.getType('nope'))), 'MODEL_TYPE_NOT_FOUND');
  const fraction = await t.throwsAsync<ServiceError>(g.register(modelType({ name: 'f', cacheTtl: { seconds: 1, nanos: 5 } })));
  t.deepEqual(violatedFields(fraction!), ['model_type.cache_ttl.nanos']);
  const tooLong = await t.throwsAsync<ServiceError>(g.register(modelType({ name: 'f', sessionTtl: { seconds: 3651 * 86_400, nanos: 0 } })));
  t.deepEqual(violatedFields(tooLong!), ['model_type.session_ttl.seconds']);
});

test('RegisterModelType: same version is ALREADY_EXISTS, a lower one FAILED_PRECONDITION', async (t) => {
  const g = await fresh();
  await g.register(modelType({ schemaVersion: 3 }));
  const same = await t.throwsAsync(g.register(modelType({ schemaVersion: 3 })));
  t.is(code(same), status.ALREADY_EXISTS);
  t.is(reasonOf(same), 'MODEL_TYPE_ALREADY_EXISTS');
  const lower = await t.throwsAsync(g.register(modelType({ schemaVersion: 2 })));
  t.is(code(lower), status.FAILED_PRECONDITION);
  t.is(reasonOf(lower), 'SCHEMA_VERSION_NOT_HIGHER');
  t.regex(details(lower), /version 3/);
});

test('RegisterModelType rejects an invalid JSON Schema, state machine or upgrade step, naming the field', async (t) => {
  const g = await fresh();
  const badSchema = await t.throwsAsync<ServiceError>(g.register(modelType({ jsonSchema: { type: 'nope' } })));
  t.is(badSchema?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(badSchema!), ['model_type.json_schema']);

  const badMachine = await t.throwsAsync<ServiceError>(
    g.register(
      modelType({
        stateMachine: {
          states: ['a', 'a'],
          initialState: 'z',
          transitions: [{ fromState: 'a', eventName: 'go', toState: 'q', actor: Actor.ACTOR_UNSPECIFIED }],
        },
      }),
    ),
  );
  t.is(badMachine?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(badMachine!).sort(), [
    'model_type.state_machine.initial_state',
    'model_type.state_machine.states[1]',
    'model_type.state_machine.transitions[0].to_state',
  ]);
  const badActor = await t.throwsAsync<ServiceError>(
    g.register(modelType({ stateMachine: { ...qaMachine, transitions: [{ fromState: 'awaiting_question', eventName: 'go', toState: 'awaiting_answer', actor: 7 as Actor }] } })),
  );
  t.deepEqual(violatedFields(badActor!), ['model_type.state_machine.transitions[0].actor']);
  t.regex(badActor!.details, /ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);

  const badName = await t.throwsAsync<ServiceError>(g.register(modelType({ name: '9 lives', schemaVersion: 0 })));
  t.deepEqual(violatedFields(badName!).sort(), ['model_type.name', 'model_type.schema_version']);

  const firstWithSteps = await t.throwsAsync<ServiceError>(g.register(modelType({ upgrades: [step(0, { dropField: { name: 'x' } })] })));
  t.deepEqual(violatedFields(firstWithSteps!), ['model_type.upgrades']);

  await g.register(modelType());
  const wrongFrom = await t.throwsAsync<ServiceError>(g.register(modelType({ schemaVersion: 2, upgrades: [step(7, { dropField: { name: 'x' } })] })));
  t.deepEqual(violatedFields(wrongFrom!), ['model_type.upgrades[0].from_version']);
  const noKind = await t.throwsAsync<ServiceError>(g.register(modelType({ schemaVersion: 2, upgrades: [step(1, {})] })));
  t.deepEqual(violatedFields(noKind!), ['model_type.upgrades[0]']);

  // Version 2 renames a state without mapping it: stored version-1 sessions in it could never be read.
  const unmapped = await t.throwsAsync<ServiceError>(
    g.register(modelType({ schemaVersion: 2, stateMachine: { ...qaMachine, states: ['awaiting_question', 'thinking'], transitions: [] } })),
  );
  t.is(unmapped?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(unmapped!), ['model_type.upgrades']);
  t.regex(unmapped!.details, /awaiting_answer/);
});

test('ListModelTypes pages through every version by name, and a bad page token is INVALID_ARGUMENT page_token', async (t) => {
  const g = await fresh();
  await g.register(modelType({ name: 'b' }));
  await g.register(modelType({ name: 'a' }));
  await g.register(modelType({ name: 'a', schemaVersion: 2 }));
  const p1 = await g.listTypes('', 2);
  t.deepEqual(p1.modelTypes.map((m) => `${m.name}@${m.schemaVersion}`), ['a@1', 'a@2']);
  t.truthy(p1.nextPageToken);
  const p2 = await g.listTypes('', 2, p1.nextPageToken);
  t.deepEqual(p2.modelTypes.map((m) => `${m.name}@${m.schemaVersion}`), ['b@1']);
  t.is(p2.nextPageToken, '');
  const onlyA = await g.listTypes('a');
  t.is(onlyA.modelTypes.length, 2);

  const bad = await t.throwsAsync<ServiceError>(g.listTypes('', 2, 'not-a-token'));
  t.is(bad?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(bad!), ['page_token']);
  const otherFilter = await t.throwsAsync<ServiceError>(g.listTypes('b', 2, p1.nextPageToken));
  t.deepEqual(violatedFields(otherFilter!), ['page_token']);
});

test('model types and sessions belong to the caller\'s account: another account gets NOT_FOUND', async (t) => {
  const a = await fresh();
  const b = await fresh();
  await a.register(modelType());
  const session = await a.create('qa');
  t.is(code(await t.throwsAsync(b.getType('qa'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(b.create('qa'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(b.get(session.sessionId))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(b.send(session.sessionId, 'user_input', 'hi'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(b.format(session.sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(b.del(session.sessionId))), status.NOT_FOUND);
  t.is((await b.list()).sessions.length, 0);
  // b may register its own `qa` without clashing.
  await b.register(modelType());
  t.is((await a.get(session.sessionId)).revision, 1);
});

test('CreateSession starts in the initial state with an empty dialogue, no current_response and revision 1', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const created = await g.create('qa', { topic: 'tax', profile: { age: 41 } });
  t.regex(created.sessionId, /^[0-9a-f-]{36}$/);
  t.is(created.modelType, 'qa');
  t.is(created.schemaVersion, 1);
  t.is(created.state, 'awaiting_question');
  t.deepEqual(created.dialogue, []);
  t.is(created.actor, Actor.ACTOR_UNSPECIFIED);
  t.is(created.dialogueLength, 0);
  t.is(created.actorInput, '');
  t.deepEqual(created.fields, { topic: 'tax', profile: { age: 41 } });
  t.is(created.currentResponse, undefined);
  t.is(created.revision, 1);
  t.true(created.createTime instanceof Date);

  const got = await g.get(created.sessionId);
  t.deepEqual(got, created);
});

test('CreateSession checks fields against the JSON Schema, naming fields.<path>', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const bad = await t.throwsAsync<ServiceError>(g.create('qa', { turns: 'many', profile: { age: 'old' } }));
  t.is(bad?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(bad!).sort(), ['fields.profile.age', 'fields.topic', 'fields.turns']);
  t.is(code(await t.throwsAsync(g.create('unregistered'))), status.NOT_FOUND);
  const badId = await t.throwsAsync<ServiceError>(g.get('not-a-uuid'));
  t.deepEqual(violatedFields(badId!), ['session_id']);
  t.is(code(await t.throwsAsync(g.get('00000000-0000-4000-8000-000000000000'))), status.NOT_FOUND);
});

test('SendEvent moves the state, records actor and input and appends the utterance as one revision; the reply carries only its metadata', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const asked = await g.send(sessionId, 'user_input', 'What is VAT?');
  t.like(asked, { sessionId, previousState: 'awaiting_question', state: 'awaiting_answer', revision: 2 });
  t.like(asked.element, { index: 1, actor: Actor.ACTOR_USER, eventName: 'user_input', textSizeBytes: 12 });
  t.true(asked.element!.timestamp instanceof Date);
  t.true(asked.updateTime instanceof Date);
  t.false(JSON.stringify(asked).includes('What is VAT?'), 'the utterance is not repeated');
  const s1 = await g.get(sessionId);
  t.is(s1.state, 'awaiting_answer');
  t.is(s1.actor, Actor.ACTOR_USER);
  t.is(s1.actorInput, 'What is VAT?');
  t.is(s1.revision, 2);
  t.is(s1.dialogue.length, 1);
  t.like(s1.dialogue[0], { actor: Actor.ACTOR_USER, actorText: 'What is VAT?', eventName: 'user_input' });
  t.deepEqual(s1.currentResponse, s1.dialogue[0]);
  t.deepEqual(s1.dialogue[0]!.timestamp, asked.element!.timestamp);

  const answered = await g.send(sessionId, 'ai_response', 'A consumption tax.', 'assistant');
  t.like(answered, { state: 'awaiting_question', revision: 3, previousState: 'awaiting_answer' });
  t.like(answered.element, { index: 2, actor: Actor.ACTOR_ASSISTANT, textSizeBytes: 18 });
  const s2 = await g.get(sessionId);
  t.is(s2.actor, Actor.ACTOR_ASSISTANT);
  t.is(s2.dialogueLength, 2);
  t.deepEqual(
    s2.dialogue.map((d) => [d.actor, d.actorText]),
    [
      [Actor.ACTOR_USER, 'What is VAT?'],
      [Actor.ACTOR_ASSISTANT, 'A consumption tax.'],
    ],
  );
  t.is(s2.currentResponse?.actorText, 'A consumption tax.');
});

test('SendEvent: a transition not allowed from the current state is FAILED_PRECONDITION naming state and event', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const e = await t.throwsAsync<ServiceError>(g.send(sessionId, 'ai_response', 'too early'));
  t.is(code(e), status.FAILED_PRECONDITION);
  const info = errorInfo(e!);
  t.is(info?.reason, 'TRANSITION_NOT_ALLOWED');
  t.deepEqual(info?.metadata, { state: 'awaiting_question', event: 'ai_response' });
  t.regex(details(e), /"ai_response"/);
  t.regex(details(e), /"awaiting_question"/);
  const after = await g.get(sessionId);
  t.is(after.revision, 1, 'nothing was written');
  t.is(after.dialogue.length, 0);
});

test('Utterance actors are the Actor enum; ACTOR_UNSPECIFIED where one is needed or an unknown value is INVALID_ARGUMENT actor naming the JSON values', async (t) => {
  const g = await fresh();
  await g.register(
    modelType({
      name: 'open',
      jsonSchema: undefined,
      stateMachine: { states: ['s'], initialState: 's', transitions: [{ fromState: 's', eventName: 'say', toState: 's', actor: Actor.ACTOR_UNSPECIFIED }] },
    }),
  );
  await g.register(modelType());
  const { sessionId } = await g.create('open', {});
  for (const actor of [4, 99, -1] as Actor[]) {
    const e = await t.throwsAsync<ServiceError>(g.send(sessionId, 'say', 'x', actor));
    t.deepEqual(violatedFields(e!), ['actor'], String(actor));
    const a = await t.throwsAsync<ServiceError>(g.append(sessionId, actor, 'x'));
    t.deepEqual(violatedFields(a!), ['actor'], String(actor));
    t.regex(a!.details, /ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);
  }
  const unset = await t.throwsAsync<ServiceError>(g.append(sessionId, Actor.ACTOR_UNSPECIFIED, 'x'));
  t.deepEqual(violatedFields(unset!), ['actor']);
  const none = await t.throwsAsync<ServiceError>(g.send(sessionId, 'say', 'x'));
  t.deepEqual(violatedFields(none!), ['actor'], 'a transition without an actor needs one in the request');
  t.regex(none!.details, /ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM/);
  t.is((await g.send(sessionId, 'say', 'x', 'system')).element?.actor, Actor.ACTOR_SYSTEM);

  const qa = await g.create('qa');
  const wrong = await t.throwsAsync<ServiceError>(g.send(qa.sessionId, 'user_input', 'x', 'assistant'));
  t.deepEqual(violatedFields(wrong!), ['actor'], 'the transition says the user speaks');
  t.regex(wrong!.details, /ACTOR_USER, not ACTOR_ASSISTANT/);
  const badEvent = await t.throwsAsync<ServiceError>(g.send(qa.sessionId, '', 'x'));
  t.deepEqual(violatedFields(badEvent!), ['event_name']);
});

test('expected_revision: a stale one is ABORTED REVISION_MISMATCH with current_revision and nothing is written, a matching one applies', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const stale = await t.throwsAsync<ServiceError>(g.send(sessionId, 'user_input', 'hi', '', 5));
  t.is(code(stale), status.ABORTED);
  t.deepEqual(errorInfo(stale!)?.metadata, { current_revision: '1' });
  t.is(reasonOf(stale), 'REVISION_MISMATCH');
  t.regex(details(stale), /revision 1/);
  t.is((await g.get(sessionId)).revision, 1);
  t.is((await g.send(sessionId, 'user_input', 'hi', '', 1)).revision, 2);
  for (const write of [
    g.append(sessionId, 'user', 'x', 1),
    g.update(sessionId, undefined, { fieldsPatch: { turns: 1 } }, 1),
    g.put(sessionId, 'k', Buffer.from('v'), 1),
    g.del(sessionId, 1),
  ]) {
    const e = await t.throwsAsync<ServiceError>(write);
    t.is(reasonOf(e), 'REVISION_MISMATCH');
    t.is(errorInfo(e!)?.metadata.current_revision, '2');
  }
  const after = await g.get(sessionId);
  t.is(after.revision, 2);
  t.deepEqual(after.fields, { topic: 'tax' });
  t.is(after.dialogue.length, 1);
  // Unset is unconditional; 0 names no revision at all.
  const zero = await t.throwsAsync<ServiceError>(
    rpc(g.client, g.client.sendEvent, { sessionId, eventName: 'ai_response', actor: 0, actorInput: '', expectedRevision: 0, requestId: '' }, g.md),
  );
  t.deepEqual(violatedFields(zero!), ['expected_revision']);
});

test('AppendDialogue adds an utterance without a transition and it becomes current_response', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const r1 = await g.append(sessionId, 'system', 'You are a tax adviser.');
  t.like(r1, { sessionId, state: 'awaiting_question', revision: 2 });
  t.like(r1.element, { index: 1, actor: Actor.ACTOR_SYSTEM, eventName: '', textSizeBytes: 22 });
  const s1 = await g.get(sessionId);
  t.like(s1.currentResponse, { actor: Actor.ACTOR_SYSTEM, actorText: 'You are a tax adviser.', eventName: '' });
  t.is(s1.actor, Actor.ACTOR_SYSTEM);
  const r2 = await g.append(sessionId, 'user', '');
  t.like(r2.element, { index: 2, actor: Actor.ACTOR_USER, textSizeBytes: 0 });
  const s2 = await g.get(sessionId);
  t.is(s2.dialogue.length, 2);
  t.is(s2.currentResponse?.actor, Actor.ACTOR_USER);
});

/** Builds a dialogue through AppendDialogue and returns the session's elements as stored. */
async function dialogueOf(g: Awaited<ReturnType<typeof fresh>>, lines: Array<[string, string]>) {
  const { sessionId } = await g.create('qa');
  for (const [actor, text] of lines) await g.append(sessionId, actor, text);
  return { sessionId, dialogue: (await g.get(sessionId)).dialogue };
}

test('FormatDialogue CHAT renders byte for byte as the reference ("[ACTOR]: text\\n" joined by "\\n")', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await dialogueOf(g, [
    ['system', 'You are a helpful assistant.'],
    ['user', 'Hi there'],
    ['assistant', 'Line one\nLine two\n'],
  ]);
  t.is(
    await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT),
    '[SYSTEM]: You are a helpful assistant.\n\n[USER]: Hi there\n\n[ASSISTANT]: Line one\nLine two\n\n',
  );
});

test('FormatDialogue YAML renders byte for byte as the reference\'s hand-rolled text, unescaped and splitlines()-indented', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await dialogueOf(g, [
    ['user', 'key: "quoted" # not a comment'],
    ['assistant', 'one\r\ntwo\n\nthree\n'],
    ['user', ''],
  ]);
  t.is(
    await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_YAML),
    '- role: user\n  content: >\n    key: "quoted" # not a comment\n' +
      '\n' +
      '- role: assistant\n  content: >\n    one\n    two\n    \n    three\n' +
      '\n' +
      '- role: user\n  content: >\n\n',
  );
});

test('FormatDialogue JSON is a proper array of {actor, timestamp (RFC 3339 UTC), actor_text}; the reference crashes here (datetime not JSON serializable)', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId, dialogue } = await dialogueOf(g, [
    ['user', 'Grüße "quoted"'],
    ['assistant', 'ok\n'],
  ]);
  const text = await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_JSON);
  const parsed = JSON.parse(text) as Array<Record<string, string>>;
  t.deepEqual(parsed, [
    { actor: 'user', timestamp: dialogue[0]!.timestamp!.toISOString(), actor_text: 'Grüße "quoted"' },
    { actor: 'assistant', timestamp: dialogue[1]!.timestamp!.toISOString(), actor_text: 'ok\n' },
  ]);
  for (const e of parsed) t.regex(e.timestamp!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.deepEqual(Object.keys(parsed[0]!), ['actor', 'timestamp', 'actor_text']);
});

test('FormatDialogue PYTHON_REPR renders the reference\'s repr() of the element list', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId, dialogue } = await dialogueOf(g, [['user', "it's"]]);
  const ts = dialogue[0]!.timestamp!;
  const micros = ts.getUTCMilliseconds() * 1000;
  const parts = [ts.getUTCFullYear(), ts.getUTCMonth() + 1, ts.getUTCDate(), ts.getUTCHours(), ts.getUTCMinutes()];
  if (micros) parts.push(ts.getUTCSeconds(), micros);
  else if (ts.getUTCSeconds()) parts.push(ts.getUTCSeconds());
  t.is(
    await g.format(sessionId, DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR),
    `[DialogueElement(actor='user', timestamp=datetime.datetime(${parts.join(', ')}, tzinfo=datetime.timezone.utc), actor_text="it's")]`,
  );
});

test('FormatDialogue renders an empty dialogue as "" in every format, and needs a known format', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  for (const f of [DialogueFormat.DIALOGUE_FORMAT_CHAT, DialogueFormat.DIALOGUE_FORMAT_YAML, DialogueFormat.DIALOGUE_FORMAT_JSON, DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR]) {
    t.is(await g.format(sessionId, f), '', DialogueFormat[f]);
  }
  for (const f of [DialogueFormat.DIALOGUE_FORMAT_UNSPECIFIED, 99]) {
    const e = await t.throwsAsync<ServiceError>(g.format(sessionId, f));
    t.deepEqual(violatedFields(e!), ['format']);
  }
});

test('UpdateSession: update_mask sets actor, actor_input and expire_time; fields_patch merges user fields (RFC 7396), checked against the schema', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa', { topic: 'tax', turns: 1 });
  const u1 = await g.update(sessionId, ['actor_input'], { fieldsPatch: { turns: 2, profile: { age: 30 } }, actorInput: 'typed', actor: 'system' });
  t.true(u1.changed);
  t.deepEqual(u1.session!.fields, { topic: 'tax', turns: 2, profile: { age: 30 } });
  t.is(u1.session!.actorInput, 'typed');
  t.is(u1.session!.actor, Actor.ACTOR_UNSPECIFIED, 'actor is not in the mask');
  t.is(u1.session!.revision, 2);
  t.is(u1.session!.state, 'awaiting_question');
  t.deepEqual(u1.session!.dialogue, []);

  const removed = await g.update(sessionId, [], { fieldsPatch: { turns: null, profile: { age: null, city: 'Utrecht' } } });
  t.deepEqual(removed.session!.fields, { topic: 'tax', profile: { city: 'Utrecht' } }, 'null deletes, objects merge');

  const implied = await g.update(sessionId, undefined, { actor: 'assistant', expireTime: new Date('2999-01-01T00:00:00Z') });
  t.is(implied.session!.actor, Actor.ACTOR_ASSISTANT, 'no mask: the populated fields');
  t.is(implied.session!.actorInput, 'typed', 'an empty actor_input is not populated');
  t.deepEqual(implied.session!.expireTime, new Date('2999-01-01T00:00:00Z'));
  const cleared = await g.update(sessionId, ['expire_time'], {});
  t.is(cleared.session!.expireTime, undefined);
  t.is(cleared.session!.revision, 5);

  const invalid = await t.throwsAsync<ServiceError>(g.update(sessionId, [], { fieldsPatch: { turns: -1 } }));
  t.deepEqual(violatedFields(invalid!), ['fields.turns']);
  const dropRequired = await t.throwsAsync<ServiceError>(g.update(sessionId, [], { fieldsPatch: { topic: null } }));
  t.deepEqual(violatedFields(dropRequired!), ['fields.topic']);
  const badActor = await t.throwsAsync<ServiceError>(g.update(sessionId, ['actor'], { actor: 'LLM' }));
  t.deepEqual(violatedFields(badActor!), ['session.actor']);
  const unsetActor = await t.throwsAsync<ServiceError>(g.update(sessionId, ['actor'], {}));
  t.deepEqual(violatedFields(unsetActor!), ['session.actor']);

  const after = await g.get(sessionId);
  t.is(after.revision, 5, 'failed updates wrote nothing');
  t.is((await g.update(sessionId, ['*'], { actor: 'user', actorInput: 'all' }, 5)).session!.actor, Actor.ACTOR_USER);
});

test('UpdateSession: a mask path that names nothing, a user field or an output-only field is INVALID_ARGUMENT UPDATE_MASK_INVALID naming the path', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  for (const path of ['fields', 'fields.topic', 'state', 'revision', 'dialogue', 'nope', 'actor.x', 'fields.dueDate']) {
    const e = await t.throwsAsync<ServiceError>(g.update(sessionId, [path], { actor: 'user' }));
    t.is(e?.code, status.INVALID_ARGUMENT, path);
    t.deepEqual(violatedFields(e!), ['update_mask'], path);
    t.is(reasonOf(e), 'UPDATE_MASK_INVALID', path);
    t.true(e!.details.includes(JSON.stringify(path)), path);
  }
  const long = 'x'.repeat(5000);
  const clipped = await t.throwsAsync<ServiceError>(g.update(sessionId, [long], {}));
  t.true(clipped!.details.length < 400, 'the path is clipped');
  t.is((await g.get(sessionId)).revision, 1);
});

test('UpdateSession that changes nothing commits nothing: changed false, same revision, no update_time change', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa', { topic: 'tax', profile: { age: 3 } });
  const before = await g.get(sessionId);
  for (const [paths, values] of [
    [[], {}],
    [undefined, {}],
    [[], { fieldsPatch: { topic: 'tax' } }],
    [[], { fieldsPatch: { missing: null } }],
    [[], { fieldsPatch: { profile: { age: 3 } } }],
    [['actor_input', 'expire_time'], {}],
  ] as const) {
    const r = await g.update(sessionId, paths as string[] | undefined, values as { fieldsPatch?: Record<string, unknown> });
    t.false(r.changed, JSON.stringify([paths, values]));
    t.is(r.session!.revision, 1);
    t.deepEqual(r.session!.updateTime, before.updateTime);
  }
  const stale = await t.throwsAsync<ServiceError>(g.update(sessionId, [], {}, 7));
  t.is(reasonOf(stale), 'REVISION_MISMATCH', 'a no-op still checks expected_revision');
  t.is((await g.get(sessionId)).revision, 1);
  t.true((await g.update(sessionId, [], { fieldsPatch: { topic: 'vat' } })).changed);
  t.is((await g.get(sessionId)).revision, 2);
});

test('UpdateSession refuses session.fields (user fields change through fields_patch)', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  const e = await t.throwsAsync<ServiceError>(
    rpc(g.client, g.client.updateSession, { session: { ...sessionValues(sessionId, {}), fields: { topic: 'x' } }, updateMask: [], fieldsPatch: undefined, requestId: '' }, g.md),
  );
  t.deepEqual(violatedFields(e!), ['session.fields']);
});

test('DeleteSession removes the session: every read is NOT_FOUND afterwards', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  await g.put(sessionId, 'doc', Buffer.from('x'));
  await g.del(sessionId, 2);
  t.is(reasonOf(await t.throwsAsync(g.get(sessionId))), 'SESSION_NOT_FOUND');
  t.is(code(await t.throwsAsync(g.get(sessionId, 1))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(g.send(sessionId, 'user_input', 'x'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(g.getSecondary(sessionId, 'doc'))), status.NOT_FOUND);
  t.is(code(await t.throwsAsync(g.del(sessionId))), status.NOT_FOUND);
  t.is((await g.list('qa')).sessions.length, 0);
});

test('ListSessions filters by type and state and pages with an opaque token', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  await g.register(modelType({ name: 'other', jsonSchema: undefined }));
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await g.create('qa')).sessionId);
  await g.create('other', {});
  await g.send(ids[1]!, 'user_input', 'q1');
  await g.send(ids[3]!, 'user_input', 'q3');

  const all = await g.list();
  t.is(all.sessions.length, 6);
  const p1 = await g.list('qa', '', 2);
  t.deepEqual(p1.sessions.map((x) => x.sessionId), ids.slice(0, 2));
  const p2 = await g.list('qa', '', 2, p1.nextPageToken);
  t.deepEqual(p2.sessions.map((x) => x.sessionId), ids.slice(2, 4));
  const p3 = await g.list('qa', '', 2, p2.nextPageToken);
  t.deepEqual(p3.sessions.map((x) => x.sessionId), ids.slice(4));
  t.is(p3.nextPageToken, '');

  const waiting = await g.list('qa', 'awaiting_answer');
  t.deepEqual(waiting.sessions.map((x) => x.sessionId), [ids[1], ids[3]]);
  t.is(waiting.sessions[0]?.currentResponse?.actorText, 'q1', 'list results carry current_response');
  t.deepEqual(waiting.sessions[0]?.dialogue, [], 'but not the dialogue');
  t.is((await g.list('', 'awaiting_answer')).sessions.length, 2, 'state without type spans every type');
  t.is((await g.list('qa', 'no_such_state')).sessions.length, 0);

  const bad = await t.throwsAsync<ServiceError>(g.list('qa', '', 2, 'garbage'));
  t.deepEqual(violatedFields(bad!), ['page_token']);
  const changed = await t.throwsAsync<ServiceError>(g.list('other', '', 2, p1.nextPageToken));
  t.deepEqual(violatedFields(changed!), ['page_token']);
  const negative = await t.throwsAsync<ServiceError>(g.list('qa', '', -1));
  t.deepEqual(violatedFields(negative!), ['page_size']);
});
