import test from 'ava';
import { Metrics } from '../../src/metrics.js';

test('counters are keyed by name and labels, whatever the order of the labels', (t) => {
  const m = new Metrics();
  m.inc('refusals', { reason: 'RATE_LIMIT', method: 'a' });
  m.inc('refusals', { method: 'a', reason: 'RATE_LIMIT' }, 2);
  m.inc('refusals', { reason: 'STREAM_LIMIT', method: 'a' });
  m.inc('calls');
  t.is(m.value('refusals', { method: 'a', reason: 'RATE_LIMIT' }), 3);
  t.is(m.value('refusals', { reason: 'STREAM_LIMIT', method: 'a' }), 1);
  t.is(m.value('refusals', { reason: 'CLIENT_STREAM_IDLE' }), 0);
  t.is(m.value('calls'), 1);
});

test('a snapshot lists every series, sorted, and does not move with later counting', (t) => {
  const m = new Metrics();
  m.inc('b', { reason: 'Y' });
  m.inc('a');
  m.inc('b', { reason: 'X' });
  const snap = m.snapshot();
  t.deepEqual(snap, [
    { name: 'a', labels: {}, value: 1 },
    { name: 'b', labels: { reason: 'X' }, value: 1 },
    { name: 'b', labels: { reason: 'Y' }, value: 1 },
  ]);
  m.inc('a', {}, 5);
  t.is(snap[0]!.value, 1);
  t.is(m.snapshot()[0]!.value, 6);
});

test('a label named like an Object.prototype member is just a label', (t) => {
  const m = new Metrics();
  const odd = Object.fromEntries([['__proto__', 'p'], ['constructor', 'c']]) as Record<string, string>;
  m.inc('x', odd);
  m.inc('x', odd);
  t.is(m.value('x', odd), 2);
  t.is(m.value('x'), 0);
  t.deepEqual(Object.keys(m.snapshot()[0]!.labels).sort(), ['__proto__', 'constructor']);
});
