import test, { type ExecutionContext } from 'ava';
import { z } from 'zod';
import { AppError } from '../../src/errors.js';
import { fieldPath, mapKey } from '../../src/field-path.js';
import { parseInput } from '../../src/validate.js';
import { bytesOfAtMost, jsonOfAtMost, jsonSizeIssue, structOfAtMost, textOfAtMost } from '../../src/transport/zod-fields.js';

/** The error parseInput throws for `value` in field `f` of a request checked by `schema`. */
const refusal = (t: ExecutionContext, schema: z.ZodType, value: unknown) =>
  t.throws(() => parseInput(z.object({ f: schema }), { f: value }), { instanceOf: AppError });

test('textOfAtMost counts UTF-8 bytes or characters and refuses past the limit with FIELD_TOO_LARGE', (t) => {
  t.is(parseInput(textOfAtMost(4, 'bytes'), 'éé'), 'éé');
  const bytes = refusal(t, textOfAtMost(4, 'bytes'), 'ééé');
  t.is(bytes.reason, 'FIELD_TOO_LARGE');
  t.deepEqual(bytes.violations, [{ field: 'f', description: 'is 6 bytes; at most 4 are allowed' }]);
  t.deepEqual(Object.fromEntries(bytes.metadata), { max_bytes: '4' });
  t.is(parseInput(textOfAtMost(3, 'characters'), 'ééé'), 'ééé');
  const chars = refusal(t, textOfAtMost(3, 'characters'), '😀😀😀😀');
  t.deepEqual(chars.violations, [{ field: 'f', description: 'is 4 characters; at most 3 are allowed' }]);
  t.is(chars.metadata?.size ?? 0, 0, 'only a limit in bytes goes out as max_bytes');
});

test('bytesOfAtMost refuses a bytes field past its limit with FIELD_TOO_LARGE and max_bytes', (t) => {
  t.is(parseInput(bytesOfAtMost(3), Buffer.from('abc')).length, 3);
  const e = refusal(t, bytesOfAtMost(3), new Uint8Array(4));
  t.is(e.reason, 'FIELD_TOO_LARGE');
  t.deepEqual(e.violations, [{ field: 'f', description: 'is 4 bytes; at most 3 are allowed' }]);
  t.deepEqual(Object.fromEntries(e.metadata), { max_bytes: '3' });
  t.is(refusal(t, bytesOfAtMost(3), 'abc').reason, undefined, 'a string is no bytes field');
});

test('jsonOfAtMost measures any JSON value as JSON', (t) => {
  t.is(parseInput(jsonOfAtMost(4), null), null);
  t.deepEqual(parseInput(jsonOfAtMost(4), [1]), [1]);
  const e = refusal(t, jsonOfAtMost(4), 'abcd');
  t.deepEqual(e.violations, [{ field: 'f', description: 'is 6 bytes as JSON; at most 4 are allowed' }]);
  t.deepEqual(Object.fromEntries(e.metadata), { max_bytes: '4' });
});

test('jsonSizeIssue refuses a value a schema builds, at the path it is given', (t) => {
  t.is(jsonSizeIssue({ a: 1 }, 7), undefined);
  const schema = z.object({ name: z.string() }).transform((r, ctx) => {
    const issue = jsonSizeIssue({ built: r.name }, 12);
    if (issue) ctx.issues.push({ ...issue, path: ['name'] });
    return r.name;
  });
  t.is(parseInput(schema, { name: '' }), '');
  const e = t.throws(() => parseInput(schema, { name: 'long' }), { instanceOf: AppError });
  t.is(e.reason, 'FIELD_TOO_LARGE');
  t.deepEqual(e.violations, [{ field: 'name', description: 'is 16 bytes as JSON; at most 12 are allowed' }]);
});

test('structOfAtMost refuses a struct too large as JSON or with a key too long at any depth', (t) => {
  const schema = structOfAtMost(30, 3);
  t.deepEqual(parseInput(schema, { abc: [{ def: 1 }] }), { abc: [{ def: 1 }] });
  const big = refusal(t, schema, { a: 'x'.repeat(30) });
  t.is(big.reason, 'FIELD_TOO_LARGE');
  t.deepEqual(big.violations, [{ field: 'f', description: 'is 38 bytes as JSON; at most 30 are allowed' }]);
  const nested = refusal(t, schema, { a: [{ long: 1 }] });
  t.is(nested.reason, 'FIELD_TOO_LARGE');
  t.deepEqual(nested.violations, [{ field: 'f', description: 'has a key of 4 characters ("long"); keys are at most 3' }]);
  t.is(refusal(t, schema, [1]).reason, undefined, 'a list is no struct');
});

test('parseInput reports a size refusal first and alone', (t) => {
  const schema = z.object({ id: z.string().uuid('must be a UUID'), text: textOfAtMost(2, 'bytes') });
  const e = t.throws(() => parseInput(schema, { id: 'x', text: 'abc' }), { instanceOf: AppError });
  t.deepEqual(e.violations.map((v) => v.field), ['text']);
  t.is(e.reason, 'FIELD_TOO_LARGE');
});

test('fieldPath names a map entry by its quoted key, never as a field name', (t) => {
  t.is(fieldPath(['upgrades', 0, 'mapStates', 'mapping', mapKey('Draft.Old')], 'model_type'), 'model_type.upgrades[0].map_states.mapping["Draft.Old"]');
  t.is(fieldPath(['mapping', mapKey('x'.repeat(100))]).length < 60, true, 'a long key is clipped');
});
