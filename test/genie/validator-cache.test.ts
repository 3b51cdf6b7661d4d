import test from 'ava';
import { WeightedLru } from '../../src/genie/validator-cache.js';

test('WeightedLru: bounded by count, least recently used goes first and is disposed of', (t) => {
  const disposed: string[] = [];
  const c = new WeightedLru<string>(3, [100], (v) => disposed.push(v));
  for (const k of ['a', 'b', 'c']) c.set(k, k.toUpperCase(), [1]);
  t.is(c.get('a'), 'A'); // a is now the most recently used
  c.set('d', 'D', [1]);
  t.is(c.size, 3);
  t.deepEqual(disposed, ['B']);
  t.is(c.get('b'), undefined);
  t.is(c.total(0), 3);
});

test('WeightedLru: bounded by each weight budget, but keeps the entry just stored', (t) => {
  const disposed: string[] = [];
  const c = new WeightedLru<string>(100, [10, 5], (v) => disposed.push(v));
  c.set('a', 'A', [4, 1]);
  c.set('b', 'B', [4, 1]);
  c.set('c', 'C', [1, 4]); // pattern budget: 1 + 1 + 4 > 5, so a goes
  t.deepEqual(disposed, ['A']);
  t.deepEqual([c.total(0), c.total(1)], [5, 5]);
  c.set('huge', 'H', [50, 50]); // over both budgets alone: everything older goes, it stays
  t.deepEqual(disposed, ['A', 'B', 'C']);
  t.is(c.get('huge'), 'H');
  t.deepEqual([c.size, c.total(0), c.total(1)], [1, 50, 50]);
});

test('WeightedLru: replacing a key disposes of the old value; clear disposes of all unless told not to', (t) => {
  const disposed: string[] = [];
  const c = new WeightedLru<string>(10, [10], (v) => disposed.push(v));
  c.set('a', 'A1', [2]);
  c.set('a', 'A2', [3]);
  t.deepEqual(disposed, ['A1']);
  t.is(c.total(0), 3);
  c.set('b', 'B', [1]);
  c.clear(false);
  t.deepEqual(disposed, ['A1']);
  t.deepEqual([c.size, c.total(0)], [0, 0]);
  c.set('c', 'C', [1]);
  c.clear();
  t.deepEqual(disposed, ['A1', 'C']);
});
