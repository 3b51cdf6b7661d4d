import test from 'ava';
import { millisecondBounds, parseFilter } from '../../src/filter.js';
import { AppError } from '../../src/errors.js';

const spec = { equality: ['state'] } as const;
const timeOf = (literal: string) => {
  const [r] = parseFilter(`create_time < "${literal}"`, spec);
  if (r?.kind !== 'time') throw new Error('not a time');
  return r;
};

test('time literals are RFC 3339 checked field by field: days that exist, hours 0–23, no leap second, offsets up to 23:59', (t) => {
  t.deepEqual(timeOf('2024-02-29T23:59:59Z').at, new Date('2024-02-29T23:59:59Z'));
  t.deepEqual(timeOf('2000-02-29t00:00:00z').at, new Date('2000-02-29T00:00:00Z'));
  t.deepEqual(timeOf('2025-01-31T00:30:00-01:30').at, new Date('2025-01-31T02:00:00Z'));
  t.deepEqual(timeOf('0099-06-01T00:00:00Z').at.getUTCFullYear(), 99);
  for (const bad of [
    '2025-02-30T00:00:00Z',
    '2023-02-29T00:00:00Z',
    '1900-02-29T00:00:00Z',
    '2025-04-31T00:00:00Z',
    '2025-13-01T00:00:00Z',
    '2025-00-10T00:00:00Z',
    '2025-01-00T00:00:00Z',
    '2025-01-31T24:00:00Z',
    '2025-01-31T12:60:00Z',
    '2016-12-31T23:59:60Z',
    '2025-01-31T12:00:00+24:00',
    '2025-01-31T12:00:00+01:60',
    '0000-01-01T00:00:00Z',
    '0001-01-01T00:00:00+00:01',
    '9999-12-31T23:59:59-00:01',
    '2025-01-31 12:00:00Z',
    '2025-01-31T12:00:00',
  ]) {
    const err = t.throws(() => parseFilter(`create_time < "${bad}"`, spec), { instanceOf: AppError }, bad);
    t.is(err?.code, 'INVALID_ARGUMENT', bad);
  }
});

test('time restrictions compare at the millisecond the API shows: bounds are < and >= only', (t) => {
  const at = new Date('2025-01-31T12:00:00.123Z');
  const next = new Date('2025-01-31T12:00:00.124Z');
  const exact = timeOf('2025-01-31T12:00:00.123000Z');
  t.is(exact.subMs, undefined);
  const fine = timeOf('2025-01-31T12:00:00.1234Z');
  t.true(fine.subMs);
  t.deepEqual(fine.at, at);
  const cases: Array<[string, boolean, Array<{ op: '<' | '>='; at: Date }>]> = [
    ['<', false, [{ op: '<', at }]],
    ['<', true, [{ op: '<', at: next }]],
    ['<=', false, [{ op: '<', at: next }]],
    ['<=', true, [{ op: '<', at: next }]],
    ['>', false, [{ op: '>=', at: next }]],
    ['>', true, [{ op: '>=', at: next }]],
    ['>=', false, [{ op: '>=', at }]],
    ['>=', true, [{ op: '>=', at: next }]],
    ['=', false, [{ op: '>=', at }, { op: '<', at: next }]],
    ['=', true, [{ op: '>=', at: next }, { op: '<', at: next }]],
  ];
  for (const [op, subMs, bounds] of cases) {
    const [r] = parseFilter(`update_time ${op} "2025-01-31T12:00:00.123${subMs ? '4' : ''}Z"`, spec);
    if (r?.kind !== 'time') throw new Error('not a time');
    t.deepEqual(millisecondBounds(r), bounds, `${op} ${subMs}`);
  }
});

test('an equality with "" is refused (the field unset is not indexed), a label set to "" is a value', (t) => {
  const sessions = { equality: ['state', 'model_type', 'end_user_id'] } as const;
  for (const field of ['state', 'model_type', 'end_user_id']) {
    const err = t.throws(() => parseFilter(`${field} = ""`, sessions), { instanceOf: AppError }, field);
    t.is(err?.code, 'INVALID_ARGUMENT', field);
  }
  t.throws(() => parseFilter('llm_client_id = ""', { equality: ['llm_client_id'] }), { instanceOf: AppError });
  t.deepEqual(parseFilter('labels.k = ""', sessions), [{ kind: 'label', key: 'k', value: '' }]);
});
