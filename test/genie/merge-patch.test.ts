import test from 'ava';
import { mergePatch } from '../../src/genie/service.js';

// RFC 7396, Appendix A: every example, target + patch → result.
const examples: Array<[unknown, unknown, unknown]> = [
  [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
  [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
  [{ a: 'b' }, { a: null }, {}],
  [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
  [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
  [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
  [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
  [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
  [['a', 'b'], ['c', 'd'], ['c', 'd']],
  [{ a: 'b' }, ['c'], ['c']],
  [{ a: 'foo' }, null, null],
  [{ a: 'foo' }, 'bar', 'bar'],
  [{ e: null }, { a: 1 }, { e: null, a: 1 }],
  [[1, 2], { a: 'b', c: null }, { a: 'b' }],
  [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
];

test('mergePatch follows every example of RFC 7396', (t) => {
  for (const [target, patch, result] of examples) t.deepEqual(mergePatch(target, patch), result, JSON.stringify([target, patch]));
});

test('mergePatch copies: neither the target nor the patch changes, and the result shares nothing with them', (t) => {
  const target = { a: { b: 1 }, keep: [1] };
  const patch = { a: { c: { d: 2 } } };
  const out = mergePatch(target, patch) as { a: { c: { d: number } }; keep: number[] };
  t.deepEqual(target, { a: { b: 1 }, keep: [1] });
  t.deepEqual(patch, { a: { c: { d: 2 } } });
  out.a.c.d = 3;
  out.keep.push(2);
  t.is(patch.a.c.d, 2);
  t.deepEqual(target.keep, [1]);
});

test('mergePatch treats constructor, toString and prototype as plain keys and never touches Object.prototype', (t) => {
  const out = mergePatch({ toString: 'mine' }, { constructor: { prototype: { polluted: 1 } }, valueOf: null, toString: null });
  t.deepEqual(out, { constructor: { prototype: { polluted: 1 } } });
  t.false('polluted' in {});
  t.is(typeof Object.prototype.valueOf, 'function');
});
