import test from 'ava';
import { AppError } from '../../src/errors.js';
import { GenieLive, type UtteranceChunk } from '../../src/genie/live.js';
import type { GenieService } from '../../src/genie/service.js';
import type { GenieCache, LiveEphemeral } from '../../src/storage/genie-cache.js';
import type { GenieEventLog } from '../../src/storage/genie-events.js';
import type { Bus } from '../../src/ports/bus.js';

const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acct' };
const sessionId = '00000000-0000-4000-8000-000000000001';

/** A GenieLive whose commit fails with `failure`, recording what it publishes to watchers. */
function liveFailingWith(failure: Error) {
  const published: LiveEphemeral[] = [];
  const genie = { appendDialogue: async () => Promise.reject(failure), sendEvent: async () => Promise.reject(failure) } as unknown as GenieService;
  const log = { head: async () => ({ accountId: caller.accountId, revision: 1, deleted: false }) } as unknown as GenieEventLog;
  const cache = { publishEphemeral: async (_: string, m: LiveEphemeral) => void published.push(m) } as unknown as GenieCache;
  return { live: new GenieLive(genie, log, cache, {} as Bus, 16), published };
}

async function* chunks(): AsyncGenerator<UtteranceChunk> {
  yield { sessionId, actor: 'assistant', eventName: '', utteranceId: 'u1', text: 'hello', expectedRevision: undefined, lastChunk: true, requestId: '' };
}

const abortedReason = (published: LiveEphemeral[]) => published.flatMap((m) => ('aborted' in m ? [m.aborted.reason] : []));

test('an utterance whose commit fails for an internal reason tells watchers nothing of it', async (t) => {
  const { live, published } = liveFailingWith(new Error('connect ECONNREFUSED 10.0.0.7:5432 user=parley'));
  await t.throwsAsync(live.streamUtterance(caller, chunks(), new AbortController().signal));
  t.deepEqual(abortedReason(published), ['internal error']);
});

test("an utterance refused by the domain tells watchers the domain's reason", async (t) => {
  const { live, published } = liveFailingWith(new AppError('FAILED_PRECONDITION', 'event x is not allowed in state y'));
  await t.throwsAsync(live.streamUtterance(caller, chunks(), new AbortController().signal));
  t.deepEqual(abortedReason(published), ['event x is not allowed in state y']);
});
