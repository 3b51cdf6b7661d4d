import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus } from '../../src/gen/grpc/health/v1/health.js';
import { bearer, createTenant, rpc, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const code = (e: unknown) => (e as ServiceError).code;

test('health reports SERVING once Postgres and Redis answer', async (t) => {
  const r = await rpc(s.health, s.health.check, { service: '' });
  t.is(r.status, HealthCheckResponse_ServingStatus.SERVING);
  const p = await rpc(s.health, s.health.check, { service: 'parley.prompt.v1.PromptService' });
  t.is(p.status, HealthCheckResponse_ServingStatus.SERVING);
  const e = await t.throwsAsync(rpc(s.health, s.health.check, { service: 'no.such.Service' }));
  t.is(code(e), status.NOT_FOUND);
});

test('admin creates and gets accounts, user profiles and LLM clients', async (t) => {
  const tenant = await createTenant(s, 'support');
  const { account } = await rpc(s.admin, s.admin.getAccount, { id: tenant.accountId, accountNumber: '' }, s.adminMd);
  t.is(account?.accountNumber, tenant.accountNumber);
  t.regex(tenant.accountNumber, /^\d{4}-\d{4}-\d{4}$/);
  const byNumber = await rpc(s.admin, s.admin.getAccount, { id: '', accountNumber: tenant.accountNumber }, s.adminMd);
  t.is(byNumber.account?.id, tenant.accountId);
  const { userProfile } = await rpc(s.admin, s.admin.getUserProfile, { id: tenant.userProfileId }, s.adminMd);
  t.is(userProfile?.accountId, tenant.accountId);
  t.is(userProfile?.username, 'ada');
  const { llmClient } = await rpc(s.admin, s.admin.getLlmClient, { id: tenant.llmClientId }, s.adminMd);
  t.is(llmClient?.name, 'support');
  t.true(llmClient!.createTime instanceof Date);
  t.is(llmClient!.revision, 1);
});

test('admin calls need the admin token', async (t) => {
  const none = await t.throwsAsync(rpc(s.admin, s.admin.createAccount, { accountNumber: '', displayName: 'x', requestId: '' }));
  t.is(code(none), status.UNAUTHENTICATED);
  const wrong = await t.throwsAsync(rpc(s.admin, s.admin.createAccount, { accountNumber: '', displayName: 'x', requestId: '' }, bearer('not-the-token-at-all')));
  t.is(code(wrong), status.UNAUTHENTICATED);
});

test('admin rejects bad input with INVALID_ARGUMENT naming the field, and duplicates with ALREADY_EXISTS', async (t) => {
  const bad = await t.throwsAsync<ServiceError>(
    rpc(s.admin, s.admin.createAccount, { accountNumber: '12-34', displayName: '', requestId: '' }, s.adminMd),
  );
  t.is(bad?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(bad!), ['account_number']);
  const tenant = await createTenant(s);
  const dup = await t.throwsAsync(rpc(s.admin, s.admin.createAccount, { accountNumber: tenant.accountNumber, displayName: '', requestId: '' }, s.adminMd));
  t.is(code(dup), status.ALREADY_EXISTS);
  const badName = await t.throwsAsync<ServiceError>(
    rpc(s.admin, s.admin.createLlmClient, { accountId: tenant.accountId, name: 'Has Space', description: '', requestId: '' }, s.adminMd),
  );
  t.deepEqual(violatedFields(badName!), ['name']);
  const noAccount = await t.throwsAsync<ServiceError>(
    rpc(s.admin, s.admin.createUserProfile, { accountId: '00000000-0000-4000-8000-000000000000', username: 'x', email: '', requestId: '' }, s.adminMd),
  );
  t.is(noAccount?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(noAccount!), ['account_id']);
  const missing = await t.throwsAsync(rpc(s.admin, s.admin.getLlmClient, { id: '00000000-0000-4000-8000-000000000000' }, s.adminMd));
  t.is(code(missing), status.NOT_FOUND);
});

test('OpenPrompt creates a session for an LLM client, then returns the same session for its key', async (t) => {
  const tenant = await createTenant(s);
  const opened = await rpc(
    s.prompt,
    s.prompt.openPrompt,
    { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, requestId: '', llmClientUrl: '', ipAddress: '198.51.100.4', userAgent: 'test/1', url: 'https://chat.example.com/c?session_key=secret' },
    tenant.md,
  );
  t.true(opened.created);
  const p = opened.prompt!;
  t.regex(p.sessionKey, /^[0-9a-f]{64}$/);
  t.is(p.llmClientId, tenant.llmClientId);
  t.is(p.userProfileId, tenant.userProfileId);
  t.is(p.ipAddress, '198.51.100.4');
  t.is(p.userAgent, 'test/1');
  t.is(p.url, 'https://chat.example.com/c', 'the query string (which may hold the session key) is not recorded');
  t.is(p.version, '1.0.0');
  t.regex(p.name, /^[a-z][a-zA-Z0-9]*$/);

  const again = await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: p.sessionKey, llmClientId: '', requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '' }, tenant.md);
  t.false(again.created);
  t.is(again.prompt?.id, p.id);
  const got = await rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, tenant.md);
  t.is(got.prompt?.sessionKey, p.sessionKey);
});

test('OpenPrompt resolves the LLM client from its URL', async (t) => {
  const tenant = await createTenant(s, 'hr');
  const url = `https://hr.${tenant.accountNumber}.alpha.api.example.com/llm-client/`;
  const r = await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: '', requestId: '', llmClientUrl: url, ipAddress: '', userAgent: '', url: '' }, tenant.md);
  t.is(r.prompt?.llmClientId, tenant.llmClientId);
  const other = await t.throwsAsync(
    rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: '', requestId: '', llmClientUrl: 'https://hr.0000-0000-0000.api.example.com/', ipAddress: '', userAgent: '', url: '' }, tenant.md),
  );
  t.is(code(other), status.NOT_FOUND);
});

test('OpenPrompt validates its input and needs an API key', async (t) => {
  const tenant = await createTenant(s);
  const empty = { sessionKey: '', llmClientId: '', requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', endUserId: '', labels: {} };
  const neither = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, empty, tenant.md));
  t.is(neither?.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(neither!), ['session_key']);
  const badKey = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, { ...empty, sessionKey: 'short' }, tenant.md));
  t.deepEqual(violatedFields(badKey!), ['session_key']);
  const badIp = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, { ...empty, llmClientId: tenant.llmClientId, ipAddress: '999.1.1.1' }, tenant.md));
  t.deepEqual(violatedFields(badIp!), ['ip_address']);
  const badClient = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, { ...empty, llmClientId: 'nope' }, tenant.md));
  t.deepEqual(violatedFields(badClient!), ['llm_client_id']);
  const anon = await t.throwsAsync(rpc(s.prompt, s.prompt.openPrompt, { ...empty, llmClientId: tenant.llmClientId }));
  t.is(code(anon), status.UNAUTHENTICATED);
  const unknownKey = await t.throwsAsync(rpc(s.prompt, s.prompt.openPrompt, { ...empty, llmClientId: tenant.llmClientId }, bearer('pk_unknown')));
  t.is(code(unknownKey), status.UNAUTHENTICATED);
});

test('a revoked API key is refused from then on', async (t) => {
  const tenant = await createTenant(s);
  const req = { sessionKey: '', llmClientId: tenant.llmClientId, requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', endUserId: '', labels: {} };
  await rpc(s.prompt, s.prompt.openPrompt, req, tenant.md);
  await rpc(s.admin, s.admin.revokeApiKey, { id: tenant.apiKeyId, requestId: '' }, s.adminMd);
  const e = await t.throwsAsync(rpc(s.prompt, s.prompt.openPrompt, req, tenant.md));
  t.is(code(e), status.UNAUTHENTICATED);
});

test('another account cannot see or reuse a session', async (t) => {
  const a = await createTenant(s);
  const b = await createTenant(s);
  const { prompt } = await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: a.llmClientId, requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '' }, a.md);
  const get = await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { id: prompt!.id, sessionKey: '' }, b.md));
  t.is(code(get), status.NOT_FOUND);
  const reuse = await t.throwsAsync(
    rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: prompt!.sessionKey, llmClientId: b.llmClientId, requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '' }, b.md),
  );
  t.is(code(reuse), status.NOT_FOUND);
  const foreignClient = await t.throwsAsync(
    rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: a.llmClientId, requestId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '' }, b.md),
  );
  t.is(code(foreignClient), status.NOT_FOUND);
});
