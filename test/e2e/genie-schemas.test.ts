import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { schemaEngineStats } from '../../src/genie/json-schema.js';
import { MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH } from '../../src/genie/schema-limits.js';
import { createTenant, rpc, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { code, details, genie, modelType } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const fresh = async () => {
  const tenant = await createTenant(s);
  return { tenant, g: genie(s, tenant) };
};
const objectWith = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ type: 'object', properties, ...extra });

test('a catastrophic-backtracking pattern cannot block the server: the evil value is INVALID_ARGUMENT at once', async (t) => {
  const { tenant, g } = await fresh();
  await g.register(modelType({ name: 'evil', jsonSchema: objectWith({ code: { type: 'string', pattern: '^(a+)+$' } }) }));
  // On a backtracking engine this value takes about 2^48 steps: the call would run past any deadline, and
  // the event loop it blocks is also the one this test's client runs on.
  const value = `${'a'.repeat(48)}!`;
  const deadline = () => ({ deadline: Date.now() + 20_000 });
  const created = await t.throwsAsync<ServiceError>(rpc(s.genie, s.genie.createSession, { endUserId: '', modelType: 'evil', fields: { code: value }, expireTime: undefined, requestId: '', labels: {} }, tenant.md, deadline()));
  t.is(created?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(created!), ['fields.code']);

  const session = await g.create('evil', { code: 'aaa' });
  const updated = await t.throwsAsync(g.update(session.sessionId, [], { fieldsPatch: { code: value } }));
  t.is(code(updated), status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(updated as ServiceError), ['fields.code']);

  await g.register(modelType({ name: 'keys', jsonSchema: { type: 'object', patternProperties: { '^(a+)+$': { type: 'integer' } }, additionalProperties: false } }));
  const keyed = await t.throwsAsync<ServiceError>(rpc(s.genie, s.genie.createSession, { endUserId: '', modelType: 'keys', fields: { [value]: 1 }, expireTime: undefined, requestId: '', labels: {} }, tenant.md, deadline()));
  t.deepEqual(violatedFields(keyed!), [`fields.${value}`]);
});

test('a pattern RE2 cannot run is INVALID_ARGUMENT model_type.json_schema with a short reason', async (t) => {
  const { g } = await fresh();
  const pattern = `(?=x)${'y'.repeat(900)}`;
  const err = await t.throwsAsync<ServiceError>(g.register(modelType({ jsonSchema: objectWith({ code: { type: 'string', pattern } }) })));
  t.is(err?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(err!), ['model_type.json_schema']);
  t.regex(details(err), /not supported \(no lookaround or backreferences\)/);
  t.true(details(err).length < 300, details(err));

  const heavy = await t.throwsAsync<ServiceError>(g.register(modelType({ jsonSchema: objectWith({ code: { type: 'string', pattern: '\\p{L}{100}' } }) })));
  t.deepEqual(violatedFields(heavy!), ['model_type.json_schema']);
  t.regex(details(heavy), /more than the server allows/);
  t.is(code(await t.throwsAsync(g.getType('qa'))), status.NOT_FOUND, 'nothing was stored');
});

test('a schema over the size or depth limit is INVALID_ARGUMENT model_type.json_schema with a short reason', async (t) => {
  const { g } = await fresh();
  const big = await t.throwsAsync<ServiceError>(g.register(modelType({ jsonSchema: { type: 'object', description: 'x'.repeat(MAX_SCHEMA_BYTES) } })));
  t.is(big?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(big!), ['model_type.json_schema']);
  t.regex(details(big), new RegExp(`at most ${MAX_SCHEMA_BYTES} are allowed`));
  t.true(details(big).length < 200, details(big));

  // One level too deep; the generated protobuf decoder refuses a Struct only a little deeper than that.
  let deep: Record<string, unknown> = {};
  for (let i = 1; i <= MAX_SCHEMA_DEPTH; i++) deep = { not: deep };
  const nested = await t.throwsAsync<ServiceError>(g.register(modelType({ jsonSchema: deep })));
  // The request check refuses it before the model type rules see it, naming where it goes too deep.
  t.is(violatedFields(nested!).length, 1);
  t.regex(violatedFields(nested!)[0]!, /^model_type\.json_schema(\.not)*$/);
  t.regex(details(nested), new RegExp(`nests deeper than ${MAX_SCHEMA_DEPTH} levels`));
});

test.serial('1,000 registrations refused as ALREADY_EXISTS, each with a different schema, compile nothing and keep nothing', async (t) => {
  t.timeout(120_000);
  const { g } = await fresh();
  await g.register(modelType({ name: 'dup' }));
  // About 11 KB each, every one different.
  const schema = (i: number) =>
    objectWith(
      Object.fromEntries(Array.from({ length: 40 }, (_, k) => [`f${k}_${i}`, { type: 'string', maxLength: 100 + i, description: 'd'.repeat(200) }])),
      { $defs: { id: { $id: `https://example.com/dup/${i}`, type: 'string', pattern: `^x${i}$` } } },
    );
  const before = schemaEngineStats();
  for (let batch = 0; batch < 1000; batch += 25) {
    const results = await Promise.allSettled(Array.from({ length: 25 }, (_, k) => g.register(modelType({ name: 'dup', jsonSchema: schema(batch + k) }))));
    for (const r of results) t.is(r.status === 'rejected' ? code(r.reason) : 'stored', status.ALREADY_EXISTS);
  }
  const after = schemaEngineStats();
  t.is(after.compiles, before.compiles, 'a refused schema was compiled');
  t.is(after.checkerEntries, before.checkerEntries, 'the shared meta-schema checkers grew');
  t.is(after.cachedValidators, before.cachedValidators);
  t.is(after.livePatterns, before.livePatterns);
});

test("one tenant's nested $id does not interfere with another tenant's schema", async (t) => {
  const shared = (type: string) => ({
    type: 'object',
    properties: { n: { $ref: 'https://example.com/shared-name' } },
    $defs: { name: { $id: 'https://example.com/shared-name', type } },
  });
  const a = await fresh();
  const b = await fresh();
  await a.g.register(modelType({ name: 'named', jsonSchema: shared('string') }));
  await b.g.register(modelType({ name: 'named', jsonSchema: shared('integer') }));
  await a.g.create('named', { n: 'x' });
  await b.g.create('named', { n: 1 });
  const wrongA = await t.throwsAsync<ServiceError>(a.g.create('named', { n: 1 }));
  t.deepEqual(violatedFields(wrongA!), ['fields.n']);
  const wrongB = await t.throwsAsync<ServiceError>(b.g.create('named', { n: 'x' }));
  t.deepEqual(violatedFields(wrongB!), ['fields.n']);

  // A $ref to an $id only another tenant's schema defines resolves to nothing, whoever registered first.
  const c = await fresh();
  const dangling = { type: 'object', properties: { n: { $ref: 'https://example.com/shared-name' } }, $defs: { name: { type: 'integer' } } };
  const refused = await t.throwsAsync<ServiceError>(c.g.register(modelType({ name: 'named', jsonSchema: dangling })));
  t.is(refused?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(refused!), ['model_type.json_schema']);
  t.regex(details(refused), /can't resolve reference/);
});

test('a violation quotes a long pattern only briefly', async (t) => {
  const { g } = await fresh();
  const pattern = `^${'x'.repeat(900)}$`;
  await g.register(modelType({ name: 'long', jsonSchema: objectWith({ code: { type: 'string', pattern } }) }));
  const err = await t.throwsAsync<ServiceError>(g.create('long', { code: 'y' }));
  t.deepEqual(violatedFields(err!), ['fields.code']);
  t.true(details(err).length < 150, details(err));
});
