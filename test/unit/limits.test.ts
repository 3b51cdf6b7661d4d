import test from 'ava';
import { AppError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { Metrics, REFUSALS } from '../../src/metrics.js';
import { Limits, RateLimiter, TokenBucket, type LimitsConfig } from '../../src/transport/limits.js';

const config: LimitsConfig = {
  streamsPerAccount: 2,
  utteranceBytesPerAccount: 100,
  utteranceBytesPerUtterance: 60,
  clientStreamIdleMs: 1_000,
  requestsPerSecond: 10,
  requestBurst: 3,
};

function setup(overrides: Partial<LimitsConfig> = {}) {
  let now = 1_000;
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger('warn', (l) => lines.push(JSON.parse(l)));
  const metrics = new Metrics({ logger: createLogger('silent') });
  const limits = new Limits({ ...config, ...overrides }, { logger, metrics, now: () => now });
  return { limits, metrics, lines, advance: (ms: number) => (now += ms) };
}

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    if (e instanceof AppError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
};

test('a token bucket gives its burst, then one token per 1/rate, and says how long to wait', (t) => {
  const b = new TokenBucket(4, 2, 0);
  t.is(b.take(0), 0);
  t.is(b.take(0), 0);
  t.is(b.take(0), 250, 'one token comes back after 250 ms at 4/s');
  t.is(b.take(100), 150);
  t.is(b.take(250), 0);
  t.is(b.take(10_000), 0, 'it refills up to its burst and no further');
  t.is(b.take(10_000), 0);
  t.true(b.take(10_000) > 0);
});

test('a clock that goes back neither refills nor breaks a bucket', (t) => {
  const b = new TokenBucket(1, 1, 5_000);
  t.is(b.take(5_000), 0);
  t.is(b.take(4_000), 1_000);
  t.is(b.take(6_000), 0);
});

test('the rate limiter keeps one bucket per key and at most maxKeys of them, least recently used out first', (t) => {
  const now = 0;
  const r = new RateLimiter(1, 1, 3, () => now);
  t.is(r.take('a'), 0);
  t.true(r.take('a') > 0, 'a spent its burst');
  t.is(r.take('b'), 0, 'b has its own bucket');
  t.is(r.take('c'), 0);
  t.true(r.take('a') > 0, 'a is used again, so it is the most recent');
  t.is(r.take('d'), 0);
  t.is(r.size, 3, 'memory stays bounded');
  t.true(r.take('a') > 0, 'a survived: b was the least recently used');
  t.is(r.take('b'), 0, 'b was forgotten, and comes back with a fresh bucket');
  t.is(r.size, 3);
});

test('RATE_LIMIT: tenant A over its rate is refused with reason, limits and a retry delay; tenant B is not', (t) => {
  const { limits, advance } = setup();
  for (let i = 0; i < 3; i++) limits.admit('A', 'm');
  const e = refusal(() => limits.admit('A', 'm'));
  t.is(e.code, 'RESOURCE_EXHAUSTED');
  t.is(e.reason, 'RATE_LIMIT');
  t.deepEqual(Object.fromEntries(e.metadata), { requests_per_second: '10', burst: '3' });
  t.is(e.retryDelayMs, 100);
  t.notThrows(() => limits.admit('B', 'm'));
  advance(100);
  t.notThrows(() => limits.admit('A', 'm'), 'after the retry delay, A goes ahead');
});

test('STREAM_LIMIT: an account holds at most its streams; a lease released (once) frees its slot', (t) => {
  const { limits } = setup();
  const a1 = limits.openStream('A', 'm');
  const a2 = limits.openStream('A', 'm');
  const e = refusal(() => limits.openStream('A', 'm'));
  t.is(e.reason, 'STREAM_LIMIT');
  t.deepEqual(Object.fromEntries(e.metadata), { max_streams: '2' });
  t.is(limits.streamsOf('A'), 2, 'a refused stream holds nothing');
  const b = limits.openStream('B', 'm');
  a1.release();
  a1.release();
  t.is(limits.streamsOf('A'), 1, 'releasing twice releases once');
  const a3 = limits.openStream('A', 'm');
  for (const l of [a2, a3, b]) l.release();
  t.is(limits.streamsOf('A'), 0);
  t.is(limits.streamsOf('B'), 0);
  t.is(limits.accountsHolding, 0, 'an account that holds nothing is forgotten');
});

test('utterance bytes: one utterance is capped, and so is the sum over an account; release returns to zero', (t) => {
  const { limits } = setup();
  const u1 = limits.utterance('A', 'm');
  u1.add(50);
  const big = refusal(() => u1.add(11));
  t.is(big.reason, 'UTTERANCE_SIZE_LIMIT');
  t.deepEqual(Object.fromEntries(big.metadata), { max_bytes: '60' });
  t.is(u1.held, 50, 'a refused chunk is not counted');
  const u2 = limits.utterance('A', 'm');
  u2.add(40);
  const sum = refusal(() => u2.add(11));
  t.is(sum.reason, 'UTTERANCE_BYTES_LIMIT');
  t.deepEqual(Object.fromEntries(sum.metadata), { max_bytes: '100' });
  t.is(limits.utteranceBytesOf('A'), 90);
  const other = limits.utterance('B', 'm');
  t.notThrows(() => other.add(60), "another account's bytes are its own");
  u1.release();
  u1.release();
  t.is(limits.utteranceBytesOf('A'), 40);
  u2.add(11);
  u2.release();
  other.release();
  t.is(limits.utteranceBytesOf('A'), 0);
  t.is(limits.accountsHolding, 0);
});

test('a chunk over the whole account budget, with nothing held, leaves nothing behind', (t) => {
  const { limits } = setup({ utteranceBytesPerUtterance: 1_000 });
  const u = limits.utterance('A', 'm');
  t.is(refusal(() => u.add(101)).reason, 'UTTERANCE_BYTES_LIMIT');
  u.release();
  t.is(limits.accountsHolding, 0);
});

test('CLIENT_STREAM_IDLE names its timeout', async (t) => {
  const { limits, metrics } = setup();
  const e = limits.idle('A', 'm');
  t.is(e.code, 'RESOURCE_EXHAUSTED');
  t.is(e.reason, 'CLIENT_STREAM_IDLE');
  t.deepEqual(Object.fromEntries(e.metadata), { idle_timeout_ms: '1000' });
  t.is(await metrics.value(REFUSALS, { reason: 'CLIENT_STREAM_IDLE' }), 1);
});

test('every refusal is counted by reason, and a flood of them logs a few lines that say what they left out', async (t) => {
  const { limits, metrics, lines, advance } = setup({ requestBurst: 1 });
  limits.admit('A', 'm');
  for (let i = 0; i < 1_000; i++) t.throws(() => limits.admit('A', '/parley.genie.v1.GenieService/GetSession'));
  limits.openStream('A', 'm');
  limits.openStream('A', 'm');
  t.throws(() => limits.openStream('A', 'm'));
  t.is(await metrics.value(REFUSALS, { reason: 'RATE_LIMIT' }), 1_000);
  t.is(await metrics.value(REFUSALS, { reason: 'STREAM_LIMIT' }), 1);
  t.is(lines.length, 10, 'a burst of ten lines, then silence');
  t.like(lines[0], { level: 'warn', msg: 'limit refused a call', reason: 'RATE_LIMIT', account: 'A', method: '/parley.genie.v1.GenieService/GetSession', unloggedBefore: 0 });
  advance(1_000);
  t.throws(() => limits.openStream('A', 'm'));
  t.is(lines.length, 11, 'one more line a second later');
  t.like(lines[10], { reason: 'STREAM_LIMIT', max_streams: '2', unloggedBefore: 991 });
});
