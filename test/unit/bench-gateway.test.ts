import test from 'ava';
import { compareToRelay, DeltaTally, faultCount, gatewayTable, latency, noFaults, type GatewayRow } from '../../bench/gateway-tally.js';

test('bench gateway tally finds nothing wrong in every delta once, in order, then the commit', (t) => {
  const tally = new DeltaTally(3);
  t.true(tally.delta(0));
  t.true(tally.delta(1));
  t.true(tally.delta(2));
  t.true(tally.commit());
  t.deepEqual(tally.result(), noFaults());
});

test('bench gateway tally counts lost, duplicated and out-of-order deltas, and only first deliveries count for latency', (t) => {
  const tally = new DeltaTally(5);
  t.true(tally.delta(0));
  t.true(tally.delta(2));
  t.true(tally.delta(1), 'a late chunk is still its first delivery');
  t.false(tally.delta(2), 'a duplicate is not');
  t.true(tally.delta(4));
  t.true(tally.commit());
  t.deepEqual(tally.result(), { ...noFaults(), lost: 1, duplicated: 1, outOfOrder: 1 });
});

test('bench gateway tally counts a missing commit, a second commit, deltas after the commit and strays', (t) => {
  const none = new DeltaTally(1);
  none.delta(0);
  t.is(none.result().missingCommit, 1);

  const tally = new DeltaTally(2);
  tally.delta(0);
  t.true(tally.commit());
  t.false(tally.commit());
  tally.delta(1);
  t.false(tally.delta(7), 'a chunk_index past the utterance');
  t.false(tally.delta(-1));
  tally.stray();
  t.deepEqual(tally.result(), { ...noFaults(), duplicated: 1, afterCommit: 1, unexpected: 3 });
  t.is(faultCount(tally.result()), 5);
});

const row = (kind: GatewayRow['kind'], chats: number, p99: number, cpuUsPerDelta: number, commitP50: number): GatewayRow => ({
  kind,
  watcherNote: '',
  chats,
  chunks: 300,
  ratePerSec: 50,
  watchers: chats * 2,
  deltasExpected: chats * 600,
  deltasDelivered: chats * 600,
  delta: { same: latency([1, p99]), other: latency([1, p99]), all: latency([1, p99]) },
  commit: latency([commitP50]),
  faults: noFaults(),
  serverCpuMs: 1,
  serverCpuMsByProcess: [1],
  serverIdleCpuPercent: 1,
  streamingSeconds: 6,
  loadCpuPercent: 50,
  errors: 0,
  cpuUsPerDelta,
  hostCpuPercent: null,
});

test('bench gateway rows compare with the relay and hold the ratio targets only up to 50 chats', (t) => {
  const at50 = row('parley', 50, 8, 30, 12);
  compareToRelay(at50, row('bare-relay', 50, 4, 20, 1));
  t.deepEqual(at50.vsRelay, { deltaP99: 2, sameP99: 2, otherP99: 2, cpuPerDelta: 1.5 });
  t.deepEqual(
    at50.targets!.map((x) => [x.name, x.met]),
    [
      ['delta p99 ≤2×', true],
      ['CPU/delta ≤1.5×', true],
      ['commit p50 ≤20 ms', true],
      ['exact', true],
    ],
  );

  const at200 = row('parley', 200, 40, 60, 140);
  at200.faults.lost = 1;
  compareToRelay(at200, row('bare-relay', 200, 4, 20, 1));
  t.deepEqual(
    at200.targets!.map((x) => [x.name, x.met]),
    [
      ['commit p50 ≤20 ms', false],
      ['exact', false],
    ],
  );
  t.regex(gatewayTable([at200]), /\| parley \| 200 \| 120,000 \/ 120,000 \|.*\| 1 \/ 0 \/ 0 \/ 0 \| — \(50\) \| 10\.00× delta p99 .*\| NO: commit p50 ≤20 ms, exact \|/);
});

test('bench gateway rows without samples compare to nothing', (t) => {
  const own = row('parley', 10, 8, 30, 12);
  own.commit = latency([]);
  const relay = row('bare-relay', 10, 4, 20, 1);
  relay.cpuUsPerDelta = null;
  compareToRelay(own, relay);
  t.is(own.vsRelay!.cpuPerDelta, null);
  t.deepEqual(
    own.targets!.filter((x) => x.met === null).map((x) => x.name),
    ['CPU/delta ≤1.5×', 'commit p50 ≤20 ms'],
  );
});
