import type { Knex } from 'knex';
import { alreadyExists, AppError, invalidArgument, naming, notFound, revisionMismatch } from '../errors.js';
import { hashSecret, newApiKeySecret, type Principal } from '../principal.js';
import { isForeignKeyViolation, isUniqueViolation } from '../storage/db.js';
import type {
  AccountRow,
  AdminRepo,
  AdminTable,
  ApiKeyCursor,
  ApiKeyRow,
  DeletedDependents,
  OwnedNameRow,
  OwnedTable,
  RowOf,
  UserProfileRow,
} from '../storage/admin-repo.js';
import { CACHE_MISS, type KvStore } from '../ports/kv.js';
import { type Bus } from '../ports/bus.js';
import { afterCommit } from '../after-commit.js';
import { invalidateOnBus, LocalCache } from '../local-cache.js';
import { fingerprintOf } from '../fingerprint.js';
import { jsonCodec } from '../json-codec.js';
import { type Codec, type RequestKey } from '../ports/unit-of-work.js';
import { type Idempotency } from '../storage/idempotency.js';
import { z } from 'zod';
import { ACCOUNT_NUMBER, API_KEY_PREFIX_LENGTH, LLM_CLIENT_NAME, newAccountNumber, PLUGIN_NAME, USERNAME } from './rules.js';
import {
  cursorOf,
  decodePageToken,
  encodePageToken,
  isTimestampText,
  pageSizeOf,
  splitPage,
  type Page,
  type PageRequest,
} from '../paging.js';

const principalKey = (secretHash: string) => `apikey:${secretHash}`;
/**
 * How long a principal read from Postgres may be served from Redis. Short, because it bounds how long a
 * revoked key can keep working when a revocation's fence is lost (see REVOCATION_BOUND_MS); one Postgres
 * read per key per 10 s across all replicas is cheap.
 */
export const PRINCIPAL_TTL_MS = 10_000;
/** Every process drops a revoked key's principal from its local cache on a message here (the secret's hash). */
export const API_KEY_REVOKED_CHANNEL = 'apikey:revoked';
/**
 * The in-process principal cache (first level; Redis is the second). Safe because a key's principal never
 * changes, only its revocation or deletion: the process doing it drops the entry at once, the others on the
 * API_KEY_REVOKED_CHANNEL message (bus latency), and should that message be lost (the bus is at-most-once),
 * LOCAL_PRINCIPAL_TTL_MS bounds how long another replica may still accept the key.
 */
export const LOCAL_PRINCIPAL_TTL_MS = 5_000;
/**
 * The longest a revoked or deleted key keeps working on any replica, whatever Redis and the bus do: a
 * principal is validated against Postgres at most PRINCIPAL_TTL_MS before it enters a process, which keeps
 * it at most LOCAL_PRINCIPAL_TTL_MS more. With Redis and the bus healthy it is the bus latency (the fence
 * voids the Redis copy, the message the local ones). On the server that revoked or deleted it: none.
 */
export const REVOCATION_BOUND_MS = PRINCIPAL_TTL_MS + LOCAL_PRINCIPAL_TTL_MS;
const LOCAL_PRINCIPAL_MAX = 10_000;

/** Request ids of AdminService are scoped to its one caller, the admin token (see the proto). */
const ADMIN_SCOPE = 'admin';
const method = (rpc: string) => `parley.admin.v1.AdminService/${rpc}`;

/** A prompt that went with a deleted user profile, LLM client or account. */
export interface CascadedPrompt {
  id: string;
  sessionKey: string;
  revision: number;
}

export interface AdminServiceOptions {
  localTtlMs?: number;
  localMaxEntries?: number;
  now?: () => number;
  /**
   * Called after a delete committed that cascaded to prompts: the prompt caches and watchers must learn
   * of it (app.ts evicts the PromptHelper cache and announces each deletion).
   */
  onPromptsDeleted?: (prompts: CascadedPrompt[]) => Promise<void>;
}

/** The fields an Update may change, by resource; the handlers check masks against these. */
export interface AccountPatch {
  displayName?: string;
}
export interface UserProfilePatch {
  username?: string;
  email?: string;
}
export interface ApiKeyPatch {
  description?: string;
}
export interface OwnedPatch {
  name?: string;
  description?: string;
}

/** What every Update and Delete takes besides the resource. */
export interface Conditions {
  expectedRevision?: number | undefined;
  requestId?: string | undefined;
}

export interface Updated<R> {
  row: R;
  changed: boolean;
}

const rowDates = ['createdAt', 'updatedAt'];
const accountCodec = jsonCodec<AccountRow>(rowDates);
const profileCodec = jsonCodec<UserProfileRow>(rowDates);
const ownedCodec = jsonCodec<OwnedNameRow>(rowDates);
const keyCodec = jsonCodec<ApiKeyRow>([...rowDates, 'revokedAt']);
const updatedCodec = <R>(row: Codec<R>): Codec<Updated<R>> => ({
  encode: (v) => ({ row: row.encode(v.row), changed: v.changed }),
  decode: (json) => {
    const o = json as { row: unknown; changed: boolean };
    return { row: row.decode(o.row), changed: o.changed };
  },
});
/** A created key's secret is never stored: a replay returns the key with an empty secret. */
const createdKeyCodec: Codec<{ key: ApiKeyRow; secret: string }> = {
  encode: (v) => keyCodec.encode(v.key),
  decode: (json) => ({ key: keyCodec.decode(json), secret: '' }),
};
const voidCodec: Codec<void> = { encode: () => null, decode: () => undefined };

/** The not-found error of each table: the literal names the resource type (→ reason `<TYPE>_NOT_FOUND`). */
const NOT_FOUND: Record<AdminTable, (id: string) => AppError> = {
  accounts: (id) => notFound`account ${id}`,
  user_profiles: (id) => notFound`user profile ${id}`,
  api_keys: (id) => notFound`api key ${id}`,
  llm_clients: (id) => notFound`llm client ${id}`,
  plugins: (id) => notFound`plugin ${id}`,
};

/** Tenancy use cases: accounts, user profiles, API keys, LLM clients and plugins. */
export class AdminService {
  private readonly principals: LocalCache<Principal>;
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    private readonly repo: AdminRepo,
    private readonly kv: KvStore,
    private readonly bus: Bus | undefined,
    private readonly idempotency: Idempotency,
    private readonly opts: AdminServiceOptions = {},
  ) {
    this.principals = new LocalCache({
      ttlMs: opts.localTtlMs ?? LOCAL_PRINCIPAL_TTL_MS,
      maxEntries: opts.localMaxEntries ?? LOCAL_PRINCIPAL_MAX,
      now: opts.now,
    });
  }

  /** Subscribes to revocations made by other processes; call once before serving. */
  async start(): Promise<void> {
    if (this.bus && !this.unsubscribe) this.unsubscribe = await invalidateOnBus(this.bus, API_KEY_REVOKED_CHANNEL, this.principals);
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  // --- Accounts --------------------------------------------------------------------------------------

  async createAccount(accountNumber: string | undefined, displayName: string, requestId?: string): Promise<AccountRow> {
    const key = this.key('CreateAccount', requestId, { accountNumber, displayName });
    // A generated number can collide with an existing one; retry a few times rather than fail the caller.
    for (let attempt = 0; ; attempt++) {
      try {
        const { value } = await this.idempotency.runKnex(
          key,
          accountCodec,
          (trx) => this.repo.insertAccount(accountNumber ?? newAccountNumber(), displayName, trx),
          (v) => v.id,
        );
        return value;
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        if (accountNumber || attempt >= 5) throw alreadyExists`account ${accountNumber ?? ''}`;
      }
    }
  }

  async getAccount(by: { id?: string | undefined; accountNumber?: string | undefined }): Promise<AccountRow> {
    const row = by.id ? await this.repo.accountById(by.id) : await this.repo.accountByNumber(by.accountNumber ?? '');
    if (!row) throw notFound`account ${by.id ?? by.accountNumber}`;
    return row;
  }

  async listAccounts(page: PageRequest): Promise<Page<AccountRow>> {
    const size = pageSizeOf(page.pageSize);
    const after = decodePageToken(page.pageToken, 'accounts', {}, isAccountCursor);
    const { page: items, more } = splitPage(await this.repo.listAccounts(after?.number, size + 1), size);
    const last = items[items.length - 1];
    return { items, nextPageToken: more && last ? encodePageToken('accounts', {}, { number: last.accountNumber }) : '' };
  }

  updateAccount(id: string, patch: AccountPatch, c: Conditions): Promise<Updated<AccountRow>> {
    return this.update('UpdateAccount', 'accounts', id, { display_name: patch.displayName }, c, accountCodec, { id, patch });
  }

  deleteAccount(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteAccount', 'accounts', id, c);
  }

  // --- User profiles ---------------------------------------------------------------------------------

  async createUserProfile(accountId: string, username: string, email: string, requestId?: string): Promise<UserProfileRow> {
    const key = this.key('CreateUserProfile', requestId, { accountId, username, email });
    try {
      const { value } = await this.idempotency.runKnex(key, profileCodec, async (trx) => {
        await this.requireAccount(accountId, trx);
        return this.repo.insertUserProfile(accountId, username, email, trx);
      }, (v) => v.id);
      return value;
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists`user profile ${username} in account ${accountId}`;
      if (isForeignKeyViolation(err)) throw missingParent('account_id', 'account', accountId);
      throw err;
    }
  }

  async getUserProfile(id: string): Promise<UserProfileRow> {
    const row = await this.repo.userProfileById(id);
    if (!row) throw NOT_FOUND.user_profiles(id);
    return row;
  }

  async listUserProfiles(accountId: string, page: PageRequest): Promise<Page<UserProfileRow>> {
    const size = pageSizeOf(page.pageSize);
    const after = decodePageToken(page.pageToken, 'user_profiles', { accountId }, isUsernameCursor);
    await this.requireAccount(accountId);
    const { page: items, more } = splitPage(await this.repo.listUserProfiles(accountId, after?.username, size + 1), size);
    const last = items[items.length - 1];
    return { items, nextPageToken: more && last ? encodePageToken('user_profiles', { accountId }, { username: last.username }) : '' };
  }

  async updateUserProfile(id: string, patch: UserProfilePatch, c: Conditions): Promise<Updated<UserProfileRow>> {
    try {
      return await this.update('UpdateUserProfile', 'user_profiles', id, { username: patch.username, email: patch.email }, c, profileCodec, { id, patch });
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists`user profile ${patch.username} in its account`;
      throw err;
    }
  }

  deleteUserProfile(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteUserProfile', 'user_profiles', id, c);
  }

  // --- API keys --------------------------------------------------------------------------------------

  /** A new key and its secret; a replay of the request id returns the key with an empty secret. */
  async createApiKey(userProfileId: string, description: string, requestId?: string): Promise<{ key: ApiKeyRow; secret: string }> {
    try {
      return await this.createApiKeyIn(userProfileId, description, requestId);
    } catch (err) {
      // The profile was deleted between our read and the insert.
      if (isForeignKeyViolation(err)) throw missingParent('user_profile_id', 'user profile', userProfileId);
      throw err;
    }
  }

  private async createApiKeyIn(userProfileId: string, description: string, requestId?: string): Promise<{ key: ApiKeyRow; secret: string }> {
    const { value } = await this.idempotency.runKnex(this.key('CreateApiKey', requestId, { userProfileId, description }), createdKeyCodec, async (trx) => {
      const profile = await this.repo.userProfileById(userProfileId, trx);
      if (!profile) throw missingParent('user_profile_id', 'user profile', userProfileId);
      const secret = newApiKeySecret();
      const key = await this.repo.insertApiKey(
        { userProfileId: profile.id, accountId: profile.accountId, secretHash: hashSecret(secret), keyPrefix: secret.slice(0, API_KEY_PREFIX_LENGTH), description },
        trx,
      );
      return { key, secret };
    }, (v) => v.key.id);
    return value;
  }

  async getApiKey(id: string): Promise<ApiKeyRow> {
    const row = await this.repo.apiKeyById(id);
    if (!row) throw NOT_FOUND.api_keys(id);
    return row;
  }

  async listApiKeys(filter: { accountId?: string | undefined; userProfileId?: string | undefined }, page: PageRequest): Promise<Page<ApiKeyRow>> {
    const size = pageSizeOf(page.pageSize);
    const filters = { accountId: filter.accountId ?? '', userProfileId: filter.userProfileId ?? '' };
    const after = decodePageToken(page.pageToken, 'api_keys', filters, isApiKeyCursor);
    const { page: items, more } = splitPage(await this.repo.listApiKeys(filter, after, size + 1), size);
    const last = items[items.length - 1];
    return { items: items.map((i) => i.row), nextPageToken: more && last ? encodePageToken('api_keys', filters, last.cursor) : '' };
  }

  updateApiKey(id: string, patch: ApiKeyPatch, c: Conditions): Promise<Updated<ApiKeyRow>> {
    return this.update('UpdateApiKey', 'api_keys', id, { description: patch.description }, c, keyCodec, { id, patch });
  }

  /** Revokes once; revoking a revoked key changes nothing (changed: false, the first revoke time stays). */
  async revokeApiKey(id: string, c: Conditions): Promise<Updated<ApiKeyRow>> {
    let hash: string | undefined;
    const { value, replayed } = await this.idempotency.runKnex(this.key('RevokeApiKey', c.requestId, { id, expectedRevision: c.expectedRevision }), updatedCodec(keyCodec), async (trx) => {
      const current = await this.repo.lockById('api_keys', id, trx);
      if (!current) throw NOT_FOUND.api_keys(id);
      checkRevision(current.revision, c.expectedRevision);
      if (current.revokedAt) return { row: current, changed: false };
      hash = await this.repo.secretHashOf(id, trx);
      return { row: (await this.repo.revokeApiKey(id, trx)) ?? current, changed: true };
    }, () => id);
    if (!replayed && hash) await this.forgetPrincipals([hash]);
    return value;
  }

  deleteApiKey(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteApiKey', 'api_keys', id, c);
  }

  /**
   * The principal of a bearer secret, or undefined for an unknown, revoked or deleted key. Cached in
   * process (a few seconds), then in Redis (fenced fills, PRINCIPAL_TTL_MS), then Postgres; a revoke or
   * delete evicts both levels (see REVOCATION_BOUND_MS).
   */
  async principalOf(secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret);
    const local = this.principals.get(hash);
    if (local) return local;
    const token = this.principals.token();
    const cached = await this.kv.readCached(principalKey(hash)).catch(() => CACHE_MISS);
    if (cached.value) {
      const principal = JSON.parse(cached.value) as Principal;
      this.principals.set(hash, principal, token);
      return principal;
    }
    const key = await this.repo.apiKeyByHash(hash);
    if (!key || key.revokedAt) return undefined;
    const principal: Principal = { apiKeyId: key.id, userProfileId: key.userProfileId, accountId: key.accountId };
    await this.kv.fill(principalKey(hash), JSON.stringify(principal), cached.token, PRINCIPAL_TTL_MS).catch(() => false);
    this.principals.set(hash, principal, token);
    return principal;
  }

  // --- LLM clients -----------------------------------------------------------------------------------

  createLlmClient(accountId: string, name: string, description: string, requestId?: string): Promise<OwnedNameRow> {
    return this.createOwned('CreateLlmClient', 'llm_clients', accountId, name, description, requestId);
  }

  getLlmClient(id: string): Promise<OwnedNameRow> {
    return this.getOwned('llm_clients', id);
  }

  async listLlmClients(accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
    return this.listOwned('llm_clients', accountId, page);
  }

  updateLlmClient(id: string, patch: OwnedPatch, c: Conditions): Promise<Updated<OwnedNameRow>> {
    return this.updateOwned('UpdateLlmClient', 'llm_clients', id, patch, c);
  }

  deleteLlmClient(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteLlmClient', 'llm_clients', id, c);
  }

  // --- Plugins ---------------------------------------------------------------------------------------

  createPlugin(accountId: string, name: string, description: string, requestId?: string): Promise<OwnedNameRow> {
    return this.createOwned('CreatePlugin', 'plugins', accountId, name, description, requestId);
  }

  getPlugin(id: string): Promise<OwnedNameRow> {
    return this.getOwned('plugins', id);
  }

  async listPlugins(accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
    return this.listOwned('plugins', accountId, page);
  }

  updatePlugin(id: string, patch: OwnedPatch, c: Conditions): Promise<Updated<OwnedNameRow>> {
    return this.updateOwned('UpdatePlugin', 'plugins', id, patch, c);
  }

  deletePlugin(id: string, c: Conditions): Promise<void> {
    return this.delete('DeletePlugin', 'plugins', id, c);
  }

  // --- Shared ----------------------------------------------------------------------------------------

  private async createOwned(rpc: string, table: OwnedTable, accountId: string, name: string, description: string, requestId?: string): Promise<OwnedNameRow> {
    try {
      const { value } = await this.idempotency.runKnex(this.key(rpc, requestId, { accountId, name, description }), ownedCodec, async (trx) => {
        await this.requireAccount(accountId, trx);
        return this.repo.insertOwned(table, accountId, name, description, trx);
      }, (v) => v.id);
      return value;
    } catch (err) {
      if (isUniqueViolation(err)) throw ownedExists(table, name, accountId);
      if (isForeignKeyViolation(err)) throw missingParent('account_id', 'account', accountId);
      throw err;
    }
  }

  private async getOwned(table: OwnedTable, id: string): Promise<OwnedNameRow> {
    const row = await this.repo.ownedById(table, id);
    if (!row) throw NOT_FOUND[table](id);
    return row;
  }

  private async listOwned(table: OwnedTable, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
    await this.requireAccount(accountId);
    return listOwnedOf(this.repo, table, accountId, page);
  }

  private async updateOwned(rpc: string, table: OwnedTable, id: string, patch: OwnedPatch, c: Conditions): Promise<Updated<OwnedNameRow>> {
    try {
      return await this.update(rpc, table, id, { name: patch.name, description: patch.description }, c, ownedCodec, { id, patch });
    } catch (err) {
      if (isUniqueViolation(err)) throw ownedExists(table, patch.name, 'its account');
      throw err;
    }
  }

  /**
   * The one update flow: lock the row, check the expected revision, write only the columns that differ
   * (none: nothing is written, `changed: false`), bump the revision with them.
   */
  private async update<T extends AdminTable>(
    rpc: string,
    table: T,
    id: string,
    columns: Record<string, unknown>,
    c: Conditions,
    codec: Codec<RowOf<T>>,
    request: unknown,
  ): Promise<Updated<RowOf<T>>> {
    const { value } = await this.idempotency.runKnex(this.key(rpc, c.requestId, { request, expectedRevision: c.expectedRevision }), updatedCodec(codec), async (trx) => {
      const locked = await this.repo.lockColumnsById(table, id, trx);
      if (!locked) throw NOT_FOUND[table](id);
      const { row: current, columns: stored } = locked;
      checkRevision(current.revision, c.expectedRevision);
      const changes = Object.fromEntries(Object.entries(columns).filter(([col, v]) => v !== undefined && stored[col] !== v));
      if (Object.keys(changes).length === 0) return { row: current, changed: false };
      return { row: await this.repo.updateById(table, id, changes, trx), changed: true };
    }, () => id);
    return value;
  }

  /** The one delete flow: lock, check the revision, delete (cascading), then empty the caches. */
  private async delete(rpc: string, table: AdminTable, id: string, c: Conditions): Promise<void> {
    let gone: DeletedDependents | undefined;
    const { replayed } = await this.idempotency.runKnex(this.key(rpc, c.requestId, { id, expectedRevision: c.expectedRevision }), voidCodec, async (trx) => {
      const current = await this.repo.lockById(table, id, trx);
      if (!current) throw NOT_FOUND[table](id);
      checkRevision(current.revision, c.expectedRevision);
      gone = await this.repo.deleteById(table, id, trx);
    });
    const g = gone;
    if (replayed || !g) return;
    await this.forgetPrincipals(g.secretHashes);
    if (g.prompts.length) await this.opts.onPromptsDeleted?.(g.prompts).catch(() => {});
  }

  /**
   * After a revoke or delete committed: from the moment this returns this process refuses those keys
   * (local entries dropped before and after the Redis fence, so no fill racing the fence survives), other
   * replicas once the bus message arrives.
   */
  private async forgetPrincipals(hashes: string[]): Promise<void> {
    for (const hash of hashes) {
      this.principals.delete(hash);
      await afterCommit(
        () => this.kv.fence(principalKey(hash)),
        async () => this.principals.delete(hash),
        () => this.bus?.publish(API_KEY_REVOKED_CHANNEL, hash) ?? Promise.resolve(),
      );
    }
  }

  private key(rpc: string, requestId: string | undefined, request: unknown): RequestKey {
    return { scope: ADMIN_SCOPE, method: method(rpc), requestId, fingerprint: requestId ? fingerprintOf(request) : '' };
  }

  private async requireAccount(accountId: string, q?: Knex.Transaction): Promise<void> {
    if (!(await this.repo.accountById(accountId, q))) throw missingParent('account_id', 'account', accountId);
  }
}

/** A missing parent is a bad argument of the request (the resource asked for is the child). */
function missingParent(field: string, what: string, id: string): AppError {
  return invalidArgument(field, `${what} ${naming`${id}`} does not exist`);
}

function checkRevision(current: number, expected: number | undefined): void {
  if (expected !== undefined && expected !== current) throw revisionMismatch(current);
}

function ownedExists(table: OwnedTable, name: string | undefined, account: string): AppError {
  return table === 'plugins' ? alreadyExists`plugin ${name} in account ${account}` : alreadyExists`llm client ${name} in account ${account}`;
}

const isLlmClientCursor = cursorOf(z.object({ name: z.string().regex(LLM_CLIENT_NAME) }).strict());
const isAccountCursor = cursorOf(z.object({ number: z.string().regex(ACCOUNT_NUMBER) }).strict());
const isUsernameCursor = cursorOf(z.object({ username: z.string().regex(USERNAME) }).strict());
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isApiKeyCursor = cursorOf(z.object({ createdAt: z.string().refine(isTimestampText), id: z.string().regex(UUID) }).strict()) as (
  c: unknown,
) => c is ApiKeyCursor;

/** An account's LLM clients or plugins by name, a page at a time. */
async function listOwnedOf(admin: AdminRepo, table: OwnedTable, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
  const size = pageSizeOf(page.pageSize);
  const after = decodePageToken(page.pageToken, table, { accountId }, table === 'plugins' ? isPluginCursor : isLlmClientCursor);
  const rows = await admin.listOwned(table, accountId, after?.name, size + 1);
  const { page: items, more } = splitPage(rows, size);
  const last = items[items.length - 1];
  return { items, nextPageToken: more && last ? encodePageToken(table, { accountId }, { name: last.name }) : '' };
}

const isPluginCursor = cursorOf(z.object({ name: z.string().regex(PLUGIN_NAME) }).strict());

/** An account's plugins by name, a page at a time (PromptService and AdminService both list them). */
export function listPluginsOf(admin: AdminRepo, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
  return listOwnedOf(admin, 'plugins', accountId, page);
}
