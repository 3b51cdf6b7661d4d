import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat, type ChatResponse, type GenieServiceClient, type SessionUpdate, type StreamUtteranceResponse, type WatchSessionRequest } from '../../src/gen/parley/genie/v1/genie.js';
import { createScratchDatabase, realPostgresUrl, realRedisUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { eventually } from '../helpers/eventually.js';
import { endpointOf, hasRedisServer, PrivateRedis, TcpProxy } from '../helpers/faults.js';
import { chunk } from '../helpers/genie-stream.js';
import { createTenant, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { Watcher } from '../helpers/watch.js';
import { chatType, genie } from '../genie/fixtures.js';

/**
 * Resumable utterances: a watch that starts or resumes while an utterance is in flight gets its deltas so
 * far, then the live ones, with no gap and no duplicate, then the commit that names the utterance. Runs on
 * whichever backend the suite runs on (embedded, or Postgres + Redis); the two-replica case needs the real
 * servers.
 */

let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  await genie(s, tenant).register(chatType);
});
test.after.always(async () => {
  await s?.stop();
});

/** A StreamUtterance call the test feeds chunk by chunk. */
function worker(server: TestServer, t: Tenant, sessionId: string, utteranceId: string) {
  let resolve!: (r: StreamUtteranceResponse) => void;
  let reject!: (e: ServiceError) => void;
  const done = new Promise<StreamUtteranceResponse>((a, b) => ((resolve = a), (reject = b)));
  const call = server.genie.streamUtterance(t.md, (err, res) => (err ? reject(err) : resolve(res!)));
  let next = 0;
  return {
    done,
    /** Sends chunks up to (not including) index `to`; the one before `last` carries last_chunk. */
    send(to: number, last = false) {
      for (; next < to; next++) {
        const first = next === 0;
        call.write(chunk({ ...(first && { sessionId, actor: 'assistant', utteranceId }), text: `c${next} `, lastChunk: last && next === to - 1 }));
      }
      if (last) call.end();
    },
  };
}

const chunksOf = (w: Watcher, utteranceId: string) => w.updates.filter((u) => u.delta?.utteranceId === utteranceId).map((u) => u.delta!.chunkIndex);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const commitOf = (u: SessionUpdate) => u.commit?.events.find((e) => e.dialogueAppended)?.dialogueAppended;
const text = (n: number) => range(0, n).map((i) => `c${i} `).join('');

/** The order a watcher saw: deltas as `d<index>`, caught_up, and commits as `r<revision>`. */
function sequence(w: Watcher, utteranceId: string): string[] {
  return w.updates.flatMap((u) => {
    if (u.delta) return u.delta.utteranceId === utteranceId ? [`d${u.delta.chunkIndex}`] : [];
    if (u.caughtUp) return ['caught_up'];
    if (u.commit) return [`r${u.revision}`];
    return [];
  });
}

async function joinAfterHalf(t: ExecutionContext, workerServer: TestServer, joinServer: TestServer, tn: Tenant) {
  const g = genie(workerServer, tn);
  const { sessionId } = await g.create('chat', {});
  const utteranceId = `u-${uniqueName('join')}`;
  // An early watcher (on the worker's replica) tells when the first 50 deltas went out.
  const early = new Watcher(workerServer.genie, tn.md, sessionId, 1);
  t.teardown(() => early.cancel());
  await early.until((w) => w.caughtUp() !== undefined, 'the early watcher to be live');
  const u = worker(workerServer, tn, sessionId, utteranceId);
  u.send(50);
  await early.until((w) => chunksOf(w, utteranceId).length === 50, 'the first 50 deltas to go out');

  const late = new Watcher(joinServer.genie, tn.md, sessionId, 1);
  t.teardown(() => late.cancel());
  await late.until((w) => w.caughtUp() !== undefined, 'the late watcher to catch up');
  t.deepEqual(chunksOf(late, utteranceId), range(0, 50), 'the deltas so far come before caught_up, in order');

  u.send(100, true);
  const committed = await u.done;
  for (const w of [late, early]) await w.until((x) => x.revisions().includes(committed.revision), `the commit at revision ${committed.revision}`);
  t.deepEqual(sequence(late, utteranceId), [...range(0, 50).map((i) => `d${i}`), 'caught_up', ...range(50, 100).map((i) => `d${i}`), `r${committed.revision}`]);
  const appended = commitOf(late.updates.at(-1)!);
  t.is(appended?.utteranceId, utteranceId, 'the commit names the utterance its deltas belonged to');
  t.is(appended?.element?.actorText, text(100));
  t.deepEqual(chunksOf(early, utteranceId), range(0, 100));

  // A watcher that joins after the commit gets the commit only: no delta of a finished utterance.
  const after = new Watcher(joinServer.genie, tn.md, sessionId, 1);
  t.teardown(() => after.cancel());
  await after.until((w) => w.caughtUp() !== undefined, 'a watcher opened after the commit to catch up');
  t.deepEqual(sequence(after, utteranceId), [`r${committed.revision}`, 'caught_up']);
  t.is(commitOf(after.updates[0]!)?.utteranceId, utteranceId, 'the replayed commit (read back from the event log) names its utterance too');
}

test('a watcher joining after the 50th of 100 deltas gets all 100 in order, then the commit naming the utterance', async (t) => {
  await joinAfterHalf(t, s, s, tenant);
});

test('a watch resumed after a dropped connection mid-utterance, with the last revision and delta it saw, loses nothing and repeats nothing', async (t) => {
  const g = genie(s, tenant);
  const { sessionId } = await g.create('chat', {});
  const utteranceId = `u-${uniqueName('resume')}`;
  const first = new Watcher(s.genie, tenant.md, sessionId, 0);
  await first.until((w) => w.caughtUp() !== undefined, 'the first watch to be live');
  const u = worker(s, tenant, sessionId, utteranceId);
  u.send(30);
  await first.until((w) => chunksOf(w, utteranceId).length >= 20, 'some deltas');
  first.cancel();
  await first.until((w) => w.error !== undefined || w.ended, 'the first watch to be gone');
  const seen = chunksOf(first, utteranceId);
  const lastRevision = Math.max(...first.revisions(), first.caughtUp() ?? 0);
  t.deepEqual(seen, range(0, seen.length), 'the dropped watch saw a gapless prefix');

  u.send(60);
  const resumed = resume(s.genie, tenant, { sessionId, afterRevision: lastRevision, afterDeltas: [{ utteranceId, chunkIndex: seen.at(-1)! }] });
  t.teardown(() => resumed.cancel());
  await resumed.until((w) => w.caughtUp() !== undefined, 'the resumed watch to catch up');
  u.send(80, true);
  const committed = await u.done;
  await resumed.until((w) => w.revisions().includes(committed.revision), 'the commit');
  t.deepEqual([...seen, ...chunksOf(resumed, utteranceId)], range(0, 80), 'both watches together: every delta once, in order');
  t.deepEqual(resumed.revisions(), [committed.revision]);
  t.is(commitOf(resumed.updates.at(-1)!)?.element?.actorText, text(80));
});

test('after_deltas is checked: at most 16 positions, an utterance listed once, a chunk index not negative', async (t) => {
  const { sessionId } = await genie(s, tenant).create('chat', {});
  const cases: Array<[WatchSessionRequest['afterDeltas'], string]> = [
    [range(0, 17).map((i) => ({ utteranceId: `u${i}`, chunkIndex: 0 })), 'after_deltas'],
    [[{ utteranceId: 'x', chunkIndex: 1 }, { utteranceId: 'x', chunkIndex: 2 }], 'after_deltas[1].utterance_id'],
    [[{ utteranceId: 'x', chunkIndex: -1 }], 'after_deltas[0].chunk_index'],
    [[{ utteranceId: '', chunkIndex: 1 }], 'after_deltas[0].utterance_id'],
    [[{ utteranceId: 'u'.repeat(101), chunkIndex: 1 }], 'after_deltas[0].utterance_id'],
  ];
  for (const [afterDeltas, field] of cases) {
    const w = resume(s.genie, tenant, { sessionId, afterRevision: 0, afterDeltas });
    await w.until((x) => x.error !== undefined, `the refusal naming ${field}`);
    t.is(w.error?.code, 3, field);
    t.true(w.error?.details.includes(field), `${field}: ${w.error?.details}`);
    t.true((w.error?.details.length ?? 0) < 400, 'the message does not echo the input');
  }
});

test('buf curl (JSON): WatchSession with afterDeltas resumes mid-utterance from the next chunk', async (t) => {
  const g = genie(s, tenant);
  const { sessionId } = await g.create('chat', {});
  const utteranceId = `u-${uniqueName('curl')}`;
  const early = new Watcher(s.genie, tenant.md, sessionId, 1);
  t.teardown(() => early.cancel());
  await early.until((w) => w.caughtUp() !== undefined, 'the early watcher to be live');
  const u = worker(s, tenant, sessionId, utteranceId);
  u.send(10);
  await early.until((w) => chunksOf(w, utteranceId).length === 10, 'ten deltas');

  const curl = curlWatch(s.address, tenant.md.get('authorization')[0] as string, { sessionId, afterRevision: '1', afterDeltas: [{ utteranceId, chunkIndex: 4 }] });
  await eventually(() => curl.messages().some((m) => m.update?.caughtUp !== undefined), 'buf curl to print caught_up', 30_000);
  u.send(12, true);
  const committed = await u.done;
  await eventually(() => curl.messages().some((m) => m.update?.revision === String(committed.revision)), 'buf curl to print the commit', 30_000);
  await g.del(sessionId);
  await curl.exited;
  const kinds = curl.messages().map((m) => (m.update.delta ? `d${m.update.delta.chunkIndex ?? 0}` : m.update.caughtUp ? 'caught_up' : `r${m.update.revision}`));
  t.deepEqual(kinds, ['d5', 'd6', 'd7', 'd8', 'd9', 'caught_up', 'd10', 'd11', `r${committed.revision}`, `r${committed.revision + 1}`]);
  t.is(curl.messages()[8]!.update.commit.events[0].dialogueAppended.utteranceId, utteranceId);
});

test('a watch may start from a snapshot: the dialogue rendered within a token budget at the current revision, then the deltas in flight, caught_up, and live updates', async (t) => {
  const g = genie(s, tenant);
  const { sessionId } = await g.create('chat', {});
  await g.append(sessionId, Actor.ACTOR_SYSTEM, 'You answer in one sentence.');
  for (let i = 0; i < 6; i++) await g.send(sessionId, i % 2 ? 'llm_says' : 'user_says', `turn ${i}: ${'word '.repeat(20)}`);
  const utteranceId = `u-${uniqueName('snap')}`;
  const early = new Watcher(s.genie, tenant.md, sessionId, 8);
  t.teardown(() => early.cancel());
  await early.until((w) => w.caughtUp() !== undefined, 'the early watcher');
  const u = worker(s, tenant, sessionId, utteranceId);
  u.send(3);
  await early.until((w) => chunksOf(w, utteranceId).length === 3, 'three deltas');

  const budget = 60;
  const expected = await g.render(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, { tokenBudget: budget });
  const snap = new Watcher(s.genie, tenant.md, sessionId, undefined, [], { format: DialogueFormat.DIALOGUE_FORMAT_CHAT, tokenBudget: budget, tokenizerEncoding: '' });
  t.teardown(() => snap.cancel());
  await snap.until((w) => w.caughtUp() !== undefined, 'the snapshot watch to catch up');
  const first = snap.updates[0]!;
  t.is(first.revision, 8, 'the snapshot is at the current revision');
  t.deepEqual(first.snapshot, { text: expected.text, tokenCount: expected.tokenCount, elementCount: expected.elementCount, omittedElementCount: expected.omittedElementCount, tokenizerEncoding: expected.tokenizerEncoding });
  t.true(expected.tokenCount <= budget && expected.omittedElementCount > 0, 'the budget left older turns out');
  t.true(expected.text.includes('You answer in one sentence.'), 'the system element is kept');
  u.send(4, true);
  const committed = await u.done;
  await snap.until((w) => w.revisions().includes(committed.revision), 'the commit');
  t.deepEqual(sequence(snap, utteranceId), ['d0', 'd1', 'd2', 'caught_up', 'd3', `r${committed.revision}`], 'no replay: the snapshot stands for it');

  const both = new Watcher(s.genie, tenant.md, sessionId, 2, [], { format: DialogueFormat.DIALOGUE_FORMAT_JSON, tokenBudget: undefined, tokenizerEncoding: '' });
  await both.until((w) => w.error !== undefined, 'a snapshot with after_revision to be refused');
  t.is(both.error?.code, 3);
  t.true(both.error?.details.includes('after_revision'));
  const bad = new Watcher(s.genie, tenant.md, sessionId, undefined, [], { format: DialogueFormat.DIALOGUE_FORMAT_UNSPECIFIED, tokenBudget: -1, tokenizerEncoding: 'nope' });
  await bad.until((w) => w.error !== undefined, 'a bad snapshot to be refused');
  t.is(bad.error?.code, 3);
  for (const field of ['snapshot.format', 'snapshot.token_budget', 'snapshot.tokenizer_encoding']) t.true(bad.error?.details.includes(field), `${field}: ${bad.error?.details}`);
});

test('Chat: an open with a snapshot is answered by the ack, then the snapshot, then caught_up', async (t) => {
  const g = genie(s, tenant);
  const { sessionId } = await g.create('chat', {});
  await g.send(sessionId, 'user_says', 'hello');
  const responses: ChatResponse[] = [];
  const call = s.genie.chat(tenant.md);
  call.on('data', (r: ChatResponse) => responses.push(r));
  call.on('error', () => {});
  t.teardown(() => call.cancel());
  call.write({ requestId: 'open', open: { sessionId, afterRevision: undefined, afterDeltas: [], snapshot: { format: DialogueFormat.DIALOGUE_FORMAT_CHAT, tokenBudget: 1000, tokenizerEncoding: 'cl100k_base' } } });
  await eventually(() => responses.some((r) => r.update?.caughtUp), 'caught_up on the Chat stream');
  t.deepEqual(responses[0]?.ack, { requestId: 'open', revision: 2 });
  const snapshot = responses[1]?.update?.snapshot;
  t.is(snapshot?.text, (await g.render(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, { tokenBudget: 1000, tokenizerEncoding: 'cl100k_base' })).text);
  t.is(snapshot?.tokenizerEncoding, 'cl100k_base');
  t.is(responses[2]?.update?.caughtUp !== undefined, true);
});

/** A WatchSession opened with after_deltas (the Watcher helper opens without them). */
function resume(client: GenieServiceClient, tn: Tenant, req: Pick<WatchSessionRequest, 'sessionId' | 'afterDeltas'> & { afterRevision: number }): Watcher {
  return new Watcher(client, tn.md, req.sessionId, req.afterRevision, req.afterDeltas);
}

/** `buf curl` on a server stream: the JSON messages it has printed so far, and its exit. */
function curlWatch(address: string, authorization: string, body: unknown) {
  const buf = path.resolve('node_modules/.bin/buf');
  const child = spawn(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-H', `authorization: ${authorization}`, '-d', JSON.stringify(body), `http://${address}/parley.genie.v1.GenieService/WatchSession`]);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { messages: () => splitJson(out), exited };
}

/** Concatenated JSON values (as buf curl prints a stream) → the complete ones so far. */
function splitJson(text: string): any[] {
  const values: any[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}' && --depth === 0) values.push(JSON.parse(text.slice(start, i + 1)));
  }
  return values;
}

const replicaTest = testWhen(realPostgresUrl !== undefined && realRedisUrl !== undefined, 'set DATABASE_URL and REDIS_URL (or the PARLEY_TEST_ variants): two replicas share them', false, true);

replicaTest('a watcher on another replica joining after the 50th of 100 deltas gets all 100 in order, then the commit', async (t) => {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const shared = { databaseUrl: db.url, redisUrl: realRedisUrl, redisCluster: undefined, redisPrefix: `${uniqueName('parley_t')}:` };
  const a = await startTestServer(shared);
  t.teardown(() => a.stop());
  const b = await startTestServer(shared);
  t.teardown(() => b.stop());
  const tn = await createTenant(a);
  await genie(a, tn).register(chatType);
  await joinAfterHalf(t, a, b, tn);
});

const withRedis = hasRedisServer ? test.serial : test.skip;

withRedis('a Redis restart mid-utterance loses the deltas kept so far, never the commit: a watcher joining afterwards starts at the first delta kept since, then gets the whole text in the commit', async (t) => {
  const redis = await PrivateRedis.start(t);
  const rs = await startTestServer({ redisUrl: redis.url });
  t.teardown(() => rs.stop());
  const tn = await createTenant(rs);
  const g = genie(rs, tn);
  await g.register(chatType);
  const { sessionId } = await g.create('chat', {});
  const utteranceId = `u-${uniqueName('restart')}`;
  const u = worker(rs, tn, sessionId, utteranceId);
  u.send(10);
  await eventually(async () => (await rs.app.store.deltas.inFlight(sessionId)).length === 10, 'ten deltas kept');

  await redis.kill();
  await redis.start(); // empty: the kept deltas are gone
  await eventually(() => rs.app.store.kv.ping().then(() => true, () => false), 'parley connected to Redis again');
  u.send(15);
  await eventually(async () => (await rs.app.store.deltas.inFlight(sessionId).catch(() => [])).length === 5, 'the five deltas sent since the restart kept');

  const late = new Watcher(rs.genie, tn.md, sessionId, 1);
  t.teardown(() => late.cancel());
  await late.until((w) => w.caughtUp() !== undefined, 'the late watcher to catch up');
  u.send(20, true);
  const committed = await u.done;
  await late.until((w) => w.revisions().includes(committed.revision), 'the commit');
  t.deepEqual(sequence(late, utteranceId), [...range(10, 15).map((i) => `d${i}`), 'caught_up', ...range(15, 20).map((i) => `d${i}`), `r${committed.revision}`]);
  t.is(commitOf(late.updates.at(-1)!)?.element?.actorText, text(20), 'the commit carries every chunk, the lost deltas included');
});

withRedis('watchers on the worker’s own replica get its deltas without Redis: with Redis unreachable mid-utterance they still arrive, and the commit lands', async (t) => {
  const redis = await PrivateRedis.start(t);
  const proxy = await TcpProxy.start(t, endpointOf(redis.url));
  const rs = await startTestServer({ redisUrl: proxy.via(redis.url) });
  t.teardown(() => rs.stop());
  const tn = await createTenant(rs);
  const g = genie(rs, tn);
  await g.register(chatType);
  const { sessionId } = await g.create('chat', {});
  const utteranceId = `u-${uniqueName('local')}`;
  const w = new Watcher(rs.genie, tn.md, sessionId, 1);
  t.teardown(() => w.cancel());
  await w.until((x) => x.caughtUp() !== undefined, 'the watcher to be live');
  const u = worker(rs, tn, sessionId, utteranceId);
  u.send(5);
  await w.until((x) => chunksOf(x, utteranceId).length === 5, 'five deltas with Redis up');

  await proxy.refuse(); // parley's Redis connections reset, and new ones are refused
  u.send(10, true);
  const committed = await u.done;
  await w.until((x) => x.revisions().includes(committed.revision), 'the commit, with Redis unreachable');
  t.deepEqual(chunksOf(w, utteranceId), range(0, 10), 'every delta, the five sent while Redis was unreachable included');
  t.is(commitOf(w.updates.at(-1)!)?.element?.actorText, text(10));
  await proxy.accept();
});
