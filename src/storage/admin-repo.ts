import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Db } from './db.js';
import { asDate, asDateOrUndefined } from './rows.js';
import { Idempotency } from './idempotency.js';

export interface AccountRow {
  id: string;
  accountNumber: string;
  displayName: string;
  createdAt: Date;
  updatedAt: Date;
  revision: number;
}

export interface UserProfileRow {
  id: string;
  accountId: string;
  username: string;
  email: string;
  createdAt: Date;
  updatedAt: Date;
  revision: number;
}

export interface ApiKeyRow {
  id: string;
  userProfileId: string;
  accountId: string;
  description: string;
  /** The first characters of the secret ('' for keys issued before prefixes were kept). Never the secret. */
  keyPrefix: string;
  createdAt: Date;
  updatedAt: Date;
  revokedAt: Date | undefined;
  revision: number;
}

/** LLM clients and plugins share a shape: a named thing an account owns. */
export interface OwnedNameRow {
  id: string;
  accountId: string;
  name: string;
  description: string;
  createdAt: Date;
  updatedAt: Date;
  revision: number;
}

/** The admin resources' tables; each has `id`, `revision` and `updated_at`. */
export type AdminTable = 'accounts' | 'user_profiles' | 'api_keys' | 'llm_clients' | 'plugins';
export type OwnedTable = 'llm_clients' | 'plugins';

/** A database handle or an open transaction. */
export type Q = Knex | Knex.Transaction;

const account = (r: any): AccountRow => ({
  id: r.id,
  accountNumber: r.account_number,
  displayName: r.display_name,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
  revision: Number(r.revision),
});
const userProfile = (r: any): UserProfileRow => ({
  id: r.id,
  accountId: r.account_id,
  username: r.username,
  email: r.email,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
  revision: Number(r.revision),
});
const apiKey = (r: any): ApiKeyRow => ({
  id: r.id,
  userProfileId: r.user_profile_id,
  accountId: r.account_id,
  description: r.description,
  keyPrefix: r.key_prefix ?? '',
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
  revokedAt: asDateOrUndefined(r.revoked_at),
  revision: Number(r.revision),
});
const ownedName = (r: any): OwnedNameRow => ({
  id: r.id,
  accountId: r.account_id,
  name: r.name,
  description: r.description,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
  revision: Number(r.revision),
});

/** Row mappers by table. */
export const ROW = { accounts: account, user_profiles: userProfile, api_keys: apiKey, llm_clients: ownedName, plugins: ownedName } as const;
export type RowOf<T extends AdminTable> = ReturnType<(typeof ROW)[T]>;

/** What a delete took with it that caches may still hold: API key hashes and prompts (by session key). */
export interface DeletedDependents {
  secretHashes: string[];
  prompts: Array<{ id: string; sessionKey: string; revision: number }>;
}

/** The column of `api_keys` and `prompts` that points at the deleted resource, by its table. */
const OWNER_COLUMN: Record<AdminTable, { keys?: string; prompts?: string }> = {
  accounts: { keys: 'account_id', prompts: 'account_id' },
  user_profiles: { keys: 'user_profile_id', prompts: 'user_profile_id' },
  api_keys: { keys: 'id' },
  llm_clients: { prompts: 'llm_client_id' },
  plugins: {},
};

/** The keyset cursor of ListApiKeys: created_at as Postgres prints it (microseconds kept), then id. */
export interface ApiKeyCursor {
  createdAt: string;
  id: string;
}

export class AdminRepo {
  constructor(private readonly db: Db) {}

  // --- Generic by table ----------------------------------------------------------------------------

  /** The row, locked for the rest of the transaction when `q` is one (updates and deletes read it so). */
  async lockById<T extends AdminTable>(table: T, id: string, q: Knex.Transaction): Promise<RowOf<T> | undefined> {
    const r = await q(table).where({ id }).forUpdate().first();
    return r && (ROW[table](r) as RowOf<T>);
  }

  /** The row and its raw columns (to compare a patch against), locked for the rest of the transaction. */
  async lockColumnsById<T extends AdminTable>(
    table: T,
    id: string,
    q: Knex.Transaction,
  ): Promise<{ row: RowOf<T>; columns: Record<string, unknown> } | undefined> {
    const r = await q(table).where({ id }).forUpdate().first();
    return r && { row: ROW[table](r) as RowOf<T>, columns: r };
  }

  /** Sets `columns`, bumps the revision and update time; returns the new row. */
  async updateById<T extends AdminTable>(table: T, id: string, columns: Record<string, unknown>, q: Q): Promise<RowOf<T>> {
    const [r] = await q(table)
      .where({ id })
      .update({ ...columns, revision: q.raw('revision + 1'), updated_at: q.fn.now() })
      .returning('*');
    return ROW[table](r) as RowOf<T>;
  }

  /**
   * Deletes the row; the foreign keys cascade to what it owns. Returns what caches may still hold of that
   * (read in the same transaction, before the delete).
   */
  async deleteById(table: AdminTable, id: string, q: Knex.Transaction): Promise<DeletedDependents> {
    const owner = OWNER_COLUMN[table];
    const secretHashes = owner.keys ? ((await q('api_keys').where(owner.keys, id).pluck('secret_hash')) as string[]) : [];
    const prompts = owner.prompts
      ? (await q('prompts').where(owner.prompts, id).select('id', 'session_key', 'revision')).map((p: any) => ({
          id: p.id as string,
          sessionKey: p.session_key as string,
          revision: Number(p.revision),
        }))
      : [];
    await q(table).where({ id }).del();
    // Stored replies about the resource and the prompts that went with it must not be replayable.
    const subjects = [id, ...prompts.map((p) => p.id)];
    for (let i = 0; i < subjects.length; i += 1000) await Idempotency.forgetSubjects(q, subjects.slice(i, i + 1000));
    // An account's callers are gone: so are their request ids (scoped `account:<id>`, see PromptService).
    if (table === 'accounts') await q('request_ids').where({ scope: `account:${id}` }).del();
    return { secretHashes, prompts };
  }

  // --- Accounts --------------------------------------------------------------------------------------

  async insertAccount(accountNumber: string, displayName: string, q: Q = this.db): Promise<AccountRow> {
    const [r] = await q('accounts').insert({ id: randomUUID(), account_number: accountNumber, display_name: displayName }).returning('*');
    return account(r);
  }

  async accountById(id: string, q: Q = this.db): Promise<AccountRow | undefined> {
    const r = await q('accounts').where({ id }).first();
    return r && account(r);
  }

  async accountByNumber(accountNumber: string, q: Q = this.db): Promise<AccountRow | undefined> {
    const r = await q('accounts').where({ account_number: accountNumber }).first();
    return r && account(r);
  }

  /** One page of accounts in account number order (numbers are unique). */
  async listAccounts(afterNumber: string | undefined, limit: number): Promise<AccountRow[]> {
    const q = this.db('accounts');
    if (afterNumber !== undefined) q.where('account_number', '>', afterNumber);
    return (await q.orderBy('account_number', 'asc').limit(limit)).map(account);
  }

  // --- User profiles ---------------------------------------------------------------------------------

  async insertUserProfile(accountId: string, username: string, email: string, q: Q = this.db): Promise<UserProfileRow> {
    const [r] = await q('user_profiles').insert({ id: randomUUID(), account_id: accountId, username, email }).returning('*');
    return userProfile(r);
  }

  async userProfileById(id: string, q: Q = this.db): Promise<UserProfileRow | undefined> {
    const r = await q('user_profiles').where({ id }).first();
    return r && userProfile(r);
  }

  /** One page of an account's user profiles in username order (unique per account). */
  async listUserProfiles(accountId: string, afterUsername: string | undefined, limit: number): Promise<UserProfileRow[]> {
    const q = this.db('user_profiles').where({ account_id: accountId });
    if (afterUsername !== undefined) q.andWhere('username', '>', afterUsername);
    return (await q.orderBy('username', 'asc').limit(limit)).map(userProfile);
  }

  // --- API keys --------------------------------------------------------------------------------------

  async insertApiKey(
    k: { userProfileId: string; accountId: string; secretHash: string; keyPrefix: string; description: string },
    q: Q = this.db,
  ): Promise<ApiKeyRow> {
    const [r] = await q('api_keys')
      .insert({
        id: randomUUID(),
        user_profile_id: k.userProfileId,
        account_id: k.accountId,
        secret_hash: k.secretHash,
        key_prefix: k.keyPrefix,
        description: k.description,
      })
      .returning('*');
    return apiKey(r);
  }

  async apiKeyById(id: string, q: Q = this.db): Promise<ApiKeyRow | undefined> {
    const r = await q('api_keys').where({ id }).first();
    return r && apiKey(r);
  }

  async apiKeyByHash(secretHash: string): Promise<ApiKeyRow | undefined> {
    const r = await this.db('api_keys').where({ secret_hash: secretHash }).first();
    return r && apiKey(r);
  }

  /** The secret hash of a key (to evict caches), read in `q`. */
  async secretHashOf(id: string, q: Q): Promise<string | undefined> {
    const r = await q('api_keys').where({ id }).first('secret_hash');
    return r?.secret_hash;
  }

  /** Revokes a valid key (revision + 1); undefined when it was revoked already (nothing written). */
  async revokeApiKey(id: string, q: Q): Promise<ApiKeyRow | undefined> {
    const [r] = await q('api_keys')
      .where({ id })
      .whereNull('revoked_at')
      .update({ revoked_at: q.fn.now(), updated_at: q.fn.now(), revision: q.raw('revision + 1') })
      .returning('*');
    return r && apiKey(r);
  }

  /** One page of API keys, oldest first, optionally of one account and/or one user profile. */
  async listApiKeys(
    filter: { accountId?: string | undefined; userProfileId?: string | undefined },
    after: ApiKeyCursor | undefined,
    limit: number,
  ): Promise<Array<{ row: ApiKeyRow; cursor: ApiKeyCursor }>> {
    const q = this.db('api_keys').select('*', this.db.raw('created_at::text as created_cursor'));
    if (filter.accountId) q.where('account_id', filter.accountId);
    if (filter.userProfileId) q.where('user_profile_id', filter.userProfileId);
    if (after) q.whereRaw('(created_at, id) > (?::timestamptz, ?::uuid)', [after.createdAt, after.id]);
    const rows = await q.orderBy([{ column: 'created_at', order: 'asc' }, { column: 'id', order: 'asc' }]).limit(limit);
    return rows.map((r: any) => ({ row: apiKey(r), cursor: { createdAt: String(r.created_cursor), id: r.id } }));
  }

  // --- LLM clients and plugins -----------------------------------------------------------------------

  async insertOwned(table: OwnedTable, accountId: string, name: string, description: string, q: Q = this.db): Promise<OwnedNameRow> {
    const [r] = await q(table).insert({ id: randomUUID(), account_id: accountId, name, description }).returning('*');
    return ownedName(r);
  }

  async ownedById(table: OwnedTable, id: string, q: Q = this.db): Promise<OwnedNameRow | undefined> {
    const r = await q(table).where({ id }).first();
    return r && ownedName(r);
  }

  async ownedByName(table: OwnedTable, accountId: string, name: string, q: Q = this.db): Promise<OwnedNameRow | undefined> {
    const r = await q(table).where({ account_id: accountId, name }).first();
    return r && ownedName(r);
  }

  /** One page of an account's LLM clients or plugins in name order (names are unique per account). */
  async listOwned(table: OwnedTable, accountId: string, afterName: string | undefined, limit: number): Promise<OwnedNameRow[]> {
    const q = this.db(table).where({ account_id: accountId });
    if (afterName !== undefined) q.andWhere('name', '>', afterName);
    const rows = await q.orderBy('name', 'asc').limit(limit);
    return rows.map(ownedName);
  }
}
