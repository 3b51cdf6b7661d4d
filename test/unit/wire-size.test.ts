import test from 'ava';
import fc from 'fast-check';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { ListValue, Struct, Value } from '../../src/gen/google/protobuf/struct.js';
import { Timestamp } from '../../src/gen/google/protobuf/timestamp.js';
import { ChatMessage, ChatRole, PromptHistory } from '../../src/gen/parley/prompt/v1/prompt.js';
import { chatMessageSize, historySize, toHistory } from '../../src/transport/prompt-handlers.js';
import { intSize, listSize, structSize, timestampSize, valueSize } from '../../src/transport/wire-size.js';
import type { HistoryRow } from '../../src/prompt/store.js';

const RUNS = { numRuns: 500 };

/** Strings of every kind the encoder meets: ASCII, any code point, lone surrogates, `__proto__`. */
const anyString = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('', '__proto__', 'é', '😀', '\uD800', 'x'.repeat(200), 'y'.repeat(20_000)),
);
/** JSON as a decoded Struct or a jsonb column holds it, plus the numbers JSON cannot (the sizer must not care). */
const json = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.constantFrom(0, -0, 1e308, -1),
    anyString,
    fc.array(tie('value'), { maxLength: 5 }),
    tie('object'),
  ),
  object: fc.dictionary(anyString, tie('value'), { maxKeys: 6 }),
}));

const encodedStruct = (v: Record<string, unknown>) => Struct.encode(Struct.wrap(v)).finish().length;

test('structSize, valueSize and listSize equal the encoder\'s lengths', (t) => {
  fc.assert(
    fc.property(json.object, json.value, fc.array(json.value, { maxLength: 6 }), (obj, value, list) => {
      t.is(structSize(obj as Record<string, unknown>), encodedStruct(obj as Record<string, unknown>));
      t.is(valueSize(value), Value.encode(Value.wrap(value)).finish().length);
      t.is(listSize(list), ListValue.encode(ListValue.wrap(list)).finish().length);
    }),
    RUNS,
  );
});

test('structSize counts an own __proto__ key (JSON.parse makes one) as the encoder does: not at all', (t) => {
  const obj = JSON.parse('{"__proto__": {"a": 1}, "b": [1, null, "x"], "": true}') as Record<string, unknown>;
  t.is(structSize(obj), encodedStruct(obj));
  t.is(structSize({ a: undefined, b: 1 }), encodedStruct({ a: undefined, b: 1 }));
  // Holes in a list encode as empty Values.
  const holes = [1, , 3]; // eslint-disable-line no-sparse-arrays
  t.is(listSize(holes), ListValue.encode(ListValue.wrap(holes)).finish().length);
});

test('intSize and timestampSize equal the encoder\'s lengths, negative values and large ones included', (t) => {
  const int64 = fc.oneof(fc.integer(), fc.maxSafeInteger(), fc.constantFrom(0, 127, 128, 2 ** 28 - 1, 2 ** 28, 2 ** 35 - 1, 2 ** 35, 2 ** 53 - 1, -1));
  fc.assert(
    fc.property(int64, (n) => t.is(intSize(n), new BinaryWriter().int64(n).finish().length)),
    RUNS,
  );
  fc.assert(
    fc.property(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (n) => t.is(intSize(n), new BinaryWriter().int32(n).finish().length)),
    RUNS,
  );
  const dates = fc.oneof(fc.date({ noInvalidDate: true }), fc.constantFrom(new Date(0), new Date(-1), new Date(-1000), new Date(999), new Date('0001-01-01T00:00:00.001Z')));
  fc.assert(
    fc.property(dates, (d) => {
      const ms = d.getTime();
      t.is(timestampSize(d), Timestamp.encode({ seconds: Math.trunc(ms / 1000), nanos: (ms % 1000) * 1_000_000 }).finish().length);
    }),
    RUNS,
  );
});

const toolCall = fc.record({ id: anyString, callType: anyString, functionName: anyString, functionArguments: anyString });
const noPart = { text: undefined, imageUrl: undefined, inputAudio: undefined, file: undefined, refusal: undefined };
/** One part, one kind set (as a oneof decodes), or none. */
const contentPart = fc.oneof(
  anyString.map((text) => ({ ...noPart, text })),
  fc.record({ url: anyString, detail: anyString }).map((imageUrl) => ({ ...noPart, imageUrl })),
  fc.record({ data: anyString, format: anyString }).map((inputAudio) => ({ ...noPart, inputAudio })),
  fc.record({ fileData: anyString, fileId: anyString, filename: anyString }).map((file) => ({ ...noPart, file })),
  anyString.map((refusal) => ({ ...noPart, refusal })),
  fc.constant(noPart),
);
const chatMessage = fc.record({
  role: fc.oneof(fc.constantFrom(...Object.values(ChatRole).filter((r): r is number => typeof r === 'number')), fc.integer({ min: -5, max: 1000 })),
  content: anyString,
  name: anyString,
  toolCalls: fc.array(toolCall, { maxLength: 3 }),
  toolCallId: anyString,
  contentParts: fc.array(contentPart, { maxLength: 3 }),
  contentShape: fc.oneof(fc.constantFrom(0, 1, 2), fc.integer({ min: -5, max: 1000 })),
  refusal: anyString,
  audio: fc.option(fc.record({ id: anyString }), { nil: undefined }),
});

test('chatMessageSize equals the encoder\'s length', (t) => {
  fc.assert(
    fc.property(chatMessage, (m) => t.is(chatMessageSize(m), ChatMessage.encode(m).finish().length)),
    RUNS,
  );
});

/** Stored messages: the OpenAI form parley writes, and whatever else a jsonb column may hold. */
const storedMessage = fc.oneof(
  fc.record({ role: fc.constantFrom('system', 'user', 'assistant', 'tool', 'developer', 'smarter', 'smarter_error', 'robot'), content: fc.oneof(anyString, fc.constant(null), fc.array(json.value, { maxLength: 3 })) }, { requiredKeys: ['role'] }),
  fc.record({
    role: fc.constantFrom('user', 'assistant'),
    content: fc.array(
      fc.oneof(
        fc.record({ type: fc.constant('text'), text: anyString }),
        fc.record({ type: fc.constant('image_url'), image_url: fc.oneof(anyString, fc.record({ url: anyString, detail: anyString }, { requiredKeys: [] })) }),
        fc.record({ type: fc.constant('input_audio'), input_audio: fc.record({ data: anyString, format: anyString }) }),
        fc.record({ type: fc.constant('file'), file: fc.record({ file_data: anyString, file_id: anyString, filename: anyString }, { requiredKeys: [] }) }),
        fc.record({ type: fc.constant('refusal'), refusal: anyString }),
      ),
      { maxLength: 3 },
    ),
    refusal: fc.oneof(anyString, fc.constant(null)),
    audio: fc.record({ id: anyString }),
  }, { requiredKeys: ['role'] }),
  fc.record({
    role: fc.constant('assistant'),
    content: anyString,
    name: anyString,
    tool_calls: fc.array(fc.record({ id: anyString, type: anyString, function: fc.record({ name: anyString, arguments: fc.oneof(anyString, json.value) }) }), { maxLength: 2 }),
    tool_call_id: anyString,
  }),
  json.value,
);

test('historySize equals the length of the encoded PromptHistory in a list', (t) => {
  const row = fc.record({
    id: anyString,
    seq: fc.nat(),
    promptId: anyString,
    request: json.object,
    response: json.object,
    messages: fc.array(storedMessage, { maxLength: 4 }),
    createdAt: fc.date({ noInvalidDate: true }),
    updatedAt: fc.date({ noInvalidDate: true }),
    revision: fc.oneof(fc.nat(), fc.maxSafeInteger()),
  });
  fc.assert(
    fc.property(row, (r) => {
      const n = PromptHistory.encode(toHistory(r as HistoryRow)).finish().length;
      t.is(historySize(r as HistoryRow), 1 + intSize(n) + n);
    }),
    RUNS,
  );
});
