import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Db } from './db.js';
import { asDate, asDateOrUndefined } from './rows.js';

export interface AccountRow {
  id: string;
  accountNumber: string;
  displayName: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface UserProfileRow {
  id: string;
  accountId: string;
  username: string;
  email: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface ApiKeyRow {
  id: string;
  userProfileId: string;
  accountId: string;
  description: string;
  createdAt: Date;
  revokedAt: Date | undefined;
}

/** LLM clients and plugins share a shape: a named thing an account owns. */
export interface OwnedNameRow {
  id: string;
  accountId: string;
  name: string;
  description: string;
  createdAt: Date;
  updatedAt: Date;
}

const account = (r: any): AccountRow => ({
  id: r.id,
  accountNumber: r.account_number,
  displayName: r.display_name,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});
const userProfile = (r: any): UserProfileRow => ({
  id: r.id,
  accountId: r.account_id,
  username: r.username,
  email: r.email,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});
const apiKey = (r: any): ApiKeyRow => ({
  id: r.id,
  userProfileId: r.user_profile_id,
  accountId: r.account_id,
  description: r.description,
  createdAt: asDate(r.created_at),
  revokedAt: asDateOrUndefined(r.revoked_at),
});
const ownedName = (r: any): OwnedNameRow => ({
  id: r.id,
  accountId: r.account_id,
  name: r.name,
  description: r.description,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

export class AdminRepo {
  constructor(private readonly db: Db) {}

  async insertAccount(accountNumber: string, displayName: string): Promise<AccountRow> {
    const [r] = await this.db('accounts')
      .insert({ id: randomUUID(), account_number: accountNumber, display_name: displayName })
      .returning('*');
    return account(r);
  }

  async accountById(id: string, q: Knex = this.db): Promise<AccountRow | undefined> {
    const r = await q('accounts').where({ id }).first();
    return r && account(r);
  }

  async accountByNumber(accountNumber: string): Promise<AccountRow | undefined> {
    const r = await this.db('accounts').where({ account_number: accountNumber }).first();
    return r && account(r);
  }

  async insertUserProfile(accountId: string, username: string, email: string): Promise<UserProfileRow> {
    const [r] = await this.db('user_profiles')
      .insert({ id: randomUUID(), account_id: accountId, username, email })
      .returning('*');
    return userProfile(r);
  }

  async userProfileById(id: string): Promise<UserProfileRow | undefined> {
    const r = await this.db('user_profiles').where({ id }).first();
    return r && userProfile(r);
  }

  async insertApiKey(userProfileId: string, accountId: string, secretHash: string, description: string): Promise<ApiKeyRow> {
    const [r] = await this.db('api_keys')
      .insert({ id: randomUUID(), user_profile_id: userProfileId, account_id: accountId, secret_hash: secretHash, description })
      .returning('*');
    return apiKey(r);
  }

  async apiKeyByHash(secretHash: string): Promise<ApiKeyRow | undefined> {
    const r = await this.db('api_keys').where({ secret_hash: secretHash }).first();
    return r && apiKey(r);
  }

  /** Revokes once; a second revoke keeps the first time. Returns the key and its hash (to evict caches). */
  async revokeApiKey(id: string): Promise<{ key: ApiKeyRow; secretHash: string } | undefined> {
    const [r] = await this.db('api_keys')
      .where({ id })
      .update({ revoked_at: this.db.raw('coalesce(revoked_at, now())') })
      .returning('*');
    return r && { key: apiKey(r), secretHash: r.secret_hash };
  }

  async insertOwned(table: 'llm_clients' | 'plugins', accountId: string, name: string, description: string): Promise<OwnedNameRow> {
    const [r] = await this.db(table).insert({ id: randomUUID(), account_id: accountId, name, description }).returning('*');
    return ownedName(r);
  }

  async ownedById(table: 'llm_clients' | 'plugins', id: string, q: Knex = this.db): Promise<OwnedNameRow | undefined> {
    const r = await q(table).where({ id }).first();
    return r && ownedName(r);
  }

  async ownedByName(table: 'llm_clients' | 'plugins', accountId: string, name: string, q: Knex = this.db): Promise<OwnedNameRow | undefined> {
    const r = await q(table).where({ account_id: accountId, name }).first();
    return r && ownedName(r);
  }

  /** One page of an account's LLM clients or plugins in name order (names are unique per account). */
  async listOwned(table: 'llm_clients' | 'plugins', accountId: string, afterName: string | undefined, limit: number): Promise<OwnedNameRow[]> {
    const q = this.db(table).where({ account_id: accountId });
    if (afterName !== undefined) q.andWhere('name', '>', afterName);
    const rows = await q.orderBy('name', 'asc').limit(limit);
    return rows.map(ownedName);
  }
}
