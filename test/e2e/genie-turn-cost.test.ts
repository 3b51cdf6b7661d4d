import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { HOT_ELEMENTS } from '../../src/genie/cache.js';
import { bufCurl, curlReason } from '../helpers/buf-curl.js';
import { createScratchDatabase, realPostgresUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { hotCopyOf } from '../helpers/hot-copy.js';
import { createTenant, rpc, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { chatType, code, genie, modelType, reasonOf } from '../genie/fixtures.js';

/**
 * What keeps a turn's cost flat as the dialogue grows: GetSession pages the dialogue (dialogue_page_size), the
 * hot copy holds only the newest elements and moves with every write (so the read after a write is a hit), and
 * a write without a request id decides on the hot copy and commits in one guarded statement — which must never
 * let a stale copy or a stale model type decide anything.
 */
let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const texts = (d: Array<{ actorText: string }> | undefined) => (d ?? []).map((e) => e.actorText);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `m${from + i}`);

test.serial('dialogue_page_size returns the newest elements, from the hot copy or Postgres alike, and counts the rest', async (t) => {
  const g = genie(s, await createTenant(s));
  await g.register(chatType);
  const { sessionId } = await g.create('chat', undefined);
  const total = HOT_ELEMENTS + 30;
  for (let i = 1; i <= total; i++) await g.send(sessionId, i % 2 ? 'user_says' : 'llm_says', `m${i}`);
  const page = (n: number, revision = 0) => rpc(g.client, g.client.getSession, { sessionId, revision: revision || undefined, dialoguePageSize: n }, g.md);
  const check = async (label: string) => {
    const ten = await page(10);
    t.deepEqual(texts(ten.session?.dialogue), range(total - 9, total), `${label}: the newest 10`);
    t.is(ten.omittedDialogueCount, total - 10, `${label}: the rest is counted`);
    t.is(ten.session?.currentResponse?.actorText, `m${total}`);
    const beyond = await page(HOT_ELEMENTS + 10);
    t.deepEqual(texts(beyond.session?.dialogue), range(total - HOT_ELEMENTS - 9, total), `${label}: more than the hot copy holds`);
    const all = await page(0);
    t.deepEqual(texts(all.session?.dialogue), range(1, total), `${label}: 0 is every element that fits`);
    t.is(all.omittedDialogueCount, 0);
    t.deepEqual(texts((await page(5000)).session?.dialogue), range(1, total), `${label}: a size over the maximum is capped, not refused`);
  };
  t.like(await hotCopyOf(s.app.store.kv, sessionId), { revision: total + 1, dialogueLength: total }, 'every write advanced the copy');
  t.is((await hotCopyOf(s.app.store.kv, sessionId))?.texts.length, HOT_ELEMENTS, 'which keeps only the newest elements');
  await check('hot');
  await s.app.store.kv.clear();
  await check('cold');
  const old = await page(3, 5);
  t.deepEqual(texts(old.session?.dialogue), ['m2', 'm3', 'm4'], 'a page of an earlier revision');
  t.is(old.omittedDialogueCount, 1);

  const negative = await t.throwsAsync<ServiceError>(page(-1));
  t.is(code(negative), status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(negative!), ['dialogue_page_size']);

  // JSON through buf curl, as an engineer on a terminal reads the last two turns.
  const auth = g.md.get('authorization')[0] as string;
  const curl = await bufCurl(s.address, 'parley.genie.v1.GenieService/GetSession', { sessionId, dialoguePageSize: 2 }, auth);
  t.deepEqual(
    (curl.session.dialogue as Array<{ actorText: string }>).map((d) => d.actorText),
    range(total - 1, total),
  );
  t.is(curl.omittedDialogueCount, total - 2);
  const bad = await bufCurl(s.address, 'parley.genie.v1.GenieService/GetSession', { sessionId, dialoguePageSize: -3 }, auth);
  t.is(bad.code, 'invalid_argument');
  t.is(curlReason(bad), 'INVALID_ARGUMENT');
});

test.serial('the read after a write is a hit: SendEvent moves the hot copy to its revision, element and all', async (t) => {
  const g = genie(s, await createTenant(s));
  await g.register(chatType);
  const { sessionId } = await g.create('chat', undefined);
  t.like(await hotCopyOf(s.app.store.kv, sessionId), { revision: 1, texts: [] }, 'a new session is cached as created');
  await g.send(sessionId, 'user_says', 'hello');
  await g.send(sessionId, 'llm_says', 'hi there');
  t.like(await hotCopyOf(s.app.store.kv, sessionId), { revision: 3, dialogueLength: 2, texts: ['hello', 'hi there'] });
  const before = await cacheCounts(s);
  const read = await g.getFull(sessionId);
  t.deepEqual(texts(read.session?.dialogue), ['hello', 'hi there']);
  t.deepEqual(await cacheCounts(s), { hits: before.hits + 1, misses: before.misses }, 'served from the copy');
  await g.del(sessionId);
  t.is(await hotCopyOf(s.app.store.kv, sessionId), undefined, 'the deletion tombstoned it');
});

/** The genie_session cache reads the app has counted. */
async function cacheCounts(server: TestServer): Promise<{ hits: number; misses: number }> {
  const text = await server.app.metrics.registry.metrics();
  const count = (result: string) => Number(new RegExp(`parley_cache_reads_total\\{cache="genie_session",result="${result}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  return { hits: count('hit'), misses: count('miss') };
}

// Two replicas on one database with separate Redis prefixes: neither sees the other's copies or bus, so each one's
// copy of a session the other writes is stale, and its model type versions are too, for as long as the test wants.
const twoReplicas = testWhen(realPostgresUrl !== undefined, 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL (two replicas share one Postgres)', true, true);

/** A `gate` session created through A, and a client of one tenant on each replica. */
async function gateOnBlindReplicas(t: ExecutionContext) {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const a = await startTestServer({ databaseUrl: db.url, redisPrefix: `${uniqueName('parley_a')}:` });
  t.teardown(() => a.stop());
  const b = await startTestServer({ databaseUrl: db.url, redisPrefix: `${uniqueName('parley_b')}:` });
  t.teardown(() => b.stop());
  const tenant = await createTenant(a);
  const ga = genie(a, tenant);
  const gb = genie(b, tenant);
  await ga.register(gate);
  const { sessionId } = await ga.create('gate', undefined);
  return { a, ga, gb, sessionId };
}

const gate = modelType({
  name: 'gate',
  jsonSchema: undefined,
  stateMachine: {
    states: ['closed', 'open'],
    initialState: 'closed',
    transitions: [
      { fromState: 'closed', eventName: 'open', toState: 'open', actor: Actor.ACTOR_USER },
      { fromState: 'open', eventName: 'pass', toState: 'open', actor: Actor.ACTOR_USER },
      { fromState: 'open', eventName: 'close', toState: 'closed', actor: Actor.ACTOR_USER },
    ],
  },
});

twoReplicas('a stale hot copy decides nothing: writes on it land on the current session, and refusals are the current state\'s', async (t) => {
  const { a, ga, gb, sessionId } = await gateOnBlindReplicas(t);
  await ga.get(sessionId);
  t.like(await hotCopyOf(a.app.store.kv, sessionId), { revision: 1 }, 'A holds revision 1, state closed');
  await gb.send(sessionId, 'open', 'through B');
  // A's copy says "closed", where `pass` is not allowed; the session is open, where it is.
  const passed = await ga.send(sessionId, 'pass', 'through A');
  t.like(passed, { revision: 3, state: 'open', previousState: 'open' });
  t.is(passed.element?.index, 2, 'appended after B\'s element, not over it');
  await gb.send(sessionId, 'close', 'B again');
  // A's copy now says "open" (A's own write advanced it), where `pass` is allowed; the session is closed.
  const refused = await t.throwsAsync(ga.send(sessionId, 'pass', 'stale'));
  t.is(code(refused), status.FAILED_PRECONDITION);
  t.is(reasonOf(refused), 'TRANSITION_NOT_ALLOWED');
  t.true(refused!.message.includes('"closed"'), 'refused for the state the session is in');
  const stale = await t.throwsAsync(ga.send(sessionId, 'open', 'x', '', 3));
  t.is(code(stale), status.ABORTED, 'an expected revision is checked against the session, not the copy');
  const read = await gb.getFull(sessionId);
  t.deepEqual(texts(read.session?.dialogue), ['through B', 'through A', 'B again']);
  t.is(read.session?.revision, 4);
});

twoReplicas('a model type version registered elsewhere is never bypassed by a write on cached versions', async (t) => {
  const { ga, gb, sessionId } = await gateOnBlindReplicas(t);
  await ga.send(sessionId, 'open', 'warm A up');
  // Version 2, registered through B (A hears nothing): `pass` now closes the gate.
  const v2 = modelType({
    ...gate,
    schemaVersion: 2,
    stateMachine: { ...gate.stateMachine!, transitions: gate.stateMachine!.transitions.map((tr) => (tr.eventName === 'pass' ? { ...tr, toState: 'closed' } : tr)) },
  });
  await gb.register(v2);
  const sent = await ga.send(sessionId, 'pass', 'on version 2');
  t.like(sent, { state: 'closed', revision: 3 }, 'the write used version 2\'s transition');
  t.is((await gb.get(sessionId)).schemaVersion, 2);
});
