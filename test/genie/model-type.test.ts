import test from 'ava';
import { AppError } from '../../src/errors.js';
import { fieldViolations } from '../../src/genie/json-schema.js';
import { modelTypeViolations, storedStatesFor, upgrade, type ModelTypeDef } from '../../src/genie/model-type.js';

const machine = (states: string[]) => ({ states, initialState: states[0]!, transitions: [] });
const v1: ModelTypeDef = { name: 't', schemaVersion: 1, jsonSchema: undefined, stateMachine: machine(['a', 'b']), upgrades: [], cacheTtlSeconds: 0, sessionTtlSeconds: 0 };
const v2: ModelTypeDef = {
  ...v1,
  schemaVersion: 2,
  stateMachine: machine(['a2', 'b']),
  upgrades: [
    { fromVersion: 1, kind: 'map_states', mapping: { a: 'a2' } },
    { fromVersion: 1, kind: 'rename_field', from: 'x', to: 'y' },
    { fromVersion: 1, kind: 'add_field', name: 'list', defaultValue: [] },
  ],
};
const v4: ModelTypeDef = {
  ...v1,
  schemaVersion: 4,
  stateMachine: machine(['a3', 'b']),
  upgrades: [
    { fromVersion: 2, kind: 'map_states', mapping: { a2: 'a3' } },
    { fromVersion: 2, kind: 'drop_field', name: 'y' },
  ],
};

test('upgrade runs each newer version\'s steps in turn, skipping unregistered version numbers', (t) => {
  const up = upgrade({ schemaVersion: 1, state: 'a', fields: { x: 1, keep: true } }, [v1, v2, v4], 't');
  t.deepEqual(up, { schemaVersion: 4, state: 'a3', fields: { keep: true, list: [] } });
  const from2 = upgrade({ schemaVersion: 2, state: 'b', fields: { y: 1, list: [1] } }, [v1, v2, v4], 't');
  t.deepEqual(from2, { schemaVersion: 4, state: 'b', fields: { list: [1] } });
});

test('upgrade does not mutate its input or share the default value between sessions', (t) => {
  const input = { schemaVersion: 1, state: 'a', fields: { x: { deep: 1 } } };
  const a = upgrade(input, [v1, v2], 't');
  const b = upgrade(input, [v1, v2], 't');
  t.deepEqual(input.fields, { x: { deep: 1 } });
  t.not(a.fields.list, b.fields.list);
});

test('upgrade: a newer or unregistered stored version is FAILED_PRECONDITION with both versions (the reference raises ValueError)', (t) => {
  const newer = t.throws(() => upgrade({ schemaVersion: 5, state: 'a', fields: {} }, [v1, v2, v4], 't'));
  t.true(newer instanceof AppError && newer.code === 'FAILED_PRECONDITION');
  t.regex(newer!.message, /version 5 .*newer.*knows 4/);
  const gap = t.throws(() => upgrade({ schemaVersion: 3, state: 'a', fields: {} }, [v1, v2, v4], 't'));
  t.regex(gap!.message, /version 3 .*no upgrade path.*knows 4/);
  const unmappedState = t.throws(() => upgrade({ schemaVersion: 1, state: 'zz', fields: {} }, [v1, v2], 't'));
  t.true(unmappedState instanceof AppError && unmappedState.code === 'FAILED_PRECONDITION');
});

test('upgrade failures carry stable reasons and a PreconditionFailure naming the type and version', (t) => {
  const reasonOf = (f: () => unknown) => {
    const e = t.throws(f) as AppError;
    return [e.code, e.reason, e.preconditions.map((p) => `${p.type} ${p.subject}`)];
  };
  t.deepEqual(reasonOf(() => upgrade({ schemaVersion: 5, state: 'a', fields: {} }, [v1, v2, v4], 't')), [
    'FAILED_PRECONDITION',
    'SCHEMA_VERSION_UNKNOWN',
    ['SCHEMA_VERSION model_type/t/version/5'],
  ]);
  t.deepEqual(reasonOf(() => upgrade({ schemaVersion: 1, state: 'zz', fields: {} }, [v1, v2], 't')), [
    'FAILED_PRECONDITION',
    'UPGRADE_STATE_UNKNOWN',
    ['STATE model_type/t/version/2'],
  ]);
  t.deepEqual(reasonOf(() => upgrade({ schemaVersion: 1, state: 'a', fields: {} }, [], 't')), ['FAILED_PRECONDITION', 'MODEL_TYPE_NOT_REGISTERED', []]);
});

test('storedStatesFor finds every stored (version, state) that reads as a given state', (t) => {
  t.deepEqual(storedStatesFor('a3', [v1, v2, v4]), [
    { schemaVersion: 1, states: ['a'] },
    { schemaVersion: 2, states: ['a2'] },
    { schemaVersion: 4, states: ['a3'] },
  ]);
  t.deepEqual(storedStatesFor('b', [v1, v2]), [
    { schemaVersion: 1, states: ['b'] },
    { schemaVersion: 2, states: ['b'] },
  ]);
});

test('modelTypeViolations checks from_version against the previous version and that every old state survives', (t) => {
  t.deepEqual(modelTypeViolations(v2, v1), []);
  const skipped = modelTypeViolations({ ...v4, upgrades: [{ fromVersion: 1, kind: 'map_states', mapping: { a: 'a3', a2: 'a3' } }] }, v2);
  t.deepEqual(skipped.map((v) => v.field), ['model_type.upgrades[0].from_version']);
  const lost = modelTypeViolations({ ...v4, upgrades: [] }, v2);
  t.deepEqual(lost.map((v) => v.field), ['model_type.upgrades']);
  t.regex(lost[0]!.description, /"a2"/);
});

test('fieldViolations names fields.<path> for nested, required and additional properties', (t) => {
  const schema = {
    type: 'object',
    properties: { a: { type: 'object', properties: { 'b/c': { type: 'integer' } } } },
    required: ['r'],
    additionalProperties: false,
  };
  t.deepEqual(
    fieldViolations(schema, { a: { 'b/c': 1.5 }, extra: 1 })
      .map((v) => v.field)
      .sort(),
    ['fields.a.b/c', 'fields.extra', 'fields.r'],
  );
  t.deepEqual(fieldViolations(undefined, { anything: 1 }), []);
  t.deepEqual(fieldViolations({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object' }, {}), []);
});
