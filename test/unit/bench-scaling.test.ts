import test from 'ava';
import { compareToSmallest, scalingRow, scalingTable } from '../../bench/scaling.js';

test('bench scaling rows compare each measure with its own smallest size, and target only the sizes asked', (t) => {
  const rows = [
    scalingRow('turn', 10, [10, 10, 10, 20]),
    scalingRow('turn', 1000, [11, 11, 11, 40]),
    scalingRow('turn', 10_000, [13, 13, 13, 13]),
    scalingRow('read', 10, [2, 2]),
    scalingRow('read', 10_000, [2, 2]),
  ];
  compareToSmallest(rows, ['turn'], 1.2, (size) => size >= 1000);
  const [t10, t1000, t10000, r10, r10000] = rows;
  t.is(t10!.p50Ratio, undefined);
  t.is(t1000!.p50Ratio, 1.1);
  t.is(t1000!.p99Ratio, 2);
  t.true(t1000!.met);
  t.is(t10000!.p50Ratio, 1.3);
  t.false(t10000!.met);
  t.is(r10!.p50Ratio, undefined);
  t.is(r10000!.p50Ratio, 1);
  t.is(r10000!.target, undefined, 'a measure without a target gets ratios only');
  t.regex(scalingTable(rows, 'dialogue length'), /\| turn \| 10,000 \| 4 \| 13\.00 \|/);
});

test('bench scaling rows leave ratios out when the smallest size has no samples', (t) => {
  const rows = [scalingRow('turn', 10, []), scalingRow('turn', 100, [5])];
  compareToSmallest(rows, ['turn'], 1.2, () => true);
  t.is(rows[1]!.p50Ratio, undefined);
  t.is(rows[1]!.met, undefined);
});
