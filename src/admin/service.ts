import { alreadyExists, invalidArgument, naming, notFound } from '../errors.js';
import { hashSecret, newApiKeySecret, type Principal } from '../auth.js';
import { isUniqueViolation } from '../storage/db.js';
import type { AdminRepo, AccountRow, ApiKeyRow, OwnedNameRow, UserProfileRow } from '../storage/admin-repo.js';
import { CACHE_MISS, type Bus, type KvStore } from '../storage/kv.js';
import { afterCommit } from '../storage/after-commit.js';
import { invalidateOnBus, LocalCache } from '../storage/local-cache.js';
import { z } from 'zod';
import { newAccountNumber, PLUGIN_NAME } from './rules.js';
import { cursorOf, decodePageToken, encodePageToken, pageSizeOf, splitPage, type Page, type PageRequest } from '../paging.js';

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
 * changes, only its revocation: the revoking process drops the entry at once, the others on the
 * API_KEY_REVOKED_CHANNEL message (bus latency), and should that message be lost (the bus is at-most-once),
 * LOCAL_PRINCIPAL_TTL_MS bounds how long another replica may still accept the revoked key.
 */
export const LOCAL_PRINCIPAL_TTL_MS = 5_000;
/**
 * The longest a revoked key keeps working on any replica, whatever Redis and the bus do: a principal is
 * validated against Postgres at most PRINCIPAL_TTL_MS before it enters a process, which keeps it at most
 * LOCAL_PRINCIPAL_TTL_MS more. With Redis and the bus healthy it is the bus latency (the fence voids the
 * Redis copy, the message the local ones).
 */
export const REVOCATION_BOUND_MS = PRINCIPAL_TTL_MS + LOCAL_PRINCIPAL_TTL_MS;
const LOCAL_PRINCIPAL_MAX = 10_000;

/** Tenancy use cases: accounts, user profiles, API keys, LLM clients and plugins. */
export class AdminService {
  private readonly principals: LocalCache<Principal>;
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    private readonly repo: AdminRepo,
    private readonly kv: KvStore,
    private readonly bus?: Bus,
    opts: { localTtlMs?: number; localMaxEntries?: number; now?: () => number } = {},
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

  async createAccount(accountNumber: string | undefined, displayName: string): Promise<AccountRow> {
    // A generated number can collide with an existing one; retry a few times rather than fail the caller.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.repo.insertAccount(accountNumber ?? newAccountNumber(), displayName);
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        if (accountNumber || attempt >= 5) throw alreadyExists(naming`account ${accountNumber ?? ''}`.trim());
      }
    }
  }

  async getAccount(by: { id?: string; accountNumber?: string }): Promise<AccountRow> {
    const row = by.id ? await this.repo.accountById(by.id) : await this.repo.accountByNumber(by.accountNumber ?? '');
    if (!row) throw notFound`account ${by.id ?? by.accountNumber}`;
    return row;
  }

  async createUserProfile(accountId: string, username: string, email: string): Promise<UserProfileRow> {
    await this.requireAccount(accountId);
    try {
      return await this.repo.insertUserProfile(accountId, username, email);
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists`user profile ${username} in account ${accountId}`;
      throw err;
    }
  }

  async getUserProfile(id: string): Promise<UserProfileRow> {
    const row = await this.repo.userProfileById(id);
    if (!row) throw notFound`user profile ${id}`;
    return row;
  }

  async createApiKey(userProfileId: string, description: string): Promise<{ key: ApiKeyRow; secret: string }> {
    const profile = await this.repo.userProfileById(userProfileId);
    if (!profile) throw invalidArgument('user_profile_id', `user profile ${userProfileId} does not exist`);
    const secret = newApiKeySecret();
    const key = await this.repo.insertApiKey(profile.id, profile.accountId, hashSecret(secret), description);
    return { key, secret };
  }

  async revokeApiKey(id: string): Promise<ApiKeyRow> {
    const r = await this.repo.revokeApiKey(id);
    if (!r) throw notFound`api key ${id}`;
    // Local first: from here on this process refuses the key, whatever happens to Redis or the bus.
    this.principals.delete(r.secretHash);
    // The fence also voids fills in flight (another replica reading the key for its first use).
    await afterCommit(
      () => this.kv.fence(principalKey(r.secretHash)),
      () => this.bus?.publish(API_KEY_REVOKED_CHANNEL, r.secretHash) ?? Promise.resolve(),
    );
    return r.key;
  }

  /**
   * The principal of a bearer secret, or undefined for an unknown or revoked key. Cached in process (a few
   * seconds), then in Redis (fenced fills, PRINCIPAL_TTL_MS), then Postgres; revoke evicts both levels
   * (see REVOCATION_BOUND_MS).
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

  createLlmClient(accountId: string, name: string, description: string): Promise<OwnedNameRow> {
    return this.createOwned('llm_clients', 'LLM client', accountId, name, description);
  }

  async getLlmClient(id: string): Promise<OwnedNameRow> {
    const row = await this.repo.ownedById('llm_clients', id);
    if (!row) throw notFound`LLM client ${id}`;
    return row;
  }

  createPlugin(accountId: string, name: string, description: string): Promise<OwnedNameRow> {
    return this.createOwned('plugins', 'plugin', accountId, name, description);
  }

  async getPlugin(id: string): Promise<OwnedNameRow> {
    const row = await this.repo.ownedById('plugins', id);
    if (!row) throw notFound`plugin ${id}`;
    return row;
  }

  async listPlugins(accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
    await this.requireAccount(accountId);
    return listPluginsOf(this.repo, accountId, page);
  }

  private async createOwned(
    table: 'llm_clients' | 'plugins',
    what: string,
    accountId: string,
    name: string,
    description: string,
  ): Promise<OwnedNameRow> {
    await this.requireAccount(accountId);
    try {
      return await this.repo.insertOwned(table, accountId, name, description);
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists`${what} ${name} in account ${accountId}`;
      throw err;
    }
  }

  private async requireAccount(accountId: string): Promise<void> {
    if (!(await this.repo.accountById(accountId))) throw invalidArgument('account_id', `account ${accountId} does not exist`);
  }
}

const isNameCursor = cursorOf(z.object({ name: z.string().regex(PLUGIN_NAME) }).strict());

/** An account's plugins by name, a page at a time (PromptService and AdminService both list them). */
export async function listPluginsOf(admin: AdminRepo, accountId: string, page: PageRequest): Promise<Page<OwnedNameRow>> {
  const size = pageSizeOf(page.pageSize);
  const after = decodePageToken(page.pageToken, 'plugins', { accountId }, isNameCursor);
  const rows = await admin.listOwned('plugins', accountId, after?.name, size + 1);
  const { page: items, more } = splitPage(rows, size);
  const last = items[items.length - 1];
  return { items, nextPageToken: more && last ? encodePageToken('plugins', { accountId }, { name: last.name }) : '' };
}
