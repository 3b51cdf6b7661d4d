import test, { type ExecutionContext } from 'ava';
import { randomUUID } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat, type ImportSessionRequest, type ImportSessionResponse, type SessionRecord } from '../../src/gen/parley/genie/v1/genie.js';
import { exportSession, importSessions, recordFromJson, recordToJson } from '../../src/transfer/records.js';
import { createTenant, errorInfo, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { Watcher } from '../helpers/watch.js';
import { chunk } from '../helpers/genie-stream.js';
import { genie, modelType, step } from '../genie/fixtures.js';

let s: TestServer;
let other: TestServer;
test.before(async () => {
  [s, other] = await Promise.all([startTestServer(), startTestServer()]);
});
test.after.always(async () => {
  await Promise.all([s?.stop(), other?.stop()]);
});

type G = ReturnType<typeof genie>;

/** Version 2 of `qa` adds a field with a default: sessions written before it upgrade on read. */
const qaV2 = modelType({ schemaVersion: 2, upgrades: [step(1, { addField: { name: 'lang', defaultValue: 'en' } })] });

async function tenantOn(server: TestServer): Promise<{ g: G; tenant: Tenant }> {
  const tenant = await createTenant(server);
  const g = genie(server, tenant);
  await g.register(modelType());
  return { g, tenant };
}

/** A session with something of everything: end user, expiry, events, appends, a streamed utterance, updates, values, a newer schema version. */
async function richSession(server: TestServer, g: G, tenant: Tenant): Promise<string> {
  const { session } = await import('../helpers/harness.js').then(({ rpc }) =>
    rpc(g.client, g.client.createSession, { endUserId: 'eu-7', modelType: 'qa', fields: { topic: 'tax', turns: 0 }, expireTime: new Date('2031-01-02T03:04:05.678Z'), requestId: '', labels: { team: 'tax', tier: 'gold' } }, g.md),
  );
  const id = session!.sessionId;
  await g.send(id, 'user_input', 'What is VAT?');
  await g.send(id, 'ai_response', 'A tax on value added. ✓ <|endoftext|>');
  await g.append(id, 'system', 'Be brief.');
  await g.update(id, ['actor_input'], { actorInput: 'edited by hand', fieldsPatch: { turns: 1, profile: { age: 41 } } });
  await g.put(id, 'doc.pdf', Buffer.from([0, 1, 2, 255, 254]));
  await g.put(id, 'a-empty', Buffer.alloc(0));
  // Registered once per account: the tests that import register it in the target account first.
  await g.register(qaV2).catch((e: ServiceError) => (e.code === status.ALREADY_EXISTS ? undefined : Promise.reject(e)));
  await g.send(id, 'user_input', 'And in 2030?');
  // A streamed utterance: its commit carries an utterance id that a watch replay shows.
  await new Promise<void>((resolve, reject) => {
    const call = server.genie.streamUtterance(tenant.md, (err) => (err ? reject(err) : resolve()));
    call.write(chunk({ sessionId: id, actor: 'assistant', eventName: 'ai_response', utteranceId: 'utt-1', text: 'Hel' }));
    call.write(chunk({ text: 'lo' }));
    call.end();
  });
  await g.update(id, ['expire_time'], { expireTime: new Date('2032-01-01T00:00:00.000Z') });
  return id;
}

async function exported(server: TestServer, tenant: Tenant, id: string, all: boolean): Promise<SessionRecord[]> {
  const out: SessionRecord[] = [];
  for await (const r of exportSession(server.genie, id, all, tenant.md)) out.push(r);
  return out;
}

/** One ImportSession call with these messages. */
function importRaw(server: TestServer, tenant: Tenant, messages: ImportSessionRequest[], opts: { end?: boolean; cancel?: boolean } = {}): Promise<ImportSessionResponse> {
  return new Promise((resolve, reject) => {
    const call = server.genie.importSession(tenant.md, (err, res) => (err ? reject(err) : resolve(res!)));
    for (const m of messages) call.write(m);
    if (opts.cancel) setImmediate(() => call.cancel());
    else if (opts.end !== false) call.end();
  });
}

const asMessages = (records: SessionRecord[], keepSessionId = false, requestId = ''): ImportSessionRequest[] =>
  records.map((record, i) => ({ record, keepSessionId: i === 0 && keepSessionId, requestId: i === 0 ? requestId : '' }));

/** Records without the one difference a new id makes. */
const sansId = (records: SessionRecord[]) => records.map((r) => (r.header ? { ...r, header: { ...r.header, sessionId: '' } } : r));

/** Everything the read RPCs say of a session (every revision, the whole dialogue, every value, the watch replay). */
async function reads(server: TestServer, g: G, tenant: Tenant, id: string) {
  const head = await g.get(id);
  const revisions = [];
  for (let r = 1; r <= head.revision; r++) {
    const at = await g.getFull(id, r).catch((e: ServiceError) => ({ code: e.code }));
    revisions.push(at);
  }
  const dialogue = await g.listDialogue(id, 1000);
  const formats = [];
  for (const f of [DialogueFormat.DIALOGUE_FORMAT_CHAT, DialogueFormat.DIALOGUE_FORMAT_YAML, DialogueFormat.DIALOGUE_FORMAT_JSON, DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR]) {
    formats.push(await g.render(id, f));
    formats.push(await g.render(id, f, { tokenBudget: 80 }));
  }
  const keys = (await g.keys(id)).entries;
  const values = await Promise.all(keys.map((k) => g.getSecondary(id, k.key)));
  const w = new Watcher(server.genie, tenant.md, id, 0);
  await w.until((x) => x.caughtUp() !== undefined, 'the replay');
  w.call.cancel();
  const replay = w.updates.filter((u) => u.commit).map((u) => ({ revision: u.revision, commit: u.commit }));
  const strip = <T extends { session?: { sessionId: string } }>(x: T) => ({ ...x, session: x.session && { ...x.session, sessionId: '' } });
  return {
    head: { ...head, sessionId: '' },
    revisions: revisions.map((r) => ('session' in r ? strip(r) : r)),
    dialogue,
    formats,
    keys,
    values,
    replay,
  };
}

test('export of every revision → import in another account → export again: the same records, and every read the same', async (t) => {
  const a = await tenantOn(s);
  const id = await richSession(s, a.g, a.tenant);
  const fork = await a.g.fork(id, 5);
  await a.g.append(fork.sessionId, 'user', 'only in the fork');
  const b = await tenantOn(s);
  await b.g.register(qaV2);
  for (const source of [id, fork.sessionId]) {
    const records = await exported(s, a.tenant, source, true);
    t.truthy(records[0]!.header);
    t.truthy(records.at(-1)!.trailer);
    const res = await importRaw(s, b.tenant, asMessages(records));
    t.not(res.session!.sessionId, source, 'a new id by default');
    t.is(res.revisionCount, records[0]!.header!.revisionCount);
    const again = await exported(s, b.tenant, res.session!.sessionId, true);
    t.deepEqual(sansId(again), sansId(records), 'export → import → export gives the same records');
    t.deepEqual(await reads(s, b.g, b.tenant, res.session!.sessionId), await reads(s, a.g, a.tenant, source), 'every read RPC answers the same');
  }
  const forked = await b.g.list();
  t.true(forked.sessions.some((x) => x.forkedFromSessionId === id && x.forkedFromRevision === 5), 'the fork keeps its origin');
});

test('export of the current revision only: one revision, the whole dialogue and every value; earlier revisions read as NOT_FOUND', async (t) => {
  const a = await tenantOn(s);
  await a.g.register(qaV2);
  const id = await richSession(s, a.g, a.tenant);
  const records = await exported(s, a.tenant, id, false);
  const revs = records.filter((r) => r.revision);
  t.is(revs.length, 1);
  const head = await a.g.get(id);
  t.is(revs[0]!.revision!.revision, head.revision);
  t.is(records.filter((r) => r.element).length, head.dialogueLength);
  t.is(records.filter((r) => r.secondary).length, 2);
  const res = await importRaw(s, a.tenant, asMessages(records));
  const copy = res.session!.sessionId;
  t.deepEqual(sansId(await exported(s, a.tenant, copy, false)), sansId(records));
  const [x, y] = [await a.g.getFull(copy), await a.g.getFull(id)];
  t.deepEqual({ ...x, session: { ...x.session!, sessionId: '' } }, { ...y, session: { ...y.session!, sessionId: '' } });
  const before = await a.g.get(copy, 2).catch((e: ServiceError) => e);
  t.is((before as ServiceError).code, status.NOT_FOUND);
  const w = new Watcher(s.genie, a.tenant.md, copy, 0);
  await w.until((v) => v.caughtUp() !== undefined, 'the replay');
  w.call.cancel();
  t.deepEqual(w.revisions(), [head.revision], 'the log holds the creation, at the current revision');
  t.truthy(w.updates[0]!.commit!.events[0]!.sessionCreated);
});

test('keep_session_id moves a session to another server with its id; a second import is ALREADY_EXISTS and changes nothing', async (t) => {
  const a = await tenantOn(s);
  await a.g.register(qaV2);
  const id = await richSession(s, a.g, a.tenant);
  const records = await exported(s, a.tenant, id, true);
  const b = await tenantOn(other);
  await b.g.register(qaV2);
  const res = await importRaw(other, b.tenant, asMessages(records, true));
  t.is(res.session!.sessionId, id);
  const before = await reads(other, b.g, b.tenant, id);
  t.deepEqual(before, await reads(s, a.g, a.tenant, id));
  const err = (await importRaw(other, b.tenant, asMessages(records, true)).catch((e: ServiceError) => e)) as ServiceError;
  t.is(err.code, status.ALREADY_EXISTS);
  t.is(errorInfo(err)?.reason, 'SESSION_ALREADY_EXISTS');
  t.deepEqual(await reads(other, b.g, b.tenant, id), before, 'nothing changed');
  // Ids are global: another account cannot take it either, nor the source server's own account.
  const c = await tenantOn(other);
  await c.g.register(qaV2);
  t.is(((await importRaw(other, c.tenant, asMessages(records, true)).catch((e: ServiceError) => e)) as ServiceError).code, status.ALREADY_EXISTS);
  t.is(((await importRaw(s, a.tenant, asMessages(records, true)).catch((e: ServiceError) => e)) as ServiceError).code, status.ALREADY_EXISTS);
  // A deleted session's id stays taken while its tombstone is kept.
  await a.g.del(id);
  t.is(((await importRaw(s, a.tenant, asMessages(records, true)).catch((e: ServiceError) => e)) as ServiceError).code, status.ALREADY_EXISTS);
});

test('a retry with the same request_id answers the first import and writes nothing', async (t) => {
  const a = await tenantOn(s);
  const { sessionId } = await a.g.create('qa', { topic: 'x' });
  await a.g.send(sessionId, 'user_input', 'hi');
  const records = await exported(s, a.tenant, sessionId, true);
  const rid = randomUUID();
  const first = await importRaw(s, a.tenant, asMessages(records, false, rid));
  const second = await importRaw(s, a.tenant, asMessages(records, false, rid));
  t.is(second.session!.sessionId, first.session!.sessionId);
  t.is((await a.g.list()).sessions.length, 2);
  const changed = records.map((r) => (r.element ? { ...r, element: { ...r.element, actorText: 'other' } } : r));
  const err = (await importRaw(s, a.tenant, asMessages(changed, false, rid)).catch((e: ServiceError) => e)) as ServiceError;
  t.is(errorInfo(err)?.reason, 'REQUEST_ID_REUSED');
});

async function sample(g: G, tenant: Tenant) {
  const { sessionId } = await g.create('qa', { topic: 'x' });
  await g.send(sessionId, 'user_input', 'hi');
  await g.send(sessionId, 'ai_response', 'hello');
  return exported(s, tenant, sessionId, true);
}

/** The import fails with `code` (and `reason`, `field` when given), and the account holds no more sessions than before. */
async function refused(t: ExecutionContext, g: G, tenant: Tenant, messages: ImportSessionRequest[], want: { code: status; reason?: string; field?: string }, opts?: { end?: boolean; cancel?: boolean }) {
  const before = (await g.list()).sessions.length;
  const err = (await importRaw(s, tenant, messages, opts).then(
    () => undefined,
    (e: ServiceError) => e,
  ))!;
  t.truthy(err, 'refused');
  t.is(err.code, want.code, err.details);
  if (want.reason) t.is(errorInfo(err)?.reason, want.reason);
  if (want.field) t.true(violatedFields(err).includes(want.field), `${violatedFields(err).join(', ')} names ${want.field}`);
  t.is((await g.list()).sessions.length, before, 'nothing written');
}

test('refused imports write nothing: unknown model type or version, bad state, broken order, bad counts, missing trailer, a cut stream', async (t) => {
  const a = await tenantOn(s);
  const records = await sample(a.g, a.tenant);
  const b = await tenantOn(s);
  const fresh = await createTenant(s);
  const bare = genie(s, fresh);
  await refused(t, bare, fresh, asMessages(records), { code: status.FAILED_PRECONDITION, reason: 'MODEL_TYPE_NOT_REGISTERED' });
  const at2 = records.map((r) => (r.revision ? { ...r, revision: { ...r.revision, schemaVersion: 2 } } : r));
  await refused(t, b.g, b.tenant, asMessages(at2), { code: status.FAILED_PRECONDITION, reason: 'MODEL_TYPE_NOT_REGISTERED' });
  const badState = records.map((r, i) => (i === 1 ? { revision: { ...r.revision!, state: 'nowhere' } } : r));
  await refused(t, b.g, b.tenant, asMessages(badState), { code: status.INVALID_ARGUMENT, field: 'records[1].revision.state' });
  const badFields = records.map((r, i) => (i === 1 ? { revision: { ...r.revision!, fields: { topic: 3 } } } : r));
  await refused(t, b.g, b.tenant, asMessages(badFields), { code: status.INVALID_ARGUMENT });
  // The two revisions of the first event swapped.
  const swapped = [...records];
  const [i, j] = [swapped.findIndex((r) => r.revision?.revision === 2), swapped.findIndex((r) => r.revision?.revision === 3)];
  [swapped[i], swapped[j]] = [swapped[j]!, swapped[i]!];
  await refused(t, b.g, b.tenant, asMessages(swapped), { code: status.INVALID_ARGUMENT });
  const gap = records.filter((r) => r.element?.index !== 1);
  await refused(t, b.g, b.tenant, asMessages(gap), { code: status.INVALID_ARGUMENT });
  const miscounted = records.map((r) => (r.trailer ? { trailer: { ...r.trailer, elementCount: 9 } } : r));
  await refused(t, b.g, b.tenant, asMessages(miscounted), { code: status.INVALID_ARGUMENT, field: `records[${records.length - 1}].trailer.element_count` });
  await refused(t, b.g, b.tenant, asMessages(records.slice(0, -1)), { code: status.INVALID_ARGUMENT, field: `records[${records.length - 1}].trailer` });
  await refused(t, b.g, b.tenant, asMessages(records.slice(1)), { code: status.INVALID_ARGUMENT, field: 'records[0].header' });
  await refused(t, b.g, b.tenant, asMessages([...records, records[0]!]), { code: status.INVALID_ARGUMENT });
  // Cut mid-import: the client cancels after half the records.
  await refused(t, b.g, b.tenant, asMessages(records.slice(0, 3)), { code: status.CANCELLED }, { cancel: true });
  t.is((await b.g.list()).sessions.length, 0);
});

test('another account exports nothing: NOT_FOUND', async (t) => {
  const a = await tenantOn(s);
  const { sessionId } = await a.g.create('qa', { topic: 'x' });
  const b = await tenantOn(s);
  const err = (await exported(s, b.tenant, sessionId, true).catch((e: ServiceError) => e)) as ServiceError;
  t.is(err.code, status.NOT_FOUND);
  t.is(errorInfo(err)?.reason, 'SESSION_NOT_FOUND');
});

test('a session deleted during its export: the stream ends with NOT_FOUND, never with a trailer', async (t) => {
  const a = await tenantOn(s);
  const { sessionId } = await a.g.create('qa', { topic: 'x' });
  for (let i = 0; i < 150; i++) await a.g.append(sessionId, 'user', `line ${i}`);
  const seen: SessionRecord[] = [];
  const err = await (async () => {
    for await (const r of exportSession(s.genie, sessionId, true, a.tenant.md)) {
      seen.push(r);
      if (seen.length === 1) await a.g.del(sessionId);
    }
  })().then(
    () => undefined,
    (e: ServiceError) => e,
  );
  t.is(err?.code, status.NOT_FOUND);
  t.false(seen.some((r) => r.trailer));
});

test('importSessions takes JSON lines of several sessions and reports each refused one', async (t) => {
  const a = await tenantOn(s);
  const one = await sample(a.g, a.tenant);
  const two = await sample(a.g, a.tenant);
  const lines = [...one, ...two.slice(0, -1), ...one].map(recordToJson);
  t.true(lines.every((l) => !l.includes('\n')));
  const back = lines.map((l, i) => recordFromJson(l, i + 1));
  t.deepEqual(back.slice(0, one.length), one, 'JSON lines round-trip');
  async function* gen() {
    yield* back;
  }
  const report = await importSessions(s.genie, gen(), { keepSessionIds: true, metadata: a.tenant.md });
  t.is(report.imported, 0, 'the exported ids are taken in the same account');
  t.is(report.refused.length, 3);
  const b = await tenantOn(s);
  const moved = await importSessions(s.genie, gen(), { keepSessionIds: false, metadata: b.tenant.md });
  t.is(moved.imported, 2);
  t.deepEqual(
    moved.refused.map((r) => r.sessionId),
    [two[0]!.header!.sessionId],
  );
  t.is((await b.g.list()).sessions.length, 2);
  t.is(Actor.ACTOR_USER, back.find((r) => r.element)!.element!.actor);
});
