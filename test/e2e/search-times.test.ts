import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { createTenant, rpc, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

/** How many rows each comparison with `t` matches, by operator. */
const OPS = ['=', '<=', '>=', '<', '>'] as const;
const EXPECTED = { '=': 1, '<=': 1, '>=': 1, '<': 0, '>': 0 };

test('a time filter compares at the millisecond the API shows: a prompt matches its own create_time and update_time (Postgres stores microseconds)', async (t) => {
  const tenant = await createTenant(s);
  const open = await rpc(
    s.prompt,
    s.prompt.openPrompt,
    { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} },
    tenant.md,
  );
  const p = open.prompt!;
  const count = async (filter: string) =>
    (
      await rpc(
        s.prompt,
        s.prompt.listPrompts,
        { pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '', filter, orderBy: '', showTotalSize: true },
        tenant.md,
      )
    ).totalSize;
  for (const [field, at] of [['create_time', p.createTime!], ['update_time', p.updateTime!]] as const) {
    for (const op of OPS) t.is(await count(`${field} ${op} "${at.toISOString()}"`), EXPECTED[op], `${field} ${op}`);
    // A literal finer than the millisecond: just after the shown time.
    const finer = at.toISOString().replace('Z', '001Z');
    t.is(await count(`${field} = "${finer}"`), 0, `${field} = finer`);
    t.is(await count(`${field} < "${finer}"`), 1, `${field} < finer`);
    t.is(await count(`${field} >= "${finer}"`), 0, `${field} >= finer`);
  }
});

test('a time filter compares at the millisecond the API shows: a session matches its own create_time and update_time', async (t) => {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(modelType());
  const created = await rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields: { topic: 't' }, expireTime: undefined, requestId: '', endUserId: '', labels: {} }, tenant.md);
  const session = created.session!;
  const count = async (filter: string) =>
    (await rpc(s.genie, s.genie.listSessions, { modelType: '', state: '', pageSize: 0, pageToken: '', endUserId: '', filter, orderBy: '', showTotalSize: true }, tenant.md)).totalSize;
  for (const [field, at] of [['create_time', session.createTime!], ['update_time', session.updateTime!]] as const) {
    for (const op of OPS) t.is(await count(`${field} ${op} "${at.toISOString()}"`), EXPECTED[op], `${field} ${op}`);
  }
});

test('a day that does not exist is not a time, an equality with "" (the field unset) is not indexed: INVALID_ARGUMENT on filter; a __proto__ label key is refused on labels', async (t) => {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(modelType());
  for (const filter of ['create_time < "2025-02-30T00:00:00Z"', 'update_time >= "2025-01-31T24:00:00Z"', 'end_user_id = ""', 'model_type = ""']) {
    const err = await t.throwsAsync<ServiceError>(
      rpc(s.genie, s.genie.listSessions, { modelType: '', state: '', pageSize: 0, pageToken: '', endUserId: '', filter, orderBy: '', showTotalSize: false }, tenant.md),
    );
    t.is(err?.code, status.INVALID_ARGUMENT, filter);
    t.deepEqual(violatedFields(err!), ['filter'], filter);
  }
  const prompts = await t.throwsAsync<ServiceError>(
    rpc(
      s.prompt,
      s.prompt.listPrompts,
      { pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '', filter: 'end_user_id = ""', orderBy: '', showTotalSize: false },
      tenant.md,
    ),
  );
  t.is(prompts?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(prompts!), ['filter']);
  const err = await t.throwsAsync<ServiceError>(
    rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields: { topic: 't' }, expireTime: undefined, requestId: '', endUserId: '', labels: JSON.parse('{"__proto__":"x"}') as Record<string, string> }, tenant.md),
  );
  t.is(err?.code, status.INVALID_ARGUMENT);
  // The request check refuses the one key JavaScript cannot hold as data, naming it.
  t.deepEqual(violatedFields(err!), ['labels[__proto__]']);
});
