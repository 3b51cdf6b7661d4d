import test from 'ava';
import { createFileRegistry, fromBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import * as admin from '../../src/gen/parley/admin/v1/admin.js';
import * as genie from '../../src/gen/parley/genie/v1/genie.js';
import * as prompt from '../../src/gen/parley/prompt/v1/prompt.js';
import { loadImage } from '../../src/transport/reflection.js';
import { propertyName, requestTypes, requestViolations, undecodableViolation } from '../../src/transport/request-check.js';

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
