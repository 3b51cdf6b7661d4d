import test from 'ava';
import { z } from 'zod';
import { fieldPath } from '../../src/field-path.js';
import { decodeJson, encodeJson, isoDate, zodCodec } from '../../src/json-codec.js';
import { parseInput } from '../../src/validate.js';
import { AppError } from '../../src/errors.js';

test('fieldPath writes proto names with list indexes in brackets', (t) => {
  t.is(fieldPath(['messages', 0, 'toolCalls', 1, 'functionName']), 'messages[0].tool_calls[1].function_name');
  t.is(fieldPath(['actor'], 'session.'), 'session.actor');
  t.is(fieldPath([0, 'name'], 'transitions'), 'transitions[0].name');
  t.is(fieldPath([]), '(request)');
});

test('parseInput names each bad field by its path', (t) => {
  const schema = z.object({ toolCalls: z.array(z.object({ functionName: z.string().min(1, 'must not be empty') })) });
  const err = t.throws(() => parseInput(schema, { toolCalls: [{ functionName: 'a' }, { functionName: '' }] }), { instanceOf: AppError });
  t.deepEqual(err.violations, [{ field: 'tool_calls[1].function_name', description: 'must not be empty' }]);
});

test('zodCodec revives dates and refuses JSON that does not match its schema', (t) => {
  const codec = zodCodec(z.object({ id: z.string(), createdAt: isoDate }));
  const at = new Date('2026-11-26T08:00:00.123Z');
  const back = decodeJson(codec, encodeJson(codec, { id: 'a', createdAt: at }));
  t.deepEqual(back, { id: 'a', createdAt: at });
  t.throws(() => decodeJson(codec, '{"id":1,"createdAt":"x"}'));
  t.throws(() => decodeJson(codec, 'not json'));
});
