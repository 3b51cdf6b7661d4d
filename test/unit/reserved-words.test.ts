import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorSetSchema,
  type FileDescriptorSet,
} from '@bufbuild/protobuf/wkt';
import { findReservedNames, formatOffender, reservedIn } from '../../scripts/reserved-words.js';

const run = promisify(execFile);

const field = (name: string, number: number, extra: object = {}) => ({ name, number, label: Label.OPTIONAL, type: Type.STRING, ...extra });

/**
 * A small image: one parley file with an offender of every kind, and names that only look like offenders
 * (other case, soft or contextual keywords, map entries, synthetic oneofs), plus a file outside parley.*.
 */
function fixture(): FileDescriptorSet {
  return create(FileDescriptorSetSchema, {
    file: [
      {
        name: 'parley/default/v1/fixture.proto',
        package: 'parley.default.v1',
        syntax: 'proto3',
        messageType: [
          {
            name: 'RenameField',
            field: [field('from', 1), field('to', 2), field('From', 3), field('match', 4), field('record', 5)],
          },
          {
            name: 'Outer',
            field: [
              field('event', 1, { oneofIndex: 0 }),
              field('revision', 2, { type: Type.INT64, proto3Optional: true, oneofIndex: 1 }),
              field('labels', 3, { label: Label.REPEATED, type: Type.MESSAGE, typeName: '.parley.default.v1.Outer.LabelsEntry' }),
            ],
            oneofDecl: [{ name: 'default' }, { name: '_revision' }],
            nestedType: [
              { name: 'Inner', field: [field('type', 1), field('final', 2)] },
              { name: 'LabelsEntry', field: [field('key', 1), field('value', 2)], options: { mapEntry: true } },
            ],
            enumType: [{ name: 'Kind', value: [{ name: 'KIND_UNSPECIFIED', number: 0 }, { name: 'None', number: 1 }] }],
          },
        ],
        enumType: [{ name: 'object', value: [{ name: 'OBJECT_UNSPECIFIED', number: 0 }] }],
        service: [{ name: 'FixtureService', method: [{ name: 'delete', inputType: '.parley.default.v1.Outer', outputType: '.parley.default.v1.Outer' }] }],
        // The name of RenameField.from (message 0, field 0, name) on line 7, column 10 (0-based 6, 9).
        sourceCodeInfo: { location: [{ path: [4, 0, 2, 0, 1], span: [6, 9, 13] }] },
      },
      {
        name: 'other/v1/other.proto',
        package: 'other.v1',
        syntax: 'proto3',
        messageType: [{ name: 'Other', field: [field('from', 1)] }],
      },
    ],
  });
}

test('reservedIn: case-sensitive, per language, hard keywords only', (t) => {
  t.deepEqual(reservedIn('from'), ['Python']);
  t.deepEqual(reservedIn('event'), ['C#']);
  t.deepEqual(reservedIn('type'), ['Go']);
  t.deepEqual(reservedIn('final'), ['Java']);
  t.deepEqual(reservedIn('None'), ['Python']);
  t.deepEqual(reservedIn('default'), ['Go', 'Java', 'C#', 'TypeScript']);
  t.deepEqual(reservedIn('package'), ['Go', 'Java', 'TypeScript']);
  t.deepEqual(reservedIn('let'), ['TypeScript']);
  t.deepEqual(reservedIn('global'), ['Python']);
  t.deepEqual(reservedIn('var'), ['Go', 'TypeScript']);
  for (const ok of ['From', 'FROM', 'to', 'old_name', 'match', 'case_', 'record', 'when', 'sealed_at', 'id', 'name', 'value', 'key']) {
    t.deepEqual(reservedIn(ok), [], ok);
  }
});

test('findReservedNames: every kind of identifier of parley.* files, as written, nothing else', (t) => {
  const found = findReservedNames(fixture());
  t.deepEqual(
    found.map((o) => [o.fullName, o.kind, o.languages.join('+')]),
    [
      ['parley.default.v1', 'package', 'Go+Java+C#+TypeScript'],
      ['parley.default.v1.RenameField.from', 'field', 'Python'],
      ['parley.default.v1.Outer.event', 'field', 'C#'],
      ['parley.default.v1.Outer.default', 'oneof', 'Go+Java+C#+TypeScript'],
      ['parley.default.v1.Outer.Inner.type', 'field', 'Go'],
      ['parley.default.v1.Outer.Inner.final', 'field', 'Java'],
      ['parley.default.v1.Outer.Kind.None', 'enum value', 'Python'],
      ['parley.default.v1.object', 'enum', 'C#'],
      ['parley.default.v1.FixtureService.delete', 'rpc', 'TypeScript'],
    ],
  );
  const from = found.find((o) => o.name === 'from')!;
  t.is(from.file, 'parley/default/v1/fixture.proto');
  t.is(formatOffender(from, 'proto/'), 'proto/parley/default/v1/fixture.proto:7:10: parley.default.v1.RenameField.from (field `from`) is reserved in Python');
  t.is(formatOffender(found.find((o) => o.name === 'event')!), 'parley/default/v1/fixture.proto: parley.default.v1.Outer.event (field `event`) is reserved in C#');
  t.deepEqual(findReservedNames(fixture(), 'other').map((o) => o.fullName), ['other.v1.Other.from']);
});

test('check:names exits 1 and lists the offenders of an image, 0 for a clean one, 2 for an image without parley.*', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'parley-names-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cli = (image: string) =>
    run(process.execPath, ['--import=tsx', 'scripts/check-reserved-words.ts', '--image', image], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  const bad = path.join(dir, 'bad.binpb');
  writeFileSync(bad, toBinary(FileDescriptorSetSchema, fixture()));
  const failed = await cli(bad);
  t.is(failed.code, 1, failed.stderr);
  t.regex(failed.stderr, /^reserved words: 9 identifiers of parley\.\* are reserved/m);
  t.regex(failed.stderr, /^parley\/default\/v1\/fixture\.proto:7:10: parley\.default\.v1\.RenameField\.from \(field `from`\) is reserved in Python$/m);
  t.regex(failed.stderr, /^parley\/default\/v1\/fixture\.proto: parley\.default\.v1\.Outer\.event \(field `event`\) is reserved in C#$/m);
  t.notRegex(failed.stderr, /other\.v1/);

  const clean = fixture();
  clean.file = clean.file.slice(0, 1);
  clean.file[0]!.package = 'parley.fixture.v1';
  clean.file[0]!.messageType = [{ ...clean.file[0]!.messageType[0]!, field: clean.file[0]!.messageType[0]!.field.slice(1) }];
  clean.file[0]!.enumType = [];
  clean.file[0]!.service = [];
  const good = path.join(dir, 'good.binpb');
  writeFileSync(good, toBinary(FileDescriptorSetSchema, clean));
  const passed = await cli(good);
  t.is(passed.code, 0, passed.stderr);
  t.regex(passed.stdout, /^reserved words: none in 1 files of parley\.\*/);

  const other = fixture();
  other.file = other.file.slice(1);
  const none = path.join(dir, 'none.binpb');
  writeFileSync(none, toBinary(FileDescriptorSetSchema, other));
  t.is((await cli(none)).code, 2);
});
