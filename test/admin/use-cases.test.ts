import test from 'ava';
import { MemoryKv } from '../../src/storage/memory-kv.js';
import { AdminUseCases } from '../../src/admin/service.js';
import { PrincipalCache } from '../../src/admin/cache.js';
import { AppError } from '../../src/errors.js';
import { MemoryAdminStore, MemoryUnitOfWork } from './memory-admin-store.js';

function admin() {
  const store = new MemoryAdminStore();
  return { store, admin: new AdminUseCases({ store, unitOfWork: new MemoryUnitOfWork(store), principals: new PrincipalCache(new MemoryKv(), undefined) }) };
}

const code = (err: unknown) => (err instanceof AppError ? `${err.code} ${err.reason ?? ''}`.trim() : String(err));

test('AdminUseCases: an account, a profile and a key make a principal; a revoked key is refused at once', async (t) => {
  const { admin: a } = admin();
  const account = await a.createAccount(undefined, 'Acme');
  t.regex(account.accountNumber, /^\d{4}-\d{4}-\d{4}$/);
  const profile = await a.createUserProfile(account.id, 'ada', 'ada@example.com');
  const { key, secret } = await a.createApiKey(profile.id, 'ci');
  t.true(secret.startsWith(key.keyPrefix));
  t.deepEqual(await a.principalOf(secret), { apiKeyId: key.id, userProfileId: profile.id, accountId: account.id });

  const revoked = await a.revokeApiKey(key.id, {});
  t.true(revoked.changed);
  t.truthy(revoked.row.revokedAt);
  t.is(await a.principalOf(secret), undefined, 'refused at once, though the principal was cached');
  t.false((await a.revokeApiKey(key.id, {})).changed, 'a second revoke changes nothing');
});

test('AdminUseCases: a stale expected revision is ABORTED and writes nothing', async (t) => {
  const { admin: a } = admin();
  const account = await a.createAccount('1234-5678-9012', 'Acme');
  const err = await t.throwsAsync(a.updateAccount(account.id, { displayName: 'New' }, { expectedRevision: 2 }));
  t.is(code(err), 'ABORTED REVISION_MISMATCH');
  t.is((await a.getAccount({ id: account.id })).displayName, 'Acme');
  const u = await a.updateAccount(account.id, { displayName: 'New' }, { expectedRevision: 1 });
  t.true(u.changed);
  t.is(u.row.revision, 2);
  t.false((await a.updateAccount(account.id, { displayName: 'New' }, {})).changed, 'the same value: nothing written');
  t.is(code(await t.throwsAsync(a.deleteAccount(account.id, { expectedRevision: 1 }))), 'ABORTED REVISION_MISMATCH');
});

test('AdminUseCases: constraint violations become business errors', async (t) => {
  const { admin: a } = admin();
  const account = await a.createAccount('1111-2222-3333', 'Acme');
  t.is(code(await t.throwsAsync(a.createAccount('1111-2222-3333', 'Again'))), 'ALREADY_EXISTS ACCOUNT_ALREADY_EXISTS');
  await a.createOwned('plugins', account.id, 'weather', '');
  t.is(code(await t.throwsAsync(a.createOwned('plugins', account.id, 'weather', ''))), 'ALREADY_EXISTS PLUGIN_ALREADY_EXISTS');
  const other = await a.createOwned('plugins', account.id, 'news', '');
  t.is(code(await t.throwsAsync(a.updateOwned('plugins', other.id, { name: 'weather' }, {}))), 'ALREADY_EXISTS PLUGIN_ALREADY_EXISTS');
  const missing = await t.throwsAsync(a.createUserProfile('00000000-0000-4000-8000-000000000000', 'ada', ''));
  t.is(code(missing), 'INVALID_ARGUMENT');
  t.deepEqual(missing instanceof AppError ? missing.violations.map((v) => v.field) : [], ['account_id']);
});

test('AdminUseCases: a request id replays the first result, with no secret for a key', async (t) => {
  const { admin: a, store } = admin();
  const account = await a.createAccount(undefined, 'Acme');
  const profile = await a.createUserProfile(account.id, 'ada', '');
  const rid = '6f1c2a9e-0b7d-4a51-9c3e-2d8f4b6a1e07';
  const first = await a.createApiKey(profile.id, 'ci', rid);
  const again = await a.createApiKey(profile.id, 'ci', rid);
  t.is(again.key.id, first.key.id);
  t.true(again.key.createdAt instanceof Date, 'dates revived by the schema');
  t.is(again.secret, '');
  t.is(store.tables.rows.api_keys.size, 1);
});

test('AdminUseCases: deleting an account takes its keys with it', async (t) => {
  const { admin: a } = admin();
  const account = await a.createAccount(undefined, 'Acme');
  const profile = await a.createUserProfile(account.id, 'ada', '');
  const { secret } = await a.createApiKey(profile.id, '');
  t.truthy(await a.principalOf(secret));
  await a.deleteAccount(account.id, {});
  t.is(await a.principalOf(secret), undefined);
  t.is(code(await t.throwsAsync(a.getUserProfile(profile.id))), 'NOT_FOUND USER_PROFILE_NOT_FOUND');
});
