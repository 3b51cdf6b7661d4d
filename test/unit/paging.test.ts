import test from 'ava';
import { z } from 'zod';
import { AppError } from '../../src/errors.js';
import { cursorInt, cursorOf, decodePageToken, encodePageToken, isTimestampText, MAX_PAGE_TOKEN_CHARS } from '../../src/paging.js';

test('isTimestampText takes what Postgres prints for timestamptz and nothing Postgres would refuse', (t) => {
  for (const ok of ['2025-01-31 12:00:00.123456+00', '2024-02-29 23:59:59+05:30', '0001-01-01 00:00:00+00', '9999-12-31T23:59:59Z', '2025-06-01 00:00:00-09:30:15']) {
    t.true(isTimestampText(ok), ok);
  }
  for (const bad of ['2025-02-29 00:00:00+00', '2025-04-31 00:00:00+00', '0000-01-01 00:00:00+00', '2025-13-01 00:00:00+00', '2025-01-01 24:00:00+00', '2025-01-01 00:60:00+00', '2025-01-01 00:00:60+00', '2025-01-01 00:00:00+16', '2025-01-01 00:00:00.1234567+00', '2025-01-01', '']) {
    t.false(isTimestampText(bad), bad);
  }
});

const refused = (t: any, fn: () => unknown) => {
  const err = t.throws(fn, { instanceOf: AppError }) as AppError;
  t.is(err.code, 'INVALID_ARGUMENT');
  t.deepEqual(err.violations.map((v) => v.field), ['page_token']);
};

test('decodePageToken checks every cursor value before the list schema sees it', (t) => {
  const loose = cursorOf(z.unknown()); // a list whose own schema would take anything
  const token = (c: unknown) => encodePageToken('l', {}, c);
  t.deepEqual(decodePageToken(token({ a: 'x', b: 3 }), 'l', {}, loose), { a: 'x', b: 3 });
  for (const c of ['a\u0000', '\udc00', 'x'.repeat(257), 1e308, 1.5, 2 ** 53, NaN, null, true, [], { a: { b: 1 } }, { 'a-b': 1 }, { a: 1, b: 2, c: 3, d: 4, e: 5 }]) {
    refused(t, () => decodePageToken(token(c), 'l', {}, loose));
  }
  refused(t, () => decodePageToken(token(JSON.parse('{"__proto__": 1}')), 'l', {}, loose));
  refused(t, () => decodePageToken('A'.repeat(MAX_PAGE_TOKEN_CHARS + 1), 'l', {}, loose));
  refused(t, () => decodePageToken(token(1), 'other list', {}, loose));
  refused(t, () => decodePageToken(token(1), 'l', { other: 'filters' }, loose));
  refused(t, () => decodePageToken(token(2 ** 31), 'l', {}, cursorOf(cursorInt(1, 2 ** 31 - 1))));
});
