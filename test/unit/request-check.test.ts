import test from 'ava';
import { createFileRegistry, fromBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import * as admin from '../../src/gen/parley/admin/v1/admin.js';
import * as genie from '../../src/gen/parley/genie/v1/genie.js';
import * as prompt from '../../src/gen/parley/prompt/v1/prompt.js';
import { loadImage } from '../../src/transport/reflection.js';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { propertyName, requestTypes, requestViolations, undecodableViolation, wireViolations } from '../../src/transport/request-check.js';

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, loadImage()));
const modules: Record<string, Record<string, any>> = { 'parley.admin.v1': admin, 'parley.genie.v1': genie, 'parley.prompt.v1': prompt };

function* messages(): Generator<DescMessage> {
  for (const file of registry.files) {
    if (!modules[file.proto.package]) continue;
    const walk = function* (m: DescMessage): Generator<DescMessage> {
      yield m;
      for (const n of m.nestedMessages) yield* walk(n);
    };
    for (const m of file.messages) yield* walk(m);
  }
}

test('request-check names every field as the generated code does, so no field escapes the checks', (t) => {
  let checked = 0;
  for (const m of messages()) {
    const pkg = m.file.proto.package;
    const generated = modules[pkg]![m.typeName.slice(pkg.length + 1).replace(/\./g, '_')];
    if (!generated?.fromPartial) continue; // map entries have no generated type
    const keys = Object.keys(generated.fromPartial({})).sort();
    t.deepEqual(keys, m.fields.map((f) => propertyName(f.name)).sort(), m.typeName);
    checked++;
  }
  t.true(checked > 50, `${checked} messages checked`);
});

test('request-check knows the request type of every method of the three services', (t) => {
  const types = requestTypes(loadImage());
  for (const def of [admin.AdminServiceService, genie.GenieServiceService, prompt.PromptServiceService]) {
    for (const m of Object.values(def)) t.truthy(types.get(m.path), m.path);
  }
});

test('request-check reports at most five problems, each path shortened', (t) => {
  const desc = requestTypes(loadImage()).get('/parley.genie.v1.GenieService/CreateSession')!;
  const fields = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`${'k'.repeat(100)}${i}`, 'a\u0000']));
  const v = requestViolations(desc, { modelType: 'qa', fields });
  t.is(v.length, 5);
  for (const x of v) t.true(x.field.length < 60, x.field);
});

test('request-check explains undecodable bytes without throwing', (t) => {
  const desc = requestTypes(loadImage()).get('/parley.genie.v1.GenieService/GetSession')!;
  t.deepEqual(undecodableViolation(desc, Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), {
    field: '(request)',
    description: 'is not a valid parley.genie.v1.GetSessionRequest message',
  });
});

/** A message from (field number, write) pairs, as a buggy encoder would make it. */
const bytes = (write: (w: BinaryWriter) => unknown) => {
  const w = new BinaryWriter();
  write(w);
  return w.finish();
};
const stamp = (w: BinaryWriter, no: number, seconds: bigint | number, nanos: number) =>
  w.tag(no, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int64(seconds).tag(2, WireType.Varint).int32(nanos).join();
const method = (path: string) => requestTypes(loadImage()).get(path)!;

test('request-check names a 64-bit integer past 2^53 by its field, where the decoder gives up', (t) => {
  const desc = method('/parley.genie.v1.GenieService/SendEvent');
  const msg = bytes((w) => w.tag(1, WireType.LengthDelimited).string('s').tag(5, WireType.Varint).int64(2n ** 53n + 1n));
  t.throws(() => genie.SendEventRequest.decode(msg));
  t.deepEqual(undecodableViolation(desc, msg), { field: 'expected_revision', description: 'must be between -(2^53 - 1) and 2^53 - 1' });
  t.deepEqual(wireViolations(desc, msg).map((v) => v.field), ['expected_revision']);
  const negative = bytes((w) => w.tag(5, WireType.Varint).int64(-(2n ** 60n)));
  t.deepEqual(wireViolations(desc, negative).map((v) => v.field), ['expected_revision']);
  const fine = bytes((w) => w.tag(5, WireType.Varint).int64(2n ** 53n - 1n));
  t.deepEqual(wireViolations(desc, fine), []);
});

test('request-check refuses a 32-bit field sent a larger varint, which the decoder would silently truncate', (t) => {
  const desc = method('/parley.genie.v1.GenieService/ListSessions');
  const pageSizeNo = desc.fields.find((f) => f.name === 'page_size')!.number;
  const big = bytes((w) => w.tag(pageSizeNo, WireType.Varint).int64(2n ** 53n + 1n));
  t.is(genie.ListSessionsRequest.decode(big).pageSize, 1, 'truncated by the decoder');
  t.deepEqual(wireViolations(desc, big), [{ field: 'page_size', description: 'must be a 32-bit integer' }]);
  // Negative int32s are 10-byte varints; 5-byte ones (the 32 bits unsigned) are accepted as the decoder reads them.
  t.deepEqual(wireViolations(desc, bytes((w) => w.tag(pageSizeNo, WireType.Varint).int32(-5))), []);
  t.deepEqual(wireViolations(desc, bytes((w) => w.tag(pageSizeNo, WireType.Varint).uint32(0xffffffff))), []);
});

test('request-check refuses Timestamp nanos outside 0..999999999 and seconds outside 0001..9999', (t) => {
  const desc = method('/parley.prompt.v1.PromptService/ListPrompts');
  const no = desc.fields.find((f) => f.name === 'created_after')!.number;
  for (const [seconds, nanos] of [
    [0, -1],
    [0, 1_000_000_000],
    [1_700_000_000, 2 ** 31 - 1],
    [-62_135_596_801, 0],
    [253_402_300_800, 0],
  ] as const) {
    const v = wireViolations(desc, bytes((w) => stamp(w, no, seconds, nanos)));
    t.deepEqual(v.map((x) => x.field), ['created_after'], `${seconds}s ${nanos}ns`);
  }
  for (const [seconds, nanos] of [
    [0, 0],
    [0, 999_999_999],
    [-62_135_596_800, 0],
    [253_402_300_799, 999_999_999],
  ] as const) {
    t.deepEqual(wireViolations(desc, bytes((w) => stamp(w, no, seconds, nanos))), [], `${seconds}s ${nanos}ns`);
  }
});

test('request-check refuses Duration nanos out of range or of the other sign than seconds', (t) => {
  const desc = method('/parley.admin.v1.AdminService/PurgeExpiredData');
  for (const [seconds, nanos] of [
    [1, -1],
    [-1, 1],
    [0, 1_000_000_000],
    [0, -1_000_000_000],
    [315_576_000_001, 0],
  ] as const) {
    t.deepEqual(wireViolations(desc, bytes((w) => stamp(w, 1, seconds, nanos))).map((x) => x.field), ['older_than'], `${seconds}s ${nanos}ns`);
  }
  for (const [seconds, nanos] of [
    [0, -5],
    [-1, -999_999_999],
    [86_400, 999_999_999],
  ] as const) {
    t.deepEqual(wireViolations(desc, bytes((w) => stamp(w, 1, seconds, nanos))), [], `${seconds}s ${nanos}ns`);
  }
});

test('request-check names nested fields and indexes repeated ones in wire paths', (t) => {
  const desc = method('/parley.genie.v1.GenieService/RegisterModelType');
  // model_type (1) → create_time, a Timestamp: a field path through a nested message.
  const mt = desc.fields.find((f) => f.name === 'model_type')!;
  const ct = mt.message!.fields.find((f) => f.name === 'create_time')!.number;
  const msg = bytes((w) => stamp(w.tag(mt.number, WireType.LengthDelimited).fork(), ct, 0, -1).join());
  t.deepEqual(wireViolations(desc, msg).map((v) => v.field), ['model_type.create_time']);
  // model_type.upgrades (5), a repeated UpgradeStep whose from_version (1) is an int32.
  const step = (w: BinaryWriter, fromVersion: bigint) => w.tag(5, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int64(fromVersion).join();
  const upgrades = bytes((w) => {
    const inner = w.tag(mt.number, WireType.LengthDelimited).fork();
    step(inner, 1n);
    step(inner, 2n ** 40n);
    inner.join();
  });
  t.deepEqual(wireViolations(desc, upgrades).map((v) => v.field), ['model_type.upgrades[1].from_version']);
});
