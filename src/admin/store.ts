import { z } from 'zod';
import type { Tx } from '../ports/unit-of-work.js';
import { isoDate } from '../json-codec.js';

// The rows of the admin aggregate and the narrow store the use cases need. Implemented by
// storage/admin-store.ts (Knex) and, in tests, in memory; nothing here knows SQL. A store throws
// ports/constraint-violation.ts's ConstraintViolation for a unique or foreign-key refusal.

const stamps = { createdAt: isoDate, updatedAt: isoDate, revision: z.number().int() };

export const accountRow = z.object({ id: z.string(), accountNumber: z.string(), displayName: z.string(), ...stamps });
export type AccountRow = z.infer<typeof accountRow>;

export const userProfileRow = z.object({ id: z.string(), accountId: z.string(), username: z.string(), email: z.string(), ...stamps });
export type UserProfileRow = z.infer<typeof userProfileRow>;

export const apiKeyRow = z.object({
  id: z.string(),
  userProfileId: z.string(),
  accountId: z.string(),
  description: z.string(),
  /** The first characters of the secret ('' for keys issued before prefixes were kept). Never the secret. */
  keyPrefix: z.string(),
  revokedAt: isoDate.optional(),
  ...stamps,
});
export type ApiKeyRow = z.infer<typeof apiKeyRow>;

/** LLM clients and plugins share a shape: a named thing an account owns. */
export const ownedNameRow = z.object({ id: z.string(), accountId: z.string(), name: z.string(), description: z.string(), ...stamps });
export type OwnedNameRow = z.infer<typeof ownedNameRow>;

/** The admin resources' tables; each has `id`, `revision` and `updated_at`. */
export type AdminTable = 'accounts' | 'user_profiles' | 'api_keys' | 'llm_clients' | 'plugins';
export type OwnedTable = 'llm_clients' | 'plugins';

interface AdminRows {
  accounts: AccountRow;
  user_profiles: UserProfileRow;
  api_keys: ApiKeyRow;
  llm_clients: OwnedNameRow;
  plugins: OwnedNameRow;
}
export type RowOf<T extends AdminTable> = AdminRows[T];

/** Every field an Update may change, across the admin resources (each table takes its own subset). */
export interface AdminPatch {
  displayName?: string | undefined;
  username?: string | undefined;
  email?: string | undefined;
  description?: string | undefined;
  name?: string | undefined;
}

/** A prompt that went with a deleted user profile, LLM client or account. */
export interface CascadedPrompt {
  id: string;
  sessionKey: string;
  revision: number;
}

/** What a delete took with it that caches may still hold: API key hashes and prompts (by session key). */
export interface DeletedDependents {
  secretHashes: string[];
  prompts: CascadedPrompt[];
}

/** The keyset cursor of ListApiKeys: created_at as Postgres prints it (microseconds kept), then id. */
export interface ApiKeyCursor {
  createdAt: string;
  id: string;
}

export interface NewApiKey {
  userProfileId: string;
  accountId: string;
  secretHash: string;
  keyPrefix: string;
  description: string;
}

/**
 * What the admin use cases need from storage. Reads take an optional `tx` (inside a write they read in it);
 * `lockById` and the writes take the write's own. Lists return `limit` rows in their key order, after the
 * cursor given.
 */
export interface AdminStore {
  /** The row, locked for the rest of the transaction (updates and deletes read it so). */
  lockById<T extends AdminTable>(table: T, id: string, tx: Tx): Promise<RowOf<T> | undefined>;
  /** Sets the changed fields, bumps the revision and update time; returns the new row. */
  updateById<T extends AdminTable>(table: T, id: string, changes: AdminPatch, tx: Tx): Promise<RowOf<T>>;
  /**
   * Deletes the row and, with it, what it owns (its keys, profiles, prompts…) and every stored reply about
   * them. Returns what caches may still hold of that.
   */
  deleteById(table: AdminTable, id: string, tx: Tx): Promise<DeletedDependents>;

  insertAccount(accountNumber: string, displayName: string, tx?: Tx): Promise<AccountRow>;
  accountById(id: string, tx?: Tx): Promise<AccountRow | undefined>;
  accountByNumber(accountNumber: string, tx?: Tx): Promise<AccountRow | undefined>;
  listAccounts(afterNumber: string | undefined, limit: number): Promise<AccountRow[]>;

  insertUserProfile(accountId: string, username: string, email: string, tx?: Tx): Promise<UserProfileRow>;
  userProfileById(id: string, tx?: Tx): Promise<UserProfileRow | undefined>;
  listUserProfiles(accountId: string, afterUsername: string | undefined, limit: number): Promise<UserProfileRow[]>;

  insertApiKey(key: NewApiKey, tx?: Tx): Promise<ApiKeyRow>;
  apiKeyById(id: string, tx?: Tx): Promise<ApiKeyRow | undefined>;
  apiKeyByHash(secretHash: string): Promise<ApiKeyRow | undefined>;
  /** The secret hash of a key (to evict caches). */
  secretHashOf(id: string, tx: Tx): Promise<string | undefined>;
  /** Revokes a valid key (revision + 1); undefined when it was revoked already (nothing written). */
  revokeApiKey(id: string, tx: Tx): Promise<ApiKeyRow | undefined>;
  listApiKeys(
    filter: { accountId?: string | undefined; userProfileId?: string | undefined },
    after: ApiKeyCursor | undefined,
    limit: number,
  ): Promise<Array<{ row: ApiKeyRow; cursor: ApiKeyCursor }>>;

  insertOwned(table: OwnedTable, accountId: string, name: string, description: string, tx?: Tx): Promise<OwnedNameRow>;
  ownedById(table: OwnedTable, id: string, tx?: Tx): Promise<OwnedNameRow | undefined>;
  ownedByName(table: OwnedTable, accountId: string, name: string, tx?: Tx): Promise<OwnedNameRow | undefined>;
  listOwned(table: OwnedTable, accountId: string, afterName: string | undefined, limit: number): Promise<OwnedNameRow[]>;
}
