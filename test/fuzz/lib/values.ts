import fc from 'fast-check';
import { BAD_UTF8, PROTO_KEY } from './wire.js';

/**
 * Random and boundary values for requests. Strings never contain U+FFFD or a lone surrogate (which an
 * encoder turns into U+FFFD): a U+FFFD found in the database afterwards can only come from invalid UTF-8
 * the server accepted. Invalid UTF-8 itself is sent through the BAD_UTF8 marker.
 */

const codePoint = fc
  .integer({ min: 1, max: 0x10ffff })
  .filter((c) => (c < 0xd800 || c > 0xdfff) && c !== 0xfffd)
  .map((c) => String.fromCodePoint(c));

/** Any text a client could honestly send (no NUL, no U+FFFD). */
export const unicode = (maxLength = 40) => fc.string({ unit: codePoint, maxLength });

/** Huge, but bounded so that thousands of calls stay fast: 64 KiB to 512 KiB. */
export const huge = fc.integer({ min: 64 * 1024, max: 512 * 1024 }).chain((n) => fc.constantFrom('x', 'é', '😀', 'ab\n').map((u) => u.repeat(Math.ceil(n / Buffer.byteLength(u)))));

const tricky = fc.constantFrom(
  '',
  ' ',
  '\uFEFFbom',
  '\uFEFF',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  "'; drop table prompts; --",
  '%',
  '_',
  '\\',
  '"',
  '${x}',
  '..',
  '../../etc/passwd',
  'a'.repeat(1025),
  'a'.repeat(4097),
  '\u202Eevil',
  'e\u0301',
  'null',
  'undefined',
  'NaN',
  '-0',
  '1e309',
  '9223372036854775808',
  'user',
  'assistant',
  'system',
  'user_input',
  'ai_response',
);

/** A string: mostly ordinary, sometimes empty, huge, NUL, invalid UTF-8 or a word with a meaning. */
export const str = fc.oneof(
  { weight: 6, arbitrary: unicode() },
  { weight: 4, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 3, arbitrary: tricky },
  { weight: 1, arbitrary: fc.tuple(unicode(10), unicode(10)).map(([a, b]) => `${a}\u0000${b}`) },
  { weight: 1, arbitrary: fc.tuple(unicode(10), unicode(10)).map(([a, b]) => `${a}${BAD_UTF8}${b}`) },
  { weight: 1, arbitrary: huge },
);

/** A string that is one of `valid` most of the time, any string otherwise. */
export const oneOfOr = (valid: readonly string[], validWeight = 6) =>
  valid.length === 0 ? str : fc.oneof({ weight: validWeight, arbitrary: fc.constantFrom(...valid) }, { weight: 2, arbitrary: str });

export const int32 = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -3, max: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -1, 1, 1000, 1001, 2 ** 31 - 1, -(2 ** 31), 2 ** 30) },
  { weight: 1, arbitrary: fc.integer() },
);

/** int64 fields take a number or, beyond 2^53, the decimal string the encoder accepts. */
export const int64 = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -2, max: 30 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom<number | string>(
      0,
      -1,
      2 ** 31,
      2 ** 53 - 1,
      '9007199254740993',
      '9223372036854775807',
      '-9223372036854775808',
      '18446744073709551615',
      2 ** 32,
    ),
  },
  { weight: 1, arbitrary: fc.maxSafeInteger() },
);

export const extremeNumber = fc.constantFrom(
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  -0,
  2 ** 53 + 1,
  2 ** 63, // int64 max as a JSON number: 9223372036854775807 rounds to this
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  -Number.MAX_VALUE,
  1e308,
);

const key = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('topic', 'turns', 'profile', 'age', 'a', 'b') },
  { weight: 3, arbitrary: unicode(12) },
  { weight: 1, arbitrary: fc.constantFrom(PROTO_KEY, 'constructor', 'prototype', 'toString', '', 'a.b', 'a[0]', '"q"', `k${BAD_UTF8}`, 'k\u0000') },
);

/** A JSON value: ordinary mostly, with extreme numbers, tricky strings and keys. */
export const json: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.integer(),
    extremeNumber,
    str,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(key, tie('value'), { maxKeys: 4, noNullPrototype: false }),
  ),
})).value;

/** `{a: {a: … {leaf: 1}}}` nested `levels` deep. */
export function nest(levels: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: 1 };
  for (let i = 1; i < levels; i++) v = { a: v };
  return v;
}

/** A Struct (plain object), including deep ones and those with __proto__ keys. */
export const struct: fc.Arbitrary<Record<string, unknown> | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.dictionary(key, json, { maxKeys: 5 }) },
  { weight: 2, arbitrary: fc.record({ topic: oneOfOr(['tax', 'weather']), turns: fc.oneof(fc.nat(10), extremeNumber) }, { requiredKeys: ['topic'] }) },
  { weight: 1, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.integer({ min: 30, max: 120 }).map(nest) },
  { weight: 1, arbitrary: json.map((v) => ({ [PROTO_KEY]: v, topic: 'x' })) },
);

/** A map<string, string> (a plain object the generated encoder walks). */
export const stringMap = fc.dictionary(key, str, { maxKeys: 4 });

/** A Timestamp as the generated client takes it (a Date), from ordinary to out of range. */
export const date = fc.oneof(
  { weight: 3, arbitrary: fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      new Date('0000-01-01T00:00:00Z'),
      new Date('+010000-01-01T00:00:00Z'),
      new Date('0001-01-01T00:00:00Z'),
      new Date('9999-12-31T23:59:59.999Z'),
      new Date(-8.64e15),
      new Date(8.64e15),
      new Date(0),
      new Date(-1),
    ),
  },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/** Seconds and nanos no Date can carry, appended to the encoded request (see rawTimestamp). */
export const rawTime = fc.record({
  seconds: fc.constantFrom('0', '-62135596801', '253402300800', '9223372036854775807', '-9223372036854775808', '1700000000'),
  nanos: fc.constantFrom(0, -1, 1_000_000_000, -1_000_000_000, 999_999_999, 2 ** 31 - 1),
});

export const enumNumber = (known: number[]) => fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known) }, { weight: 1, arbitrary: fc.constantFrom(-1, 77, 2 ** 31 - 1, -(2 ** 31)) });

const base64url = (s: string) => Buffer.from(s).toString('base64url');

/** Cursors a forged page token may carry. */
const hostileCursor = fc.oneof(
  fc.constantFrom<unknown>(
    { name: 'a\u0000' },
    { after: 1e308 },
    { after: -1 },
    { after: 2 ** 53 + 1 },
    { after: '1' },
    { createdAt: 'not a date', id: 'x' },
    { createdAt: '+275760-09-13T00:00:00.000Z', id: '\u0000' },
    { createdAt: '2020-01-01T00:00:00.000Z', id: 'not-a-uuid' },
    { n: '\u0000', v: 1e10 },
    { n: 'qa', v: -(2 ** 31) - 1 },
    -1,
    1e300,
    2 ** 53 + 1,
    '\u0000',
    '',
    null,
    [],
    {},
    JSON.parse('{"__proto__": {"after": 1}}'),
    { name: 'x'.repeat(100_000) },
  ),
  json,
);

const cursorString = fc.constantFrom('a\u0000', '', 'x'.repeat(100_000), '\uFEFF', "'", '%', '\\', 'not a date', '+275760-09-13T00:00:00.000Z', '0000-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z', '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-fffffffffffff');
const cursorNumber = fc.constantFrom(1e308, -1e308, -1, 2 ** 53 + 1, 2 ** 53, 0, 1.5, 2 ** 31, 2 ** 63, 5e-324);

/** The real cursor `c` with its leaves replaced by hostile values of the same type: past the shape guard. */
function mutateCursor(c: unknown): fc.Arbitrary<unknown> {
  if (typeof c === 'string') return cursorString;
  if (typeof c === 'number') return cursorNumber;
  if (c && typeof c === 'object' && !Array.isArray(c)) {
    const entries = Object.entries(c as Record<string, unknown>);
    return fc.tuple(...entries.map(([, v]) => fc.oneof(fc.constant(v), mutateCursor(v)))).map((vs) => Object.fromEntries(entries.map(([k], i) => [k, vs[i]])));
  }
  return fc.constant(c);
}

/**
 * A page token: empty, garbage, one of `real` (tokens the server issued, to reach the cursor), or forged
 * from a real one's list and filter hash around a hostile cursor.
 */
export function pageToken(real: string[]) {
  const docs = real.map((t) => JSON.parse(Buffer.from(t, 'base64url').toString('utf8')) as { l: string; f: string; c: unknown });
  const shaped =
    docs.length === 0
      ? fc.constant('')
      : fc.constantFrom(...docs).chain((d) => mutateCursor(d.c).map((c) => base64url(JSON.stringify({ l: d.l, f: d.f, c }))));
  const forged =
    docs.length === 0
      ? fc.constant('')
      : fc.tuple(fc.constantFrom(...docs), hostileCursor).map(([d, c]) => base64url(JSON.stringify({ l: d.l, f: d.f, c })));
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant('') },
    { weight: real.length ? 2 : 0, arbitrary: real.length ? fc.constantFrom(...real) : fc.constant('') },
    { weight: 2, arbitrary: forged },
    { weight: 4, arbitrary: shaped },
    { weight: 1, arbitrary: str },
    { weight: 1, arbitrary: fc.constantFrom('%%%', '====', base64url('null'), base64url('[]'), base64url('{"l":"prompts"}'), base64url('"x"'), base64url('{'), 'e30') },
    { weight: 1, arbitrary: json.map((v) => base64url(JSON.stringify(v) ?? '')) },
  );
}

/** The values a generator draws from: hostile ones, or only those an honest client sends (to reach deep paths). */
export interface Vocabulary {
  str: fc.Arbitrary<string>;
  oneOfOr: (valid: readonly string[], validWeight?: number) => fc.Arbitrary<string>;
  int32: fc.Arbitrary<number>;
  int64: fc.Arbitrary<number | string>;
  json: fc.Arbitrary<unknown>;
  struct: fc.Arbitrary<Record<string, unknown> | undefined>;
  stringMap: fc.Arbitrary<Record<string, string>>;
  date: fc.Arbitrary<Date | undefined>;
  enumNumber: (known: number[]) => fc.Arbitrary<number>;
  pageToken: (real: string[]) => fc.Arbitrary<string>;
  huge: fc.Arbitrary<string>;
}

export const hostile: Vocabulary = { str, oneOfOr, int32, int64, json, struct, stringMap, date, enumNumber, pageToken, huge };

const plainStr = fc.oneof(unicode(30).filter((s) => s.trim().length > 0), fc.stringMatching(/^[a-z][a-z0-9_]{0,15}$/));
const plainJson = fc.oneof(fc.constant(null), fc.boolean(), fc.integer({ min: -1000, max: 1000 }), plainStr);
export const honest: Vocabulary = {
  str: plainStr,
  oneOfOr: (valid) => (valid.length === 0 ? plainStr : fc.constantFrom(...valid)),
  int32: fc.integer({ min: 0, max: 20 }),
  int64: fc.integer({ min: 0, max: 10 }),
  json: plainJson,
  struct: fc.oneof(
    fc.record({ topic: fc.constantFrom('tax', 'weather'), turns: fc.nat(10), profile: fc.record({ age: fc.nat(120) }) }, { requiredKeys: ['topic'] }),
    fc.dictionary(fc.stringMatching(/^[a-z]{1,8}$/), plainJson, { maxKeys: 4 }),
  ),
  stringMap: fc.dictionary(fc.stringMatching(/^[a-z]{1,8}$/), plainStr, { maxKeys: 3 }),
  date: fc.option(fc.date({ min: new Date('2020-01-01T00:00:00Z'), max: new Date('2090-01-01T00:00:00Z'), noInvalidDate: true }), { nil: undefined }),
  enumNumber: (known) => fc.constantFrom(...known.filter((n) => n > 0)),
  pageToken: (real) => fc.constantFrom('', ...real),
  huge: fc.constant('a long text '.repeat(100)),
};
