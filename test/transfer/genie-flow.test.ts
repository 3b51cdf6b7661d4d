import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import snappy from 'snappyjs';
import {
  decodeEnvelope,
  decodeSecondary,
  objectPattern,
  parleySessionId,
  parseModel,
  parseObjectKey,
  parseOffset,
  parseTimestamp,
  Refusal,
  snappyLength,
  toRecords,
  type Target,
} from '../../src/transfer/genie-flow.js';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { modelJson, naiveTimestamp, serialize, serializeSecondary } from '../helpers/genie-flow-dump.js';
import { testWhen } from '../helpers/backends.js';

const SID = '0190f3a2-5b1c-7d3e-8f40-123456789abc';
const key = { className: 'Interview', sessionId: SID };
/** `fn` refuses the session: a Refusal of this kind, with this message. */
function refusal(t: ExecutionContext, fn: () => unknown, kind: Refusal['kind'], message: RegExp) {
  const err = t.throws(fn, { instanceOf: Refusal, message });
  t.is((err as Refusal | undefined)?.kind, kind);
}

test('genie-flow decodeEnvelope reads uncompressed and raw-Snappy values with their schema version', (t) => {
  const json = modelJson({ sessionId: SID, state: 'intro' });
  t.deepEqual(decodeEnvelope(serialize(json, 0, false), 'the object'), { schemaVersion: 0, compressed: false, json });
  t.deepEqual(decodeEnvelope(serialize(json, 42, true), 'the object'), { schemaVersion: 42, compressed: true, json });
});

test('genie-flow decodeEnvelope reads the compressed value genie-flow\'s own tests decode (a raw block, not framed)', (t) => {
  // python-snappy's compress of a 49-byte JSON: varint length 0x31, then one literal (tag 0xc0 = 48 << 2).
  const value = Buffer.concat([Buffer.from('0:1:'), Buffer.from([0x31, 0xc0]), Buffer.from('{"session_id":"efb2e397b4554ea2998dd3182e6a6190"}')]);
  t.is(decodeEnvelope(value, 'the object').json, '{"session_id":"efb2e397b4554ea2998dd3182e6a6190"}');
});

const python = spawnSync('/usr/bin/python3', ['-c', 'import snappy'], { encoding: 'utf8' });
const withPython = testWhen(python.status === 0, 'no /usr/bin/python3 with python-snappy (Debian python3-snappy)', true);

withPython('genie-flow Snappy: python-snappy\'s compress decodes here and ours decodes there, byte for byte', (t) => {
  const json = modelJson({ sessionId: SID, state: 'intro', dialogue: [{ actor: 'user', timestamp: '2025-03-01T10:00:00.250000', actor_text: 'héllo '.repeat(200) }] });
  const fromPython = spawnSync('/usr/bin/python3', ['-c', 'import sys, snappy; sys.stdout.buffer.write(snappy.compress(sys.stdin.buffer.read()))'], { input: Buffer.from(json) });
  t.is(fromPython.status, 0, String(fromPython.stderr));
  t.is(decodeEnvelope(Buffer.concat([Buffer.from('3:1:'), fromPython.stdout]), 'the object').json, json);
  const back = spawnSync('/usr/bin/python3', ['-c', 'import sys, snappy; sys.stdout.buffer.write(snappy.decompress(sys.stdin.buffer.read()))'], { input: snappy.compress(Buffer.from(json)) });
  t.is(back.status, 0, String(back.stderr));
  t.is(back.stdout.toString('utf8'), json);
});

test('genie-flow decodeEnvelope refuses what is not a schema version, a 0/1 flag and a payload', (t) => {
  const json = Buffer.from('{}');
  refusal(t, () => decodeEnvelope(json, 'the object'), 'malformed', /the object does not start with a schema version/);
  refusal(t, () => decodeEnvelope(Buffer.from(' 1:0:{}'), 'the object'), 'malformed', /schema version/);
  refusal(t, () => decodeEnvelope(Buffer.from('1_0:0:{}'), 'the object'), 'malformed', /schema version/);
  // genie-flow reads any flag but 1 as plain text; only 0 and 1 are ever written.
  refusal(t, () => decodeEnvelope(Buffer.from('1:2:{}'), 'the object'), 'malformed', /compression flag 0 or 1/);
  refusal(t, () => decodeEnvelope(Buffer.from('1:1:{"not":"snappy"}'), 'the object'), 'malformed', /not a Snappy block/);
  refusal(t, () => decodeEnvelope(Buffer.from([0x31, 0x3a, 0x30, 0x3a, 0xff, 0xfe]), 'the object'), 'malformed', /not valid UTF-8/);
  refusal(t, () => decodeEnvelope(serialize('x'.repeat(2000), 0, true), 'the object', 1000), 'too-large', /decompresses to more than 1000 bytes/);
  refusal(t, () => decodeEnvelope(serialize('x'.repeat(2000), 0, false), 'the object', 1000), 'too-large', /over 1000 bytes/);
});

test('genie-flow Snappy blocks are walked before snappyjs sees them: hostile blocks are malformed, never a hang or zeros', (t) => {
  const block = (...bytes: number[]) => Buffer.from(bytes);
  const good = snappy.compress(Buffer.from('abcabcabcabc'.repeat(20)));
  t.is(snappyLength(good), 240);
  // A literal whose 4-byte length reads as negative: snappyjs walks backwards through it forever…
  t.is(snappyLength(block(10, 0xfc, 0xf8, 0xff, 0xff, 0xff, 0x41)), undefined);
  // …or, here, answers ten zero bytes.
  t.is(snappyLength(block(10, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x41)), undefined);
  t.is(snappyLength(block(3, 0x08, 0x41, 0x42)), undefined, 'a literal past the end');
  t.is(snappyLength(block(4, 0x04, 0x41, 0x42)), undefined, 'shorter than stated: snappyjs filled zeros');
  t.is(snappyLength(block(2, 0x04, 0x41, 0x42, 0x01, 0x01)), undefined, 'longer than stated: snappyjs dropped the rest');
  t.is(snappyLength(block(8, 0x04, 0x41, 0x42, 0x01)), undefined, 'a copy cut short: snappyjs read past the end');
  t.is(snappyLength(block(8, 0x04, 0x41, 0x42, 0x01, 0x03)), undefined, 'a copy from before the start');
  t.is(snappyLength(block(0x80, 0x80, 0x80, 0x80, 0x80, 0x01)), undefined, 'a length varint over 5 bytes');
  t.is(snappyLength(block(6, 0x04, 0x41, 0x42, 0x01, 0x02)), 6, 'a copy overlapping its own output (run-length)');
  t.is(decodeEnvelope(Buffer.concat([Buffer.from('0:1:'), block(6, 0x04, 0x41, 0x42, 0x01, 0x02)]), 'x').json, 'ABABAB');
  // Mutated and cut blocks, deterministically: each one decodes to its stated length or is refused.
  let seed = 20261126;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(good);
    for (let k = 0; k <= i % 4; k++) b[next() % b.length] = next() % 256;
    const cut = i % 3 === 0 ? b.subarray(0, next() % b.length) : b;
    try {
      const env = decodeEnvelope(Buffer.concat([Buffer.from('0:1:'), cut]), 'x', 4096);
      t.is(snappyLength(cut), Buffer.byteLength(env.json));
    } catch (err) {
      if (!(err instanceof Refusal)) t.fail(`not a Refusal: ${String(err)}`);
    }
  }
});

test('genie-flow timestamps: naive ones (upstream writes datetime.now(), local time without offset) read at the given offset', (t) => {
  const instant = new Date('2025-03-01T10:00:00.123Z');
  t.is(naiveTimestamp(instant, 120, 456), '2025-03-01T12:00:00.123456');
  t.deepEqual(parseTimestamp(naiveTimestamp(instant, 120, 456), 120), instant);
  t.deepEqual(parseTimestamp(naiveTimestamp(instant, 0), 0), instant);
  t.deepEqual(parseTimestamp('2025-03-01T10:00:00', 0), new Date('2025-03-01T10:00:00Z'));
  // An offset in the value wins over the assumed one.
  t.deepEqual(parseTimestamp('2025-03-01T10:00:00.123Z', 120), instant);
  t.deepEqual(parseTimestamp('2025-03-01T05:30:00.123-04:30', 120), instant);
  for (const bad of ['2025-02-31T10:00:00', '2025-03-01 10:00:00', '2025-03-01T24:00:00', '2025-03-01T10:00:00.1234567', 'yesterday'])
    t.is(parseTimestamp(bad, 0), undefined, bad);
  t.is(parseOffset('+05:30'), 330);
  t.is(parseOffset('-08:00'), -480);
  t.is(parseOffset('Z'), 0);
  t.is(parseOffset('+5'), undefined);
  t.is(parseOffset('+15:00'), undefined);
});

test('genie-flow parseModel maps state, actor, dialogue and the subclass fields; bookkeeping is left out', (t) => {
  const json = modelJson({
    sessionId: SID,
    state: 3,
    actor: 'user',
    actorInput: 'my name is Ada',
    taskError: 'boom',
    dialogue: [
      { actor: 'assistant', timestamp: '2025-03-01T10:00:00.250000', actor_text: 'What is your name?' },
      { actor: 'user', timestamp: '2025-03-01T10:00:05', actor_text: 'my name is Ada' },
    ],
    fields: { user_name: 'Ada', answers: { q1: [1, 2.5, null] }, __proto__x: 1 },
  });
  const s = parseModel(decodeEnvelope(serialize(json, 2, true), 'the object'), key, 60);
  t.is(s.state, '3');
  t.is(s.schemaVersion, 2);
  t.is(s.actor, 'user');
  t.is(s.actorInput, 'my name is Ada');
  t.deepEqual(s.dialogue, [
    { actor: 'assistant', actorText: 'What is your name?', timestamp: new Date('2025-03-01T09:00:00.250Z') },
    { actor: 'user', actorText: 'my name is Ada', timestamp: new Date('2025-03-01T09:00:05Z') },
  ]);
  t.deepEqual({ ...s.fields }, { user_name: 'Ada', answers: { q1: [1, 2.5, null] }, __proto__x: 1 });
  t.is(Object.getPrototypeOf(s.fields), null);
});

test('genie-flow parseModel keeps a `__proto__` field as data (the server then refuses it by name)', (t) => {
  const json = '{"state":"intro","session_id":"' + SID + '","dialogue":[],"actor":null,"actor_input":"","__proto__":{"polluted":true}}';
  const s = parseModel({ schemaVersion: 0, compressed: false, json }, key, 0);
  t.deepEqual(Object.keys(s.fields), ['__proto__']);
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test('genie-flow parseModel refuses what genie-flow itself could not load', (t) => {
  const env = (json: string) => ({ schemaVersion: 0, compressed: false, json });
  const model = (over: Record<string, unknown>) => env(JSON.stringify({ ...JSON.parse(modelJson({ sessionId: SID, state: 'intro' })), ...over }));
  refusal(t, () => parseModel(env('{"state":'), key, 0), 'malformed', /not JSON/);
  refusal(t, () => parseModel(env('[1]'), key, 0), 'malformed', /not a JSON object/);
  refusal(t, () => parseModel(model({ session_id: 'other' }), key, 0), 'malformed', /session_id is not the one in its key/);
  refusal(t, () => parseModel(model({ state: null }), key, 0), 'unknown-state', /has no state/);
  refusal(t, () => parseModel(model({ state: 1.5 }), key, 0), 'malformed', /neither a string nor an integer/);
  refusal(t, () => parseModel(model({ actor: 'LLM' }), key, 0), 'malformed', /actor "LLM" is not one of system, assistant, user/);
  refusal(t, () => parseModel(model({ actor_input: 5 }), key, 0), 'malformed', /actor_input is not a string/);
  refusal(t, () => parseModel(model({ dialogue: {} }), key, 0), 'malformed', /dialogue is not a list/);
  refusal(t, () => parseModel(model({ dialogue: [{ actor: 'USER', timestamp: '2025-03-01T10:00:00', actor_text: 'x' }] }), key, 0), 'malformed', /dialogue\[0\]\.actor/);
  refusal(t, () => parseModel(model({ dialogue: [{ actor: 'user', timestamp: 'noon', actor_text: 'x' }] }), key, 0), 'malformed', /dialogue\[0\]\.timestamp/);
  refusal(t, () => parseModel(model({ dialogue: [{ actor: 'user', timestamp: '2025-03-01T10:00:00' }] }), key, 0), 'malformed', /dialogue\[0\]\.actor_text/);
  refusal(t, () => parseModel(model({ actor_input: 'x'.repeat(1024 * 1024 + 1) }), key, 0), 'too-large', /actor_input is over/);
  refusal(t, () => parseModel(model({ notes: 'x'.repeat(256 * 1024) }), key, 0), 'too-large', /fields are over/);
});

test('genie-flow decodeSecondary keeps genie-flow\'s serialization, uncompressed, with class and version', (t) => {
  const json = '{"email":"ada@example.com","firstname":"Ada","lastname":"Lovelace","custom_properties":null}';
  for (const compressed of [false, true]) {
    const v = decodeSecondary(Buffer.from('user_info'), serializeSecondary('genie_flow.model.user.User', json, 0, compressed));
    t.is(v.key, 'user_info');
    t.is(v.value.toString('utf8'), `genie_flow.model.user.User:0:0:${json}`);
  }
  refusal(t, () => decodeSecondary(Buffer.from('k'), Buffer.from('0:0:{}')), 'malformed', /secondary storage value "k" does not start with a class name/);
  refusal(t, () => decodeSecondary(Buffer.from('k'), serializeSecondary('a.B', '[1]', 0, false)), 'malformed', /not a JSON object/);
  refusal(t, () => decodeSecondary(Buffer.from('bad\nkey'), serializeSecondary('a.B', '{}', 0, false)), 'malformed', /control characters/);
  refusal(t, () => decodeSecondary(Buffer.from(''), serializeSecondary('a.B', '{}', 0, false)), 'malformed', /1–256 characters/);
});

test('genie-flow parleySessionId keeps UUIDs (canonical form) and names the rest with a deterministic UUIDv5', (t) => {
  t.is(parleySessionId('A', SID), SID);
  t.is(parleySessionId('A', SID.toUpperCase()), SID);
  t.is(parleySessionId('A', 'efb2e397b4554ea2998dd3182e6a6190'), 'efb2e397-b455-4ea2-998d-d3182e6a6190');
  const v5 = parleySessionId('A', 'test-session');
  t.regex(v5, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.is(parleySessionId('A', 'test-session'), v5);
  t.not(parleySessionId('B', 'test-session'), v5);
  t.not(parleySessionId('A', 'efb2e397-b4554ea2998dd3182e6a6190'), 'efb2e397-b455-4ea2-998d-d3182e6a6190', 'half-dashed is not a UUID form');
});

test('genie-flow keys: object keys split into class and session id; the scan pattern escapes the prefix', (t) => {
  t.deepEqual(parseObjectKey(`genie-flow:object:Interview:${SID}`, 'genie-flow'), key);
  t.deepEqual(parseObjectKey('genie-flow:object:Interview:a:b', 'genie-flow'), { className: 'Interview', sessionId: 'a:b' });
  t.is(parseObjectKey('genie-flow:secondary:Interview:x', 'genie-flow'), undefined);
  t.is(parseObjectKey('genie-flow:object::x', 'genie-flow'), undefined);
  t.is(parseObjectKey('genie-flow:object:Interview:', 'genie-flow'), undefined);
  t.is(objectPattern('app[1]*?'), 'app\\[1\\]\\*\\?:object:*');
});

const target: Target = { modelType: 'interview', schemaVersion: 2, states: new Set(['intro', 'ask', '3']), tokenizerEncoding: 'cl100k_base' };

test('genie-flow toRecords: header, one revision, every element and secondary value, trailer', (t) => {
  const s = parseModel(
    {
      schemaVersion: 1,
      compressed: false,
      json: modelJson({
        sessionId: 'not-a-uuid',
        state: 'ask',
        actor: 'assistant',
        actorInput: 'And your age?',
        dialogue: [
          { actor: 'assistant', timestamp: '2025-03-01T10:00:00', actor_text: 'Hi' },
          { actor: 'user', timestamp: '2025-03-01T10:00:07.5', actor_text: 'Hello' },
        ],
        fields: { user_name: 'Ada' },
      }),
    },
    { className: 'Interview', sessionId: 'not-a-uuid' },
    0,
  );
  const secondary = [
    { key: 'z', value: Buffer.from('a.B:0:0:{}') },
    { key: 'persistence', value: Buffer.from('genie_flow.model.persistence.Persistence:0:0:{"level":1}') },
  ];
  const records = toRecords(s, secondary, target, new Date('2030-01-01T00:00:00Z'));
  const created = new Date('2025-03-01T10:00:00Z');
  const updated = new Date('2025-03-01T10:00:07.500Z');
  t.deepEqual(records[0], {
    header: {
      labels: {},
      sessionId: parleySessionId('Interview', 'not-a-uuid'),
      modelType: 'interview',
      schemaVersion: 2,
      state: 'ask',
      createTime: created,
      updateTime: updated,
      expireTime: undefined,
      endUserId: '',
      forkedFromSessionId: '',
      forkedFromRevision: 0,
      tokenizerEncoding: 'cl100k_base',
      revision: 1,
      revisionCount: 1,
    },
  });
  t.like(records[1]?.revision, { revision: 1, schemaVersion: 2, state: 'ask', actor: Actor.ACTOR_ASSISTANT, actorInput: 'And your age?', dialogueLength: 2, updateTime: updated, updateMask: [] });
  t.deepEqual({ ...records[1]?.revision?.fields }, { user_name: 'Ada' });
  t.deepEqual(
    records.slice(2, 4).map((r) => r.element),
    [
      { index: 1, actor: Actor.ACTOR_ASSISTANT, actorText: 'Hi', timestamp: created, eventName: '', revision: 1, tokenCount: 0, utteranceId: '' },
      { index: 2, actor: Actor.ACTOR_USER, actorText: 'Hello', timestamp: updated, eventName: '', revision: 1, tokenCount: 0, utteranceId: '' },
    ],
  );
  t.deepEqual(
    records.slice(4, 6).map((r) => [r.secondary?.key, r.secondary?.revision, r.secondary?.createTime]),
    [
      ['persistence', 1, created],
      ['z', 1, created],
    ],
  );
  t.deepEqual(records[6], { trailer: { revisionCount: 1, elementCount: 2, secondaryCount: 2 } });
  t.is(records.length, 7);
});

test('genie-flow toRecords: no dialogue → created and updated at the import; an unknown state is refused', (t) => {
  const s = parseModel({ schemaVersion: 0, compressed: false, json: modelJson({ sessionId: SID, state: 'intro' }) }, key, 0);
  const now = new Date('2030-01-01T00:00:00Z');
  const r = toRecords(s, [], target, now);
  t.like(r[0]?.header, { sessionId: SID, createTime: now, updateTime: now, state: 'intro' });
  t.is(r[1]?.revision?.actor, Actor.ACTOR_UNSPECIFIED);
  t.deepEqual(r[2], { trailer: { revisionCount: 1, elementCount: 0, secondaryCount: 0 } });
  const gone = { ...s, state: 'outro' };
  refusal(t, () => toRecords(gone, [], target, now), 'unknown-state', /state "outro" is not a state of interview version 2/);
});
