import { randomUUID } from 'node:crypto';
import type {
  AccountRow,
  AdminPatch,
  AdminStore,
  AdminTable,
  ApiKeyCursor,
  ApiKeyRow,
  DeletedDependents,
  NewApiKey,
  OwnedNameRow,
  OwnedTable,
  RowOf,
  UserProfileRow,
} from '../../src/admin/store.js';
import { ConstraintViolation } from '../../src/ports/constraint-violation.js';
import type { Codec, RequestKey, Tx, UnitOfWork } from '../../src/ports/unit-of-work.js';

/** The one transaction handle of the in-memory unit of work (the domain only passes it along). */
const TX = Object.freeze({}) as Tx;

type Rows = { [T in AdminTable]: Map<string, RowOf<T>> };
interface Tables {
  rows: Rows;
  secretHashes: Map<string, string>;
}
const emptyTables = (): Tables => ({
  rows: { accounts: new Map(), user_profiles: new Map(), api_keys: new Map(), llm_clients: new Map(), plugins: new Map() },
  secretHashes: new Map(),
});

const stamps = () => ({ id: randomUUID(), createdAt: new Date(), updatedAt: new Date(), revision: 1 });
const page = <R>(rows: R[], key: (r: R) => string, after: string | undefined, limit: number) =>
  rows
    .filter((r) => after === undefined || key(r) > after)
    .sort((a, b) => (key(a) < key(b) ? -1 : 1))
    .slice(0, limit);

/** The admin store in memory, with the constraints the schema has (unique names, parents). */
export class MemoryAdminStore implements AdminStore {
  tables = emptyTables();
  /** How many principal lookups reached the store. */
  hashReads = 0;

  snapshot(): Tables {
    return structuredClone(this.tables);
  }

  async lockById<T extends AdminTable>(table: T, id: string, _tx: Tx): Promise<RowOf<T> | undefined> {
    return this.tables.rows[table].get(id);
  }

  async updateById<T extends AdminTable>(table: T, id: string, changes: AdminPatch, _tx: Tx): Promise<RowOf<T>> {
    const rows = this.tables.rows[table];
    const current = rows.get(id);
    if (!current) throw new Error(`no ${table} ${id}`);
    const next = { ...current, ...changes, revision: current.revision + 1, updatedAt: new Date() };
    const owned = table === 'plugins' ? 'plugins' : 'llm_clients';
    const named = this.tables.rows[owned].get(id);
    if (changes.name !== undefined && named && this.nameTaken(owned, named.accountId, changes.name, id)) throw new ConstraintViolation('unique');
    rows.set(id, next);
    return next;
  }

  private nameTaken(table: OwnedTable, accountId: string, name: string, except?: string): boolean {
    return [...this.tables.rows[table].values()].some((r) => r.accountId === accountId && r.name === name && r.id !== except);
  }

  async deleteById(table: AdminTable, id: string, _tx: Tx): Promise<DeletedDependents> {
    const keys = [...this.tables.rows.api_keys.values()].filter((k) => (table === 'api_keys' ? k.id === id : table === 'accounts' ? k.accountId === id : k.userProfileId === id && table === 'user_profiles'));
    for (const k of keys) this.tables.rows.api_keys.delete(k.id);
    if (table === 'accounts') {
      for (const t of ['user_profiles', 'llm_clients', 'plugins'] as const) for (const [rid, r] of this.tables.rows[t]) if (r.accountId === id) this.tables.rows[t].delete(rid);
    }
    this.tables.rows[table].delete(id);
    return { secretHashes: keys.map((k) => this.tables.secretHashes.get(k.id) ?? ''), prompts: [] };
  }

  async insertAccount(accountNumber: string, displayName: string): Promise<AccountRow> {
    if ([...this.tables.rows.accounts.values()].some((a) => a.accountNumber === accountNumber)) throw new ConstraintViolation('unique');
    const row = { ...stamps(), accountNumber, displayName };
    this.tables.rows.accounts.set(row.id, row);
    return row;
  }

  async accountById(id: string): Promise<AccountRow | undefined> {
    return this.tables.rows.accounts.get(id);
  }

  async accountByNumber(accountNumber: string): Promise<AccountRow | undefined> {
    return [...this.tables.rows.accounts.values()].find((a) => a.accountNumber === accountNumber);
  }

  async listAccounts(afterNumber: string | undefined, limit: number): Promise<AccountRow[]> {
    return page([...this.tables.rows.accounts.values()], (a) => a.accountNumber, afterNumber, limit);
  }

  async insertUserProfile(accountId: string, username: string, email: string): Promise<UserProfileRow> {
    if (!this.tables.rows.accounts.has(accountId)) throw new ConstraintViolation('missing_parent');
    if ([...this.tables.rows.user_profiles.values()].some((p) => p.accountId === accountId && p.username === username)) throw new ConstraintViolation('unique');
    const row = { ...stamps(), accountId, username, email };
    this.tables.rows.user_profiles.set(row.id, row);
    return row;
  }

  async userProfileById(id: string): Promise<UserProfileRow | undefined> {
    return this.tables.rows.user_profiles.get(id);
  }

  async listUserProfiles(accountId: string, afterUsername: string | undefined, limit: number): Promise<UserProfileRow[]> {
    return page([...this.tables.rows.user_profiles.values()].filter((p) => p.accountId === accountId), (p) => p.username, afterUsername, limit);
  }

  async insertApiKey(k: NewApiKey): Promise<ApiKeyRow> {
    if (!this.tables.rows.user_profiles.has(k.userProfileId)) throw new ConstraintViolation('missing_parent');
    const { secretHash, ...rest } = k;
    const row: ApiKeyRow = { ...stamps(), ...rest, revokedAt: undefined };
    this.tables.rows.api_keys.set(row.id, row);
    this.tables.secretHashes.set(row.id, secretHash);
    return row;
  }

  async apiKeyById(id: string): Promise<ApiKeyRow | undefined> {
    return this.tables.rows.api_keys.get(id);
  }

  async apiKeyByHash(secretHash: string): Promise<ApiKeyRow | undefined> {
    this.hashReads++;
    const id = [...this.tables.secretHashes].find(([, h]) => h === secretHash)?.[0];
    return id === undefined ? undefined : this.tables.rows.api_keys.get(id);
  }

  async secretHashOf(id: string): Promise<string | undefined> {
    return this.tables.secretHashes.get(id);
  }

  async revokeApiKey(id: string): Promise<ApiKeyRow | undefined> {
    const k = this.tables.rows.api_keys.get(id);
    if (!k || k.revokedAt) return undefined;
    const next = { ...k, revokedAt: new Date(), updatedAt: new Date(), revision: k.revision + 1 };
    this.tables.rows.api_keys.set(id, next);
    return next;
  }

  async listApiKeys(
    filter: { accountId?: string | undefined; userProfileId?: string | undefined },
    after: ApiKeyCursor | undefined,
    limit: number,
  ): Promise<Array<{ row: ApiKeyRow; cursor: ApiKeyCursor }>> {
    const rows = [...this.tables.rows.api_keys.values()].filter(
      (k) => (!filter.accountId || k.accountId === filter.accountId) && (!filter.userProfileId || k.userProfileId === filter.userProfileId),
    );
    const cursorOf = (k: ApiKeyRow) => ({ createdAt: k.createdAt.toISOString(), id: k.id });
    const key = (k: ApiKeyRow) => `${k.createdAt.toISOString()} ${k.id}`;
    return page(rows, key, after && `${after.createdAt} ${after.id}`, limit).map((row) => ({ row, cursor: cursorOf(row) }));
  }

  async insertOwned(table: OwnedTable, accountId: string, name: string, description: string): Promise<OwnedNameRow> {
    if (!this.tables.rows.accounts.has(accountId)) throw new ConstraintViolation('missing_parent');
    if (this.nameTaken(table, accountId, name)) throw new ConstraintViolation('unique');
    const row = { ...stamps(), accountId, name, description };
    this.tables.rows[table].set(row.id, row);
    return row;
  }

  async ownedById(table: OwnedTable, id: string): Promise<OwnedNameRow | undefined> {
    return this.tables.rows[table].get(id);
  }

  async ownedByName(table: OwnedTable, accountId: string, name: string): Promise<OwnedNameRow | undefined> {
    return [...this.tables.rows[table].values()].find((r) => r.accountId === accountId && r.name === name);
  }

  async listOwned(table: OwnedTable, accountId: string, afterName: string | undefined, limit: number): Promise<OwnedNameRow[]> {
    return page([...this.tables.rows[table].values()].filter((r) => r.accountId === accountId), (r) => r.name, afterName, limit);
  }
}

/**
 * The unit of work in memory: a failed write leaves the store as it was (a snapshot is restored), and a
 * request id replays its first result through the codec, as the Knex one does.
 */
export class MemoryUnitOfWork implements UnitOfWork {
  private readonly claims = new Map<string, { method: string; fingerprint: string; response: unknown }>();

  constructor(private readonly store: MemoryAdminStore) {}

  async run<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>): Promise<{ value: T; replayed: boolean }> {
    const claimId = key.requestId && `${key.scope}/${key.requestId}`;
    const first = claimId ? this.claims.get(claimId) : undefined;
    if (first) {
      if (first.method !== key.method || first.fingerprint !== key.fingerprint) throw new Error('REQUEST_ID_REUSED');
      return { value: codec.decode(JSON.parse(JSON.stringify(first.response))), replayed: true };
    }
    const before = this.store.snapshot();
    try {
      const value = await work(TX);
      if (claimId) this.claims.set(claimId, { method: key.method, fingerprint: key.fingerprint, response: codec.encode(value) });
      return { value, replayed: false };
    } catch (err) {
      this.store.tables = before;
      throw err;
    }
  }
}
