import { fuzzRun, fuzzTest, streamCalls } from './lib/run.js';

// Issue 9: every streaming RPC opened with random requests, fed junk, cancelled at once or soon, or
// half-closed; each ends or is cancelled, and the server releases every one of them.
fuzzTest(['server-stream', 'client-stream', 'bidi'])('fuzz: streams end or cancel, never INTERNAL or UNKNOWN, and the server releases every one', async (t) => {
  await fuzzRun(t, ['server-stream', 'client-stream', 'bidi'], streamCalls());
});
