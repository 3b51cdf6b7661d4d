import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { isForeignKeyViolation, isUniqueViolation, type Db } from './db.js';
import { asDate, asDateOrUndefined, keysetPage, firstRow } from './rows.js';
import { KnexUnitOfWork } from './unit-of-work.js';
import { knexOf } from './knex-tx.js';
import type { Tx } from '../ports/unit-of-work.js';
import { ConstraintViolation } from '../ports/constraint-violation.js';
import type {
  AccountRow,
  AdminPatch,
  AdminStore,
  AdminTable,
  ApiKeyCursor,
  ApiKeyRow,
  CascadedPrompt,
  DeletedDependents,
  NewApiKey,
  OwnedNameRow,
  OwnedTable,
  RowOf,
  UserProfileRow,
} from '../admin/store.js';


// The columns as the drivers return them (timestamps as Date, or text from some drivers).
interface Stamps {
  id: string;
  created_at: unknown;
  updated_at: unknown;
  revision: number | string;
}
interface AccountRecord extends Stamps {
  account_number: string;
  display_name: string;
}
interface UserProfileRecord extends Stamps {
  account_id: string;
  username: string;
  email: string;
}
interface ApiKeyRecord extends Stamps {
  user_profile_id: string;
  account_id: string;
  description: string;
  key_prefix: string | null;
  revoked_at: unknown;
}
interface OwnedNameRecord extends Stamps {
  account_id: string;
  name: string;
  description: string;
}

const stamps = (r: Stamps) => ({ id: r.id, createdAt: asDate(r.created_at), updatedAt: asDate(r.updated_at), revision: Number(r.revision) });
const account = (r: AccountRecord): AccountRow => ({ ...stamps(r), accountNumber: r.account_number, displayName: r.display_name });
const userProfile = (r: UserProfileRecord): UserProfileRow => ({ ...stamps(r), accountId: r.account_id, username: r.username, email: r.email });
const apiKey = (r: ApiKeyRecord): ApiKeyRow => ({
  ...stamps(r),
  userProfileId: r.user_profile_id,
  accountId: r.account_id,
  description: r.description,
  keyPrefix: r.key_prefix ?? '',
  revokedAt: asDateOrUndefined(r.revoked_at),
});
const ownedName = (r: OwnedNameRecord): OwnedNameRow => ({ ...stamps(r), accountId: r.account_id, name: r.name, description: r.description });

/** Row mappers by table. */
const ROW: { [T in AdminTable]: (r: never) => RowOf<T> } = {
  accounts: account,
  user_profiles: userProfile,
  api_keys: apiKey,
  llm_clients: ownedName,
  plugins: ownedName,
};
const rowOf = <T extends AdminTable>(table: T, r: unknown): RowOf<T> => (ROW[table] as (r: unknown) => RowOf<T>)(r);

/** The column of each patchable field (every table has the subset its resource can change). */
const PATCH_COLUMN: Record<keyof AdminPatch, string> = {
  displayName: 'display_name',
  username: 'username',
  email: 'email',
  description: 'description',
  name: 'name',
};

/** The column of `api_keys` and `prompts` that points at the deleted resource, by its table. */
const OWNER_COLUMN: Record<AdminTable, { keys?: string; prompts?: string }> = {
  accounts: { keys: 'account_id', prompts: 'account_id' },
  user_profiles: { keys: 'user_profile_id', prompts: 'user_profile_id' },
  api_keys: { keys: 'id' },
  llm_clients: { prompts: 'llm_client_id' },
  plugins: {},
};

/** The driver's constraint errors as the domain's ConstraintViolation; anything else unchanged. */
async function translated<T>(write: Promise<T>): Promise<T> {
  try {
    return await write;
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConstraintViolation('unique');
    if (isForeignKeyViolation(err)) throw new ConstraintViolation('missing_parent');
    throw err;
  }
}

/** The admin aggregate's store over Knex (Postgres or PGlite). */
export class KnexAdminStore implements AdminStore {
  constructor(private readonly db: Db) {}

  private q(tx: Tx | undefined): Knex | Knex.Transaction {
    return knexOf(tx, this.db);
  }

  // --- Generic by table ----------------------------------------------------------------------------

  async lockById<T extends AdminTable>(table: T, id: string, tx: Tx): Promise<RowOf<T> | undefined> {
    const r = await knexOf(tx)(table).where({ id }).forUpdate().first();
    return r && rowOf(table, r);
  }

  async updateById<T extends AdminTable>(table: T, id: string, changes: AdminPatch, tx: Tx): Promise<RowOf<T>> {
    const q = knexOf(tx);
    const columns: Record<string, string> = {};
    for (const [field, value] of Object.entries(changes)) if (value !== undefined) columns[PATCH_COLUMN[field as keyof AdminPatch]] = value;
    const [r] = await translated(
      q(table)
        .where({ id })
        .update({ ...columns, revision: q.raw('revision + 1'), updated_at: q.fn.now() })
        .returning('*'),
    );
    return rowOf(table, r);
  }

  async deleteById(table: AdminTable, id: string, tx: Tx): Promise<DeletedDependents> {
    const q = knexOf(tx);
    const owner = OWNER_COLUMN[table];
    const secretHashes: string[] = owner.keys ? await q('api_keys').where(owner.keys, id).pluck('secret_hash') : [];
    const prompts: CascadedPrompt[] = owner.prompts
      ? (await q('prompts').where(owner.prompts, id).select('id', 'session_key', 'revision')).map((p: { id: string; session_key: string; revision: number | string }) => ({
          id: p.id,
          sessionKey: p.session_key,
          revision: Number(p.revision),
        }))
      : [];
    await q(table).where({ id }).del();
    // Stored replies about the resource and the prompts that went with it must not be replayable.
    const subjects = [id, ...prompts.map((p) => p.id)];
    for (let i = 0; i < subjects.length; i += 1000) await KnexUnitOfWork.forgetSubjects(q, subjects.slice(i, i + 1000));
    // An account's callers are gone: so are their request ids (scoped `account:<id>`, see PromptService).
    if (table === 'accounts') await q('request_ids').where({ scope: `account:${id}` }).del();
    return { secretHashes, prompts };
  }

  // --- Accounts --------------------------------------------------------------------------------------

  async insertAccount(accountNumber: string, displayName: string, tx?: Tx): Promise<AccountRow> {
    const [r] = await translated(this.q(tx)('accounts').insert({ id: randomUUID(), account_number: accountNumber, display_name: displayName }).returning('*'));
    return account(r);
  }

  async accountById(id: string, tx?: Tx): Promise<AccountRow | undefined> {
    return firstRow(this.q(tx)('accounts').where({ id }), account);
  }

  async accountByNumber(accountNumber: string, tx?: Tx): Promise<AccountRow | undefined> {
    return firstRow(this.q(tx)('accounts').where({ account_number: accountNumber }), account);
  }

  /** One page of accounts in account number order (numbers are unique). */
  async listAccounts(afterNumber: string | undefined, limit: number): Promise<AccountRow[]> {
    const q = this.db('accounts');
    if (afterNumber !== undefined) q.where('account_number', '>', afterNumber);
    return (await q.orderBy('account_number', 'asc').limit(limit)).map(account);
  }

  // --- User profiles ---------------------------------------------------------------------------------

  async insertUserProfile(accountId: string, username: string, email: string, tx?: Tx): Promise<UserProfileRow> {
    const [r] = await translated(this.q(tx)('user_profiles').insert({ id: randomUUID(), account_id: accountId, username, email }).returning('*'));
    return userProfile(r);
  }

  async userProfileById(id: string, tx?: Tx): Promise<UserProfileRow | undefined> {
    return firstRow(this.q(tx)('user_profiles').where({ id }), userProfile);
  }

  /** One page of an account's user profiles in username order (unique per account). */
  async listUserProfiles(accountId: string, afterUsername: string | undefined, limit: number): Promise<UserProfileRow[]> {
    return (await keysetPage(this.db('user_profiles').where({ account_id: accountId }), 'username', afterUsername, limit)).map(userProfile);
  }

  // --- API keys --------------------------------------------------------------------------------------

  async insertApiKey(k: NewApiKey, tx?: Tx): Promise<ApiKeyRow> {
    const [r] = await translated(
      this.q(tx)('api_keys')
        .insert({
          id: randomUUID(),
          user_profile_id: k.userProfileId,
          account_id: k.accountId,
          secret_hash: k.secretHash,
          key_prefix: k.keyPrefix,
          description: k.description,
        })
        .returning('*'),
    );
    return apiKey(r);
  }

  async apiKeyById(id: string, tx?: Tx): Promise<ApiKeyRow | undefined> {
    return firstRow(this.q(tx)('api_keys').where({ id }), apiKey);
  }

  async apiKeyByHash(secretHash: string): Promise<ApiKeyRow | undefined> {
    return firstRow(this.db('api_keys').where({ secret_hash: secretHash }), apiKey);
  }

  async secretHashOf(id: string, tx: Tx): Promise<string | undefined> {
    const r: { secret_hash: string } | undefined = await knexOf(tx)('api_keys').where({ id }).first('secret_hash');
    return r?.secret_hash;
  }

  async revokeApiKey(id: string, tx: Tx): Promise<ApiKeyRow | undefined> {
    const q = knexOf(tx);
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
    return rows.map((r: ApiKeyRecord & { created_cursor: unknown }) => ({ row: apiKey(r), cursor: { createdAt: String(r.created_cursor), id: r.id } }));
  }

  // --- LLM clients and plugins -----------------------------------------------------------------------

  async insertOwned(table: OwnedTable, accountId: string, name: string, description: string, tx?: Tx): Promise<OwnedNameRow> {
    const [r] = await translated(this.q(tx)(table).insert({ id: randomUUID(), account_id: accountId, name, description }).returning('*'));
    return ownedName(r);
  }

  async ownedById(table: OwnedTable, id: string, tx?: Tx): Promise<OwnedNameRow | undefined> {
    return firstRow(this.q(tx)(table).where({ id }), ownedName);
  }

  async ownedByName(table: OwnedTable, accountId: string, name: string, tx?: Tx): Promise<OwnedNameRow | undefined> {
    return firstRow(this.q(tx)(table).where({ account_id: accountId, name }), ownedName);
  }

  /** One page of an account's LLM clients or plugins in name order (names are unique per account). */
  async listOwned(table: OwnedTable, accountId: string, afterName: string | undefined, limit: number): Promise<OwnedNameRow[]> {
    return (await keysetPage(this.db(table).where({ account_id: accountId }), 'name', afterName, limit)).map(ownedName);
  }
}
