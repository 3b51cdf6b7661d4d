import { z } from 'zod';
import { afterCommit } from '../after-commit.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { alreadyExists, type AppError, invalidArgument, naming, notFound, revisionMismatch } from '../errors.js';
import type { Principal } from '../principal.js';
import { isConstraintViolation } from '../ports/constraint-violation.js';
import type { Codec, RequestKey, Tx, UnitOfWork } from '../ports/unit-of-work.js';
import { fingerprintOf } from '../fingerprint.js';
import { zodCodec } from '../json-codec.js';
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
import {
  accountRow,
  apiKeyRow,
  ownedNameRow,
  userProfileRow,
  type AccountRow,
  type AdminPatch,
  type AdminStore,
  type AdminTable,
  type ApiKeyCursor,
  type ApiKeyRow,
  type CascadedPrompt,
  type OwnedNameRow,
  type OwnedTable,
  type RowOf,
  type UserProfileRow,
} from './store.js';
import type { PrincipalCache } from './cache.js';
import type { AdminEvent } from './events.js';
import { hashSecret, newApiKeySecret } from './secrets.js';
import { ACCOUNT_NUMBER, API_KEY_PREFIX_LENGTH, LLM_CLIENT_NAME, newAccountNumber, PLUGIN_NAME, USERNAME } from './rules.js';

// The admin aggregate: service (these use cases), store.ts, events.ts, cache.ts (principals). It has no
// watch.ts: nothing streams admin changes; other replicas learn of revocations through events.ts.

/** Request ids of AdminService are scoped to its one caller, the admin token (see the proto). */
const ADMIN_SCOPE = 'admin';
const method = (rpc: string) => `parley.admin.v1.AdminService/${rpc}`;

export interface AdminUseCasesDeps {
  store: AdminStore;
  /** Runs each write in one transaction, at most once per request id. */
  unitOfWork: UnitOfWork;
  /** API key → principal, with the revocations other processes announce. */
  principals: PrincipalCache;
  /**
   * Called after a delete committed that cascaded to prompts: the prompt caches and watchers must learn
   * of it (the composition root evicts the PromptHelper cache and announces each deletion).
   */
  onPromptsDeleted?: (prompts: CascadedPrompt[]) => Promise<void>;
  /** Where a contained failure after a commit is reported; nothing by default. */
  telemetry?: Telemetry;
}

/** The fields an Update may change, by resource; the handlers check masks against these. */
export type AccountPatch = Pick<AdminPatch, 'displayName'>;
export type UserProfilePatch = Pick<AdminPatch, 'username' | 'email'>;
export type ApiKeyPatch = Pick<AdminPatch, 'description'>;
export type OwnedPatch = Pick<AdminPatch, 'name' | 'description'>;

/** What every Update and Delete takes besides the resource. */
export interface Conditions {
  expectedRevision?: number | undefined;
  requestId?: string | undefined;
}

export interface Updated<R> {
  row: R;
  changed: boolean;
}

const ROW_SCHEMA: { [T in AdminTable]: z.ZodType<RowOf<T>> } = {
  accounts: accountRow,
  user_profiles: userProfileRow,
  api_keys: apiKeyRow,
  llm_clients: ownedNameRow,
  plugins: ownedNameRow,
};
const rowCodec = <T extends AdminTable>(table: T): Codec<RowOf<T>> => zodCodec(ROW_SCHEMA[table]);
const updatedOf = <R>(row: z.ZodType<R>): z.ZodType<Updated<R>> => z.object({ row, changed: z.boolean() });
const updatedCodec = <T extends AdminTable>(table: T): Codec<Updated<RowOf<T>>> => zodCodec(updatedOf(ROW_SCHEMA[table]));
/** A created key's secret is never stored: a replay returns the key with an empty secret. */
const createdKeyCodec: Codec<{ key: ApiKeyRow; secret: string }> = {
  encode: (v) => v.key,
  decode: (json) => ({ key: apiKeyRow.parse(json), secret: '' }),
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

/** The RPC names of LLM clients and plugins (`Create<Name>`…), which key their request ids. */
const OWNED_RPC: Record<OwnedTable, string> = { llm_clients: 'LlmClient', plugins: 'Plugin' };

/** Tenancy use cases: accounts, user profiles, API keys, LLM clients and plugins. */
export class AdminUseCases {
  private readonly store: AdminStore;
  private readonly unitOfWork: UnitOfWork;
  private readonly principals: PrincipalCache;
  private readonly onPromptsDeleted: AdminUseCasesDeps['onPromptsDeleted'];
  private readonly telemetry: Telemetry;

  constructor(deps: AdminUseCasesDeps) {
    ({ store: this.store, unitOfWork: this.unitOfWork, principals: this.principals, onPromptsDeleted: this.onPromptsDeleted } = deps);
    this.telemetry = deps.telemetry ?? noTelemetry;
  }

  /** Subscribes to revocations made by other processes; call once before serving. */
  start(): Promise<void> {
    return this.principals.start();
  }

  stop(): Promise<void> {
    return this.principals.stop();
  }

  // --- Accounts --------------------------------------------------------------------------------------

  async createAccount(accountNumber: string | undefined, displayName: string, requestId?: string): Promise<AccountRow> {
    const key = this.key('CreateAccount', requestId, { accountNumber, displayName });
    // A generated number can collide with an existing one; retry a few times rather than fail the caller.
    for (let attempt = 0; ; attempt++) {
      try {
        const work = (tx: Tx) => this.store.insertAccount(accountNumber ?? newAccountNumber(), displayName, tx);
        return (await this.unitOfWork.run(key, rowCodec('accounts'), work, (v) => v.id)).value;
      } catch (err) {
        if (!isConstraintViolation(err, 'unique')) throw err;
        if (accountNumber || attempt >= 5) throw alreadyExists`account ${accountNumber ?? ''}`;
      }
    }
  }

  async getAccount(by: { id?: string | undefined; accountNumber?: string | undefined }): Promise<AccountRow> {
    const row = by.id ? await this.store.accountById(by.id) : await this.store.accountByNumber(by.accountNumber ?? '');
    if (!row) throw notFound`account ${by.id ?? by.accountNumber}`;
    return row;
  }

  async listAccounts(page: PageRequest): Promise<Page<AccountRow>> {
    const after = decodePageToken(page.pageToken, 'accounts', {}, isAccountCursor);
    return pageOf(page, (limit) => this.store.listAccounts(after?.number, limit), (last) => encodePageToken('accounts', {}, { number: last.accountNumber }));
  }

  updateAccount(id: string, patch: AccountPatch, c: Conditions): Promise<Updated<AccountRow>> {
    return this.update('UpdateAccount', 'accounts', id, patch, c);
  }

  deleteAccount(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteAccount', 'accounts', id, c);
  }

  // --- User profiles ---------------------------------------------------------------------------------

  async createUserProfile(accountId: string, username: string, email: string, requestId?: string): Promise<UserProfileRow> {
    const key = this.key('CreateUserProfile', requestId, { accountId, username, email });
    return this.underAccount(accountId, key, rowCodec('user_profiles'), (tx) => this.store.insertUserProfile(accountId, username, email, tx), () =>
      alreadyExists`user profile ${username} in account ${accountId}`,
    );
  }

  async getUserProfile(id: string): Promise<UserProfileRow> {
    const row = await this.store.userProfileById(id);
    if (!row) throw NOT_FOUND.user_profiles(id);
    return row;
  }

  async listUserProfiles(accountId: string, page: PageRequest): Promise<Page<UserProfileRow>> {
    const after = decodePageToken(page.pageToken, 'user_profiles', { accountId }, isUsernameCursor);
    await this.requireAccount(accountId);
    return pageOf(
      page,
      (limit) => this.store.listUserProfiles(accountId, after?.username, limit),
      (last) => encodePageToken('user_profiles', { accountId }, { username: last.username }),
    );
  }

  updateUserProfile(id: string, patch: UserProfilePatch, c: Conditions): Promise<Updated<UserProfileRow>> {
    return this.update('UpdateUserProfile', 'user_profiles', id, patch, c, () => alreadyExists`user profile ${patch.username} in its account`);
  }

  deleteUserProfile(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteUserProfile', 'user_profiles', id, c);
  }

  // --- API keys --------------------------------------------------------------------------------------

  /** A new key and its secret; a replay of the request id returns the key with an empty secret. */
  async createApiKey(userProfileId: string, description: string, requestId?: string): Promise<{ key: ApiKeyRow; secret: string }> {
    const gone = () => missingParent('user_profile_id', 'user profile', userProfileId);
    const work = async (tx: Tx) => {
      const profile = await this.store.userProfileById(userProfileId, tx);
      if (!profile) throw gone();
      const secret = newApiKeySecret();
      const keyPrefix = secret.slice(0, API_KEY_PREFIX_LENGTH);
      const key = await this.store.insertApiKey({ userProfileId, accountId: profile.accountId, secretHash: hashSecret(secret), keyPrefix, description }, tx);
      return { key, secret };
    };
    try {
      return (await this.unitOfWork.run(this.key('CreateApiKey', requestId, { userProfileId, description }), createdKeyCodec, work, (v) => v.key.id)).value;
    } catch (err) {
      // The profile was deleted between our read and the insert.
      if (isConstraintViolation(err, 'missing_parent')) throw gone();
      throw err;
    }
  }

  async getApiKey(id: string): Promise<ApiKeyRow> {
    const row = await this.store.apiKeyById(id);
    if (!row) throw NOT_FOUND.api_keys(id);
    return row;
  }

  async listApiKeys(filter: { accountId?: string | undefined; userProfileId?: string | undefined }, page: PageRequest): Promise<Page<ApiKeyRow>> {
    const filters = { accountId: filter.accountId ?? '', userProfileId: filter.userProfileId ?? '' };
    const after = decodePageToken(page.pageToken, 'api_keys', filters, isApiKeyCursor);
    const listed = await pageOf(page, (limit) => this.store.listApiKeys(filter, after, limit), (last) => encodePageToken('api_keys', filters, last.cursor));
    return { items: listed.items.map((i) => i.row), nextPageToken: listed.nextPageToken };
  }

  updateApiKey(id: string, patch: ApiKeyPatch, c: Conditions): Promise<Updated<ApiKeyRow>> {
    return this.update('UpdateApiKey', 'api_keys', id, patch, c);
  }

  /** Revokes once; revoking a revoked key changes nothing (changed: false, the first revoke time stays). */
  async revokeApiKey(id: string, c: Conditions): Promise<Updated<ApiKeyRow>> {
    let hash: string | undefined;
    const key = this.key('RevokeApiKey', c.requestId, { id, expectedRevision: c.expectedRevision });
    const { value, replayed } = await this.unitOfWork.run(key, updatedCodec('api_keys'), async (tx) => {
      const current = await this.locked('api_keys', id, c, tx);
      if (current.revokedAt) return { row: current, changed: false };
      hash = await this.store.secretHashOf(id, tx);
      return { row: (await this.store.revokeApiKey(id, tx)) ?? current, changed: true };
    }, () => id);
    if (!replayed && hash) await this.principals.forget([{ type: 'api_key_revoked', v: 1, secretHash: hash }]);
    return value;
  }

  deleteApiKey(id: string, c: Conditions): Promise<void> {
    return this.delete('DeleteApiKey', 'api_keys', id, c);
  }

  /** The principal of a bearer secret, or undefined for an unknown, revoked or deleted key (cached: cache.ts). */
  principalOf(secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret);
    return this.principals.get(hash, async () => {
      const key = await this.store.apiKeyByHash(hash);
      return key && !key.revokedAt ? { apiKeyId: key.id, userProfileId: key.userProfileId, accountId: key.accountId } : undefined;
    });
  }

  // --- LLM clients and plugins (one shape: a name an account owns) --------------------------------------

  createOwned(table: OwnedTable, accountId: string, name: string, description: string, requestId?: string): Promise<OwnedNameRow> {
    const key = this.key(`Create${OWNED_RPC[table]}`, requestId, { accountId, name, description });
    return this.underAccount(accountId, key, rowCodec(table), (tx) => this.store.insertOwned(table, accountId, name, description, tx), () =>
      ownedExists(table, name, accountId),
    );
  }

  async getOwned(table: OwnedTable, id: string): Promise<OwnedNameRow> {
    const row = await this.store.ownedById(table, id);
    if (!row) throw NOT_FOUND[table](id);
    return row;
  }

  async listOwned(table: OwnedTable, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
    await this.requireAccount(accountId);
    return listOwnedOf(this.store, table, accountId, page);
  }

  updateOwned(table: OwnedTable, id: string, patch: OwnedPatch, c: Conditions): Promise<Updated<OwnedNameRow>> {
    return this.update(`Update${OWNED_RPC[table]}`, table, id, patch, c, () => ownedExists(table, patch.name, 'its account'));
  }

  deleteOwned(table: OwnedTable, id: string, c: Conditions): Promise<void> {
    return this.delete(`Delete${OWNED_RPC[table]}`, table, id, c);
  }

  // --- Shared ----------------------------------------------------------------------------------------

  /** A create under an account: the account must exist; a taken name is `exists()`. */
  private async underAccount<R>(accountId: string, key: RequestKey, codec: Codec<R & { id: string }>, insert: (tx: Tx) => Promise<R & { id: string }>, exists: () => AppError): Promise<R> {
    try {
      const work = async (tx: Tx) => {
        await this.requireAccount(accountId, tx);
        return insert(tx);
      };
      return (await this.unitOfWork.run(key, codec, work, (v) => v.id)).value;
    } catch (err) {
      if (isConstraintViolation(err, 'unique')) throw exists();
      if (isConstraintViolation(err, 'missing_parent')) throw missingParent('account_id', 'account', accountId);
      throw err;
    }
  }

  /** The row, locked for the write, at the expected revision. */
  private async locked<T extends AdminTable>(table: T, id: string, c: Conditions, tx: Tx): Promise<RowOf<T>> {
    const current = await this.store.lockById(table, id, tx);
    if (!current) throw NOT_FOUND[table](id);
    if (c.expectedRevision !== undefined && c.expectedRevision !== current.revision) throw revisionMismatch(current.revision);
    return current;
  }

  /**
   * The one update flow: lock the row, check the expected revision, write only the fields that differ
   * (none: nothing is written, `changed: false`), bump the revision with them. A taken name is `exists()`.
   */
  private async update<T extends AdminTable>(rpc: string, table: T, id: string, patch: AdminPatch, c: Conditions, exists?: () => AppError): Promise<Updated<RowOf<T>>> {
    const key = this.key(rpc, c.requestId, { request: { id, patch }, expectedRevision: c.expectedRevision });
    try {
      const { value } = await this.unitOfWork.run(key, updatedCodec(table), async (tx) => {
        const current = await this.locked(table, id, c, tx);
        const changes = changedFields(current, patch);
        if (!changes) return { row: current, changed: false };
        return { row: await this.store.updateById(table, id, changes, tx), changed: true };
      }, () => id);
      return value;
    } catch (err) {
      if (exists && isConstraintViolation(err, 'unique')) throw exists();
      throw err;
    }
  }

  /** The one delete flow: lock, check the revision, delete (cascading), then empty the caches. */
  private async delete(rpc: string, table: AdminTable, id: string, c: Conditions): Promise<void> {
    let gone: { secretHashes: string[]; prompts: CascadedPrompt[] } | undefined;
    const { replayed } = await this.unitOfWork.run(this.key(rpc, c.requestId, { id, expectedRevision: c.expectedRevision }), voidCodec, async (tx) => {
      await this.locked(table, id, c, tx);
      gone = await this.store.deleteById(table, id, tx);
    });
    const g = gone;
    if (replayed || !g) return;
    await this.principals.forget(g.secretHashes.map((secretHash): AdminEvent => ({ type: 'api_key_deleted', v: 1, secretHash })));
    const onPromptsDeleted = this.onPromptsDeleted;
    if (g.prompts.length && onPromptsDeleted) await afterCommit(this.telemetry, () => onPromptsDeleted(g.prompts));
  }

  private key(rpc: string, requestId: string | undefined, request: unknown): RequestKey {
    return { scope: ADMIN_SCOPE, method: method(rpc), requestId, fingerprint: requestId ? fingerprintOf(request) : '' };
  }

  private async requireAccount(accountId: string, tx?: Tx): Promise<void> {
    if (!(await this.store.accountById(accountId, tx))) throw missingParent('account_id', 'account', accountId);
  }
}

/** The patch's fields whose value differs from the row's; undefined when none does. */
function changedFields(current: object, patch: AdminPatch): AdminPatch | undefined {
  const stored = new Map<string, unknown>(Object.entries(current));
  const changes = Object.entries(patch).filter(([field, v]) => v !== undefined && stored.get(field) !== v);
  return changes.length ? Object.fromEntries(changes) : undefined;
}

/** A missing parent is a bad argument of the request (the resource asked for is the child). */
function missingParent(field: string, what: string, id: string): AppError {
  return invalidArgument(field, `${what} ${naming`${id}`} does not exist`);
}

function ownedExists(table: OwnedTable, name: string | undefined, account: string): AppError {
  return table === 'plugins' ? alreadyExists`plugin ${name} in account ${account}` : alreadyExists`llm client ${name} in account ${account}`;
}

/** One page: reads one row more than the page size to learn whether another page follows. */
async function pageOf<R>(page: PageRequest, read: (limit: number) => Promise<R[]>, tokenAfter: (last: R) => string): Promise<Page<R>> {
  const size = pageSizeOf(page.pageSize);
  const { page: items, more } = splitPage(await read(size + 1), size);
  const last = items[items.length - 1];
  return { items, nextPageToken: more && last !== undefined ? tokenAfter(last) : '' };
}

const isAccountCursor = cursorOf(z.object({ number: z.string().regex(ACCOUNT_NUMBER) }).strict());
const isUsernameCursor = cursorOf(z.object({ username: z.string().regex(USERNAME) }).strict());
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isApiKeyCursor: (c: unknown) => c is ApiKeyCursor = cursorOf(z.object({ createdAt: z.string().refine(isTimestampText), id: z.string().regex(UUID) }).strict());
const OWNED_CURSOR = {
  llm_clients: cursorOf(z.object({ name: z.string().regex(LLM_CLIENT_NAME) }).strict()),
  plugins: cursorOf(z.object({ name: z.string().regex(PLUGIN_NAME) }).strict()),
};

/** An account's LLM clients or plugins by name, a page at a time. */
function listOwnedOf(store: Pick<AdminStore, 'listOwned'>, table: OwnedTable, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
  const after = decodePageToken(page.pageToken, table, { accountId }, OWNED_CURSOR[table]);
  return pageOf(page, (limit) => store.listOwned(table, accountId, after?.name, limit), (last) => encodePageToken(table, { accountId }, { name: last.name }));
}
