import test from 'ava';
import { GenieCache } from '../../src/genie/cache.js';
import type { ModelTypeDef } from '../../src/genie/model-type.js';
import { GenieUseCases } from '../../src/genie/service.js';
import { UtteranceRelay } from '../../src/genie/utterance-relay.js';
import { asDelta, DeltaPositions, GenieWatch, type LiveUpdate } from '../../src/genie/watch.js';
import { busMessageCodec } from '../../src/genie/events.js';
import { MemoryDeltaLog } from '../../src/storage/memory-deltas.js';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { MemoryGenieStore } from './memory-store.js';

const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acct' };
const chat: ModelTypeDef = {
  name: 'chat',
  schemaVersion: 1,
  jsonSchema: undefined,
  stateMachine: { states: ['open'], initialState: 'open', transitions: [{ fromState: 'open', event: 'says', toState: 'open', actor: 'assistant' }] },
  upgrades: [],
  cacheTtlSeconds: 60,
  sessionTtlSeconds: 0,
};

async function world() {
  const store = new MemoryGenieStore();
  const bus = new MemoryBus();
  const deltas = new MemoryDeltaLog();
  const relay = new UtteranceRelay(bus, deltas, 60_000);
  const genie = new GenieUseCases({ types: store, sessions: store, cache: new GenieCache(new MemoryKv(), bus), unitOfWork: store, bus });
  await genie.modelTypes.register(caller, chat);
  const { session } = await genie.createSession(caller, 'chat', {});
  return { genie, relay, deltas, live: new GenieWatch(genie, store, relay, bus, 64), sessionId: session.id };
}

/** Watches until caught up; what it received, as `d<utterance>:<index>`, `r<revision>` and `caught_up`. */
async function watchUntilCaughtUp(live: GenieWatch, sessionId: string, afterRevision: number, afterDeltas = new Map<string, number>()): Promise<string[]> {
  const seen: string[] = [];
  const stop = new AbortController();
  const done = live.watch(
    caller,
    sessionId,
    { afterRevision, afterDeltas },
    async (u: LiveUpdate) => {
      if ('caughtUp' in u) {
        seen.push('caught_up');
        stop.abort();
      } else if ('commit' in u) seen.push(`r${u.revision}`);
      else if ('snapshot' in u) seen.push(`snapshot ${u.revision}`);
      else if (u.ephemeral.type === 'utterance_delta') seen.push(`d${u.ephemeral.utteranceId}:${u.ephemeral.chunkIndex}`);
      else seen.push(`aborted ${u.ephemeral.utteranceId}`);
    },
    stop.signal,
  );
  await done;
  return seen;
}

const delta = (relay: UtteranceRelay, sessionId: string, utteranceId: string, chunkIndex: number) =>
  relay.delta(sessionId, { utteranceId, actor: 'assistant', chunkIndex, text: `${chunkIndex} ` });

test('a joining watcher gets the deltas of utterances in flight after the replay, before caught_up, from its positions on', async (t) => {
  const { relay, live, sessionId } = await world();
  for (let i = 0; i < 3; i++) await delta(relay, sessionId, 'a', i);
  for (let i = 0; i < 2; i++) await delta(relay, sessionId, 'b', i);
  t.deepEqual(await watchUntilCaughtUp(live, sessionId, 0), ['r1', 'da:0', 'da:1', 'da:2', 'db:0', 'db:1', 'caught_up']);
  t.deepEqual(await watchUntilCaughtUp(live, sessionId, 1, new Map([['a', 1]])), ['da:2', 'db:0', 'db:1', 'caught_up'], 'a resume skips what it had');
});

test('an utterance whose commit the replay delivers gets no deltas afterwards, even when its log was not yet ended (the commit raced the join)', async (t) => {
  const { genie, relay, live, sessionId } = await world();
  for (let i = 0; i < 3; i++) await delta(relay, sessionId, 'u', i);
  // Committed, but the worker has not yet marked the utterance ended in the log (it does so after the commit).
  await genie.appendDialogue(caller, { sessionId, actor: 'assistant', actorText: '0 1 2 ', utteranceId: 'u' });
  t.deepEqual(await watchUntilCaughtUp(live, sessionId, 0), ['r1', 'r2', 'caught_up']);
  t.deepEqual(await watchUntilCaughtUp(live, sessionId, 1), ['r2', 'caught_up']);
});

test('an aborted utterance is not in flight for a joining watcher', async (t) => {
  const { relay, live, sessionId } = await world();
  await delta(relay, sessionId, 'gone', 0);
  await relay.aborted(sessionId, 'gone', 'cancelled');
  t.deepEqual(await watchUntilCaughtUp(live, sessionId, 1), ['caught_up']);
});

test('DeltaPositions delivers each delta once, in order, and nothing of an ended utterance; it follows a bounded number of utterances', (t) => {
  const p = new DeltaPositions(new Map([['a', 4]]));
  t.false(p.take('a', 3));
  t.false(p.take('a', 4));
  t.true(p.take('a', 5));
  t.false(p.take('a', 5), 'a duplicate');
  t.true(p.take('a', 7), 'a gap (deltas lost with Redis) is delivered: the commit carries the whole text');
  p.end('a');
  t.false(p.take('a', 8), 'nothing after the end');
  t.true(p.take('b', 0));
  for (let i = 0; i < 100; i++) p.take(`x${i}`, 0);
  t.true(p.take('b', 0), 'an utterance forgotten past the bound starts over rather than being refused');
});

test('the hand-checked delta decode accepts exactly what the bus message schema accepts, as the schema returns it', (t) => {
  const good = { type: 'utterance_delta', v: 1, utteranceId: 'u', actor: 'assistant', chunkIndex: 3, text: 'hi' };
  const cases: unknown[] = [
    good,
    { ...good, extra: 'dropped' },
    { ...good, actor: 'robot' },
    { ...good, chunkIndex: 1.5 },
    { ...good, chunkIndex: '3' },
    { ...good, text: 7 },
    { ...good, utteranceId: undefined },
    { ...good, v: 2 },
    { ...good, type: 'utterance_aborted' },
    null,
    [good],
    'utterance_delta',
  ];
  for (const c of cases) {
    let viaSchema: unknown;
    try {
      const m = busMessageCodec.decode(c);
      viaSchema = m.type === 'utterance_delta' ? m : undefined;
    } catch {
      viaSchema = undefined;
    }
    t.deepEqual(asDelta(c), viaSchema, JSON.stringify(c));
  }
});
