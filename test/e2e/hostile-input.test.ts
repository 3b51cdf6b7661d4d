import test from 'ava';
import { status, type Client, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { SendEventRequest, CreateSessionRequest, ListSessionsRequest } from '../../src/gen/parley/genie/v1/genie.js';
import { ChatRole, ListPromptsRequest } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';
import { eventually } from '../helpers/eventually.js';
import { chunk } from '../helpers/genie-stream.js';

let s: TestServer;
let victim: Tenant;
test.before(async () => {
  s = await startTestServer();
  victim = await createTenant(s);
  await genie(s, victim).register(modelType());
});
test.after.always(async () => {
  await s?.stop();
});

const deadline = () => ({ deadline: Date.now() + 20_000 });

/** A tenant with the qa model type and one session. */
async function attacker() {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType({ jsonSchema: undefined }));
  const session = await g.create('qa', { topic: 'tax' });
  return { tenant, g, id: session.sessionId };
}

async function refused(t: any, call: Promise<unknown>, field: string | RegExp): Promise<ServiceError> {
  const err = (await t.throwsAsync(call)) as ServiceError;
  t.is(err.code, status.INVALID_ARGUMENT, err.details);
  const fields = violatedFields(err);
  if (typeof field === 'string') t.deepEqual(fields, [field], err.details);
  else t.true(fields.length > 0 && fields.every((f) => field.test(f)), `${fields.join(', ')} ~ ${field}`);
  return err;
}

/** The other tenant still works: a session round trip with correct data. */
async function victimStillServed(t: any) {
  const g = genie(s, victim);
  const created = await g.create('qa', { topic: 'still here' });
  const read = await g.get(created.sessionId);
  t.deepEqual(read.fields, { topic: 'still here' });
  await g.send(created.sessionId, 'user_input', 'hello?');
  // The server runs in this process: nothing a request did may have touched Object.prototype.
  t.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), PROTOTYPE_KEYS);
}

const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort();

test('hostile input: a __proto__ mask segment is refused and Object.prototype stays intact', async (t) => {
  const { g, id } = await attacker();
  const before = (await g.get(id)).revision;
  await refused(t, g.update(id, ['fields.__proto__.hasOwnProperty'], {}), 'update_mask');
  await refused(t, g.update(id, ['__proto__'], {}), 'update_mask');
  t.is(typeof Object.prototype.hasOwnProperty, 'function');
  t.false('polluted' in {});
  t.is((await g.get(id)).revision, before, 'nothing was written');
  await victimStillServed(t);
});

test('hostile input: constructor and prototype are plain data keys, in fields patches and in fields', async (t) => {
  const { g, id } = await attacker();
  const fields = { constructor: { prototype: { x: 1 } }, toString: 'mine', topic: 'tax' };
  const updated = await g.update(id, [], { fieldsPatch: { constructor: { prototype: { x: 1 } }, toString: 'mine' } });
  t.deepEqual(updated.session!.fields, fields);
  t.deepEqual((await g.get(id)).fields, fields);
  t.false('x' in Object.prototype);
  t.is(typeof ({} as any).constructor.prototype.hasOwnProperty, 'function');
  // Removing a key the object does not own is a no-op, not a walk into Object.prototype.
  const removed = await g.update(id, [], { fieldsPatch: { valueOf: null } });
  t.deepEqual(removed.session!.fields, fields);
  t.false(removed.changed);
  t.is(typeof Object.prototype.valueOf, 'function');
});

test('hostile input: a __proto__ key in a Struct is refused, never applied as a prototype', async (t) => {
  const { g, id } = await attacker();
  // JSON.parse makes __proto__ an own key, as a JSON or Python client would send it.
  await refused(t, g.create('qa', JSON.parse('{"__proto__": {"isAdmin": true}, "topic": "x"}')), 'fields.__proto__');
  await refused(t, g.create('qa', JSON.parse('{"a": {"__proto__": 5}}')), 'fields.a.__proto__');
  await refused(t, g.update(id, [], { fieldsPatch: JSON.parse('{"__proto__": {"x": 1}}') }), 'fields_patch.__proto__');
  t.false('isAdmin' in {});
});

test('hostile input: NUL characters are INVALID_ARGUMENT naming the field, in strings, Struct keys and values', async (t) => {
  const { tenant, g, id } = await attacker();
  const rev = (await g.get(id)).revision;
  await refused(t, g.send(id, 'user_input', 'a\u0000b'), 'actor_input');
  await refused(t, g.create('qa', { topic: 'a\u0000b' }), 'fields.topic');
  await refused(t, g.create('qa', { ['k\u0000']: 1 }), /^fields\.".*"$|^fields\.k/);
  await refused(t, g.update(id, [], { fieldsPatch: { x: ['ok', { deep: '\u0000' }] } }), 'fields_patch.x[1].deep');
  await refused(t, g.append(id, 'user', 'NUL\u0000'), 'actor_text');
  t.is((await g.get(id)).revision, rev, 'nothing was written');

  const p = s.prompt;
  const llmClientId = tenant.llmClientId;
  await refused(t, rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId, llmClientUrl: '', ipAddress: '', userAgent: 'ua\u0000', url: '', requestId: '' }, tenant.md), 'user_agent');
  const { prompt } = await rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md);
  const message = (content: string) => ({ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined });
  await refused(
    t,
    rpc(p, p.appendHistory, { promptId: prompt!.id, request: {}, response: {}, messages: [message('ok'), message('x\u0000')], requestId: '' }, tenant.md),
    'messages[1].content',
  );
  const history = await rpc(p, p.listHistory, { promptId: prompt!.id, pageSize: 0, pageToken: '' }, tenant.md);
  t.is(history.history.length, 0, 'nothing was written');
});

test('hostile input: NaN and ±Infinity in a Struct are INVALID_ARGUMENT, not stored as null', async (t) => {
  const { g } = await attacker();
  await refused(t, g.create('qa', { n: Number.NaN }), 'fields.n');
  await refused(t, g.create('qa', { list: [1, Number.POSITIVE_INFINITY] }), 'fields.list[1]');
  await refused(t, g.create('qa', { m: { x: Number.NEGATIVE_INFINITY } }), 'fields.m.x');
});

test('hostile input: Structs nest at most 32 levels; deeper is INVALID_ARGUMENT naming the field, not INTERNAL', async (t) => {
  const { g } = await attacker();
  const nest = (levels: number): Record<string, unknown> => {
    let v: Record<string, unknown> = { leaf: 1 };
    for (let i = 1; i < levels; i++) v = { a: v };
    return v;
  };
  const ok = await g.create('qa', nest(32));
  t.deepEqual(ok.fields, nest(32));
  for (const levels of [33, 40, 200]) {
    const err = await refused(t, g.create('qa', nest(levels)), /^fields(\.a)*/);
    t.true(err.details.length < 2000);
  }
  await victimStillServed(t);
});

test('hostile input: timestamps outside 0001..9999 are INVALID_ARGUMENT naming the field', async (t) => {
  const tenant = await createTenant(s);
  const p = s.prompt;
  const list = (createdAfter: Date | undefined, createdBefore: Date | undefined) =>
    rpc(p, p.listPrompts, { filter: '', orderBy: '', showTotalSize: false, endUserId: '', pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter, createdBefore }, tenant.md);
  await refused(t, list(new Date('+020000-01-01T00:00:00Z'), undefined), 'created_after');
  await refused(t, list(undefined, new Date('-000100-01-01T00:00:00Z')), 'created_before');
  t.is((await list(new Date('0001-01-01T00:00:00Z'), new Date('9999-12-31T00:00:00Z'))).prompts.length, 0);
});

/** Calls `path` with hand-made request bytes, as a client with a buggy encoder would. */
function rawCall(client: Client, path: string, bytes: Uint8Array, md: Metadata): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(bytes),
      md,
      deadline(),
      (err, res) => (err ? reject(err) : resolve(res!)),
    ),
  );
}

/** `bytes` with the first occurrence of `marker` replaced by `replacement` of the same length. */
function patch(bytes: Uint8Array, marker: string, replacement: number[]): Uint8Array {
  const b = Buffer.from(bytes);
  const at = b.indexOf(marker);
  if (at < 0 || replacement.length !== marker.length) throw new Error('marker not found');
  Buffer.from(replacement).copy(b, at);
  return b;
}

test('hostile input: invalid UTF-8 is INVALID_ARGUMENT naming the field, never stored as U+FFFD', async (t) => {
  const { tenant, g, id } = await attacker();
  const rev = (await g.get(id)).revision;
  const send = SendEventRequest.encode({ sessionId: id, eventName: 'user_input', actor: 0, actorInput: 'MARK', expectedRevision: undefined, requestId: '' }).finish();
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/SendEvent', patch(send, 'MARK', [0x41, 0xff, 0xfe, 0x42]), tenant.md), 'actor_input');
  const create = CreateSessionRequest.encode({ endUserId: '', modelType: 'qa', fields: { MARK: 'v', k: 'MARK' }, expireTime: undefined, requestId: '', labels: {} }).finish();
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/CreateSession', patch(create, 'MARK', [0xc3, 0x28, 0x41, 0x41]), tenant.md), /^fields\./);
  const patched = Buffer.from(create);
  Buffer.from([0xed, 0xa0, 0x80, 0x41]).copy(patched, patched.lastIndexOf('MARK')); // an encoded surrogate
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/CreateSession', patched, tenant.md), 'fields.k');
  // A genuine U+FFFD is valid UTF-8 and is kept as sent.
  await g.send(id, 'user_input', 'replacement \uFFFD char');
  const after = await g.get(id);
  t.is(after.revision, rev + 1);
  t.is(after.actorInput, 'replacement \uFFFD char');
});

/** `base` with fields appended (a later field wins, or merges into a message), as a hand-rolled encoder would. */
function append(base: Uint8Array, write: (w: BinaryWriter) => unknown): Uint8Array {
  const w = new BinaryWriter();
  write(w);
  return Buffer.concat([base, w.finish()]);
}
const stamp = (w: BinaryWriter, no: number, seconds: number, nanos: number) =>
  w.tag(no, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int64(seconds).tag(2, WireType.Varint).int32(nanos).join();

test('hostile input: an int64 past 2^53 is INVALID_ARGUMENT naming the field, and an int32 is never truncated', async (t) => {
  const { tenant, g, id } = await attacker();
  const rev = (await g.get(id)).revision;
  const send = SendEventRequest.encode({ sessionId: id, eventName: 'user_input', actor: 0, actorInput: 'x', expectedRevision: undefined, requestId: '' }).finish();
  for (const big of [2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)]) {
    const bytes = append(send, (w) => w.tag(5, WireType.Varint).int64(big));
    const err = await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/SendEvent', bytes, tenant.md), 'expected_revision');
    t.false(err.details.includes(String(big)), 'the value is not echoed');
  }
  t.is((await g.get(id)).revision, rev, 'nothing was written');
  const list = ListSessionsRequest.encode({ endUserId: '', modelType: '', state: '', pageSize: 0, pageToken: '', filter: '', orderBy: '', showTotalSize: false }).finish();
  // 2^53 + 1 read as an int32 is 1: without the check this was a silent page of one.
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/ListSessions', append(list, (w) => w.tag(3, WireType.Varint).int64(2n ** 53n + 1n)), tenant.md), 'page_size');
});

test('hostile input: Timestamp nanos outside 0..999999999 and Duration nanos of the wrong sign are INVALID_ARGUMENT naming the field', async (t) => {
  const { tenant, g } = await attacker();
  const list = ListPromptsRequest.encode({ filter: '', orderBy: '', showTotalSize: false, endUserId: '', pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined }).finish();
  for (const nanos of [-1, 1_000_000_000, 2 ** 31 - 1]) {
    await refused(t, rawCall(s.prompt, '/parley.prompt.v1.PromptService/ListPrompts', append(list, (w) => stamp(w, 5, 0, nanos)), tenant.md), 'created_after');
  }
  const before = (await g.list('', '', 1000)).sessions.length;
  const create = CreateSessionRequest.encode({ endUserId: '', modelType: 'qa', fields: { topic: 'x' }, expireTime: undefined, requestId: '', labels: {} }).finish();
  const future = Math.floor(Date.now() / 1000) + 86_400;
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/CreateSession', append(create, (w) => stamp(w, 3, future, 1_500_000_000)), tenant.md), 'expire_time');
  t.is((await g.list('', '', 1000)).sessions.length, before, 'nothing was created');
  await refused(t, rawCall(s.admin, '/parley.admin.v1.AdminService/PurgeExpiredData', append(new Uint8Array(), (w) => stamp(w, 1, 86_400, -1)), s.adminMd), 'older_than');
  await refused(t, rawCall(s.admin, '/parley.admin.v1.AdminService/PurgeExpiredData', append(new Uint8Array(), (w) => stamp(w, 1, 0, 1_000_000_000)), s.adminMd), 'older_than');
});

test('hostile input: bytes that are not a message are INVALID_ARGUMENT, and the connection keeps working', async (t) => {
  const { tenant, g, id } = await attacker();
  const truncated = SendEventRequest.encode({ sessionId: id, eventName: 'user_input', actor: 0, actorInput: 'x'.repeat(100), expectedRevision: undefined, requestId: '' }).finish().subarray(0, 60);
  await refused(t, rawCall(s.genie, '/parley.genie.v1.GenieService/SendEvent', truncated, tenant.md), '(request)');
  t.is((await g.get(id)).sessionId, id);
});

test('hostile input: an unknown enum number is INVALID_ARGUMENT naming the field', async (t) => {
  const tenant = await createTenant(s);
  const p = s.prompt;
  const { prompt } = await rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md);
  await refused(
    t,
    rpc(p, p.appendHistory, { promptId: prompt!.id, request: {}, response: {}, messages: [{ role: 77 as ChatRole, content: 'hi', name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }], requestId: '' }, tenant.md),
    'messages[0].role',
  );
});

test('hostile input: 1,000 bad mask entries get a short status and the connection keeps working', async (t) => {
  const tenant = await createTenant(s);
  const p = s.prompt;
  const { prompt } = await rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md);
  const mask = Array.from({ length: 1000 }, (_, i) => `not_a_field_${i}_${'x'.repeat(80)}`);
  const err = (await t.throwsAsync(
    rpc(p, p.updatePrompt, { prompt: { ...prompt!, description: 'new' }, updateMask: mask, requestId: '' }, tenant.md, deadline()),
  )) as ServiceError;
  t.is(err.code, status.INVALID_ARGUMENT);
  t.true(err.details.length <= 1024, `message of ${err.details.length} characters`);
  t.regex(err.details, /and \d+ more/);
  t.false(err.details.includes('x'.repeat(80)), 'no value is echoed at length');
  const detailsBin = err.metadata.get('grpc-status-details-bin')[0] as Buffer;
  t.true(detailsBin.length <= 8192, `details of ${detailsBin.length} bytes`);
  // The same client (one HTTP/2 connection) still answers.
  const again = await rpc(p, p.getPrompt, { id: prompt!.id, sessionKey: '' }, tenant.md, deadline());
  t.is(again.prompt?.description, prompt!.description);
});

test('hostile input: a failed utterance commit tells watchers only the public error', async (t) => {
  const { tenant, id } = await attacker();
  const updates: Array<{ aborted?: { reason: string } }> = [];
  const watch = s.genie.watchSession({ sessionId: id, afterRevision: 0, afterDeltas: [], snapshot: undefined }, tenant.md);
  watch.on('data', (m: { update?: { aborted?: { reason: string } } }) => m.update && updates.push(m.update));
  watch.on('error', () => {});
  await eventually(() => updates.length > 0, 'the replay');
  const result = new Promise<ServiceError | null>((resolve) => {
    const call = s.genie.streamUtterance(tenant.md, deadline(), (err) => resolve(err));
    call.write(chunk({ sessionId: id, actor: 'assistant', text: 'half ' }));
    call.write(chunk({ text: 'a NUL \u0000 here' }));
    call.end();
  });
  const err = await result;
  t.is(err?.code, status.INVALID_ARGUMENT);
  await eventually(() => updates.some((u) => u.aborted), 'the aborted update');
  const reason = updates.find((u) => u.aborted)!.aborted!.reason;
  t.notRegex(reason, /genie_sessions|invalid byte sequence|update |insert /i);
  t.regex(reason, /text/);
  watch.cancel();
});

test('hostile input: a not-found name of any length and script gets a short message, capped in bytes', async (t) => {
  const { tenant } = await attacker();
  const cases: Array<[string, Promise<unknown>]> = [
    ['an account number of 8,192 emoji', rpc(s.admin, s.admin.getAccount, { id: '', accountNumber: '😀'.repeat(8192) }, s.adminMd, deadline())],
    ['a model type name of 32,000 é', rpc(s.genie, s.genie.getModelType, { name: 'é'.repeat(32_000), schemaVersion: undefined }, tenant.md, deadline())],
    ['a model type name of 1,025 a', rpc(s.genie, s.genie.getModelType, { name: 'a'.repeat(1025), schemaVersion: undefined }, tenant.md, deadline())],
    ['a session key of 4,000 ü', rpc(s.prompt, s.prompt.getPrompt, { id: '', sessionKey: 'ü'.repeat(4000) }, tenant.md, deadline())],
  ];
  for (const [what, call] of cases) {
    const err = (await t.throwsAsync(call, undefined, what)) as ServiceError;
    t.not(err.code, status.INTERNAL, what);
    const bytes = Buffer.byteLength(err.details, 'utf8');
    t.true(bytes <= 200, `${what}: a ${bytes}-byte message: ${err.details.slice(0, 80)}`);
  }
  await victimStillServed(t);
});
