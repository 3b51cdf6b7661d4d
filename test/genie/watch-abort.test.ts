import test from 'ava';
import { AppError } from '../../src/errors.js';
import { GenieWatch, type UtterancePart, type UtteranceStart } from '../../src/genie/watch.js';
import { GenieUseCases } from '../../src/genie/service.js';
import { GenieCache } from '../../src/genie/cache.js';
import { busMessageCodec, sessionChannel, type EphemeralEvent } from '../../src/genie/events.js';
import { decodeJson } from '../../src/json-codec.js';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { MemoryDeltaLog } from '../../src/storage/memory-deltas.js';
import { UtteranceRelay } from '../../src/genie/utterance-relay.js';
import { MemoryGenieStore } from './memory-store.js';

const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acct' };
const sessionId = '00000000-0000-4000-8000-000000000001';

/** A session store whose writes fail with `failure`. */
class FailingStore extends MemoryGenieStore {
  constructor(private readonly failure: Error) {
    super();
  }
  override async lockSession(): Promise<undefined> {
    throw this.failure;
  }
}

/** A GenieWatch whose commit fails with `failure`, recording what it publishes to watchers. */
async function liveFailingWith(failure: Error) {
  const published: EphemeralEvent[] = [];
  const store = new FailingStore(failure);
  const bus = new MemoryBus();
  const cache = new GenieCache(new MemoryKv(), bus);
  await bus.subscribe(sessionChannel(sessionId), (m) => {
    const message = decodeJson(busMessageCodec, m);
    if (message.type !== 'commit') published.push(message);
  });
  await store.insertSession(
    { endUserId: undefined, id: sessionId, accountId: caller.accountId, modelType: 'chat', schemaVersion: 1, state: 'open', actor: '', actorInput: '', fields: {}, tokenEncoding: 'o200k_base', forkedFromSessionId: undefined, forkedFromRevision: undefined, expireTime: undefined, labels: {} },
    undefined,
    [],
  );
  const genie = new GenieUseCases({ types: store, sessions: store, cache, unitOfWork: store, bus });
  return { live: new GenieWatch(genie, store, new UtteranceRelay(bus, new MemoryDeltaLog(), 60_000), bus, 16), published };
}

const start: UtteranceStart = { sessionId, actor: 'assistant', eventName: '', utteranceId: 'u1', text: 'hello', expectedRevision: undefined, lastChunk: true, requestId: '' };
async function* noMore(): AsyncGenerator<UtterancePart> {}

const abortedReason = (published: EphemeralEvent[]) => published.flatMap((m) => (m.type === 'utterance_aborted' ? [m.reason] : []));

test('an utterance whose commit fails for an internal reason tells watchers nothing of it', async (t) => {
  const { live, published } = await liveFailingWith(new Error('connect ECONNREFUSED 10.0.0.7:5432 user=parley'));
  await t.throwsAsync(live.streamUtterance(caller, start, noMore(), new AbortController().signal));
  t.deepEqual(abortedReason(published), ['internal error']);
});

test("an utterance refused by the domain tells watchers the domain's reason", async (t) => {
  const { live, published } = await liveFailingWith(new AppError('FAILED_PRECONDITION', 'event x is not allowed in state y'));
  await t.throwsAsync(live.streamUtterance(caller, start, noMore(), new AbortController().signal));
  t.deepEqual(abortedReason(published), ['event x is not allowed in state y']);
});
