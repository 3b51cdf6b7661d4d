import { z } from 'zod';
import type { AdminUseCases, Conditions } from '../admin/service.js';
import { ACCOUNT_NUMBER, LLM_CLIENT_NAME, PLUGIN_NAME, USERNAME } from '../admin/rules.js';
import type { AccountRow, ApiKeyRow, OwnedNameRow, OwnedTable, UserProfileRow } from '../admin/store.js';
import type {
  Account,
  AdminServiceServer,
  ApiKey,
  CreateAccountRequest,
  CreateApiKeyRequest,
  CreateLlmClientRequest,
  CreateUserProfileRequest,
  DeleteAccountRequest,
  GetAccountRequest,
  GetApiKeyRequest,
  ListAccountsRequest,
  ListApiKeysRequest,
  ListLlmClientsRequest,
  LlmClient,
  Plugin,
  PurgeExpiredDataRequest,
  UpdateAccountRequest,
  UpdateApiKeyRequest,
  UpdateLlmClientRequest,
  UpdatePluginRequest,
  UpdateUserProfileRequest,
  UserProfile,
} from '../gen/parley/admin/v1/admin.js';
import { invalidArgument } from '../errors.js';
import { snakeCase } from '../field-path.js';
import { parseInput } from '../validate.js';
import { optionalString, optionalUuid, textOfAtMost, uuid } from './zod-fields.js';
import { checkUpdateMask } from './update-mask.js';
import type { ServiceHandlers } from './rpc.js';
import { pageReply } from './replies.js';
import type { Maintenance } from '../maintenance/purge.js';
export const toAccount = (r: AccountRow): Account => ({
  id: r.id,
  accountNumber: r.accountNumber,
  displayName: r.displayName,
  createTime: r.createdAt,
  updateTime: r.updatedAt,
  revision: r.revision,
});
export const toUserProfile = (r: UserProfileRow): UserProfile => ({
  id: r.id,
  accountId: r.accountId,
  username: r.username,
  email: r.email,
  createTime: r.createdAt,
  updateTime: r.updatedAt,
  revision: r.revision,
});
/** Never the secret nor its hash: the prefix tells keys apart. */
export const toApiKey = (r: ApiKeyRow): ApiKey => ({
  id: r.id,
  userProfileId: r.userProfileId,
  accountId: r.accountId,
  description: r.description,
  keyPrefix: r.keyPrefix,
  createTime: r.createdAt,
  updateTime: r.updatedAt,
  revokeTime: r.revokedAt,
  revision: r.revision,
});
const toOwned = (r: OwnedNameRow) => ({
  id: r.id,
  accountId: r.accountId,
  name: r.name,
  description: r.description,
  createTime: r.createdAt,
  updateTime: r.updatedAt,
  revision: r.revision,
});
export const toLlmClient = (r: OwnedNameRow): LlmClient => toOwned(r);
export const toPlugin = (r: OwnedNameRow): Plugin => toOwned(r);

/**
 * Size limits of every admin text field, in characters (Unicode code points), as the proto documents them.
 * Past its limit a field is INVALID_ARGUMENT with reason FIELD_TOO_LARGE, before any other check.
 */
export const ADMIN_TEXT_LIMITS = {
  account_number: 14,
  display_name: 200,
  username: 150,
  email: 254,
  description: 2000,
  llm_client_name: 63,
  plugin_name: 64,
} as const;
const L = ADMIN_TEXT_LIMITS;
const chars = (max: number) => textOfAtMost(max, 'characters');

// Field schemas: the size first (FIELD_TOO_LARGE), then the rule.
const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());
const expectedRevision = z.number().int().min(1, 'must be a revision (1 or more)').optional();
const displayName = chars(L.display_name);
const description = chars(L.description);
const email = chars(L.email).pipe(z.union([z.literal(''), z.string().email('must be an email address')]));
const username = chars(L.username).pipe(z.string().regex(USERNAME, 'must be 1-150 letters, digits or . _ @ + -, starting with a letter or digit'));
const llmClientName = chars(L.llm_client_name).pipe(
  z.string().regex(LLM_CLIENT_NAME, 'must be 1-63 lower-case letters and digits, starting with a letter (it is the first label of the client URL)'),
);
const pluginName = chars(L.plugin_name).pipe(z.string().regex(PLUGIN_NAME, 'must be a letter, then up to 63 letters, digits, _ or -'));
const accountNumber = chars(L.account_number).optional().transform((s) => s || undefined);
const pageSize = z.number().int().min(0, 'must not be negative');

// Request schemas, each checked by the compiler against (a part of) its generated request type.
type RequestSchema<Req> = z.ZodType<unknown, Partial<Req>>;
const createAccount = z.object({
  accountNumber: accountNumber.pipe(z.string().regex(ACCOUNT_NUMBER, 'must look like 1234-5678-9012').optional()),
  displayName,
  requestId,
}) satisfies RequestSchema<CreateAccountRequest>;
const getAccount = z
  .object({ id: optionalUuid, accountNumber })
  .refine((r) => r.id || r.accountNumber, { message: 'id or account_number is required', path: ['id'] }) satisfies RequestSchema<GetAccountRequest>;
const createUserProfile = z.object({ accountId: uuid, username, email, requestId }) satisfies RequestSchema<CreateUserProfileRequest>;
const byId = z.object({ id: uuid }) satisfies RequestSchema<GetApiKeyRequest>;
const deleteById = z.object({ id: uuid, expectedRevision, requestId }) satisfies RequestSchema<DeleteAccountRequest>;
const createApiKey = z.object({ userProfileId: uuid, description, requestId }) satisfies RequestSchema<CreateApiKeyRequest>;
const createOwned = (name: typeof pluginName) => z.object({ accountId: uuid, name, description, requestId }) satisfies RequestSchema<CreateLlmClientRequest>;
const listOf = z.object({ accountId: uuid, pageSize, pageToken: optionalString }) satisfies RequestSchema<ListLlmClientsRequest>;
const listAccounts = z.object({ pageSize, pageToken: optionalString }) satisfies RequestSchema<ListAccountsRequest>;
const listApiKeys = z.object({ accountId: optionalUuid, userProfileId: optionalUuid, pageSize, pageToken: optionalString }) satisfies RequestSchema<ListApiKeysRequest>;
const purgeExpiredData = z.object({
  olderThan: z.object(
    { seconds: z.number().int().min(0, 'must not be negative').max(100 * 365 * 86_400, 'must be at most 100 years'), nanos: z.number().int().min(0).max(999_999_999) },
    { error: 'is required' },
  ),
  batchSize: z.number().int().min(0, 'must not be negative').max(100_000, 'must be at most 100000'),
}) satisfies RequestSchema<PurgeExpiredDataRequest>;

/** An Update RPC: the resource's field in the request, and the schema of each field an update may change. */
interface UpdateSpec<K extends string, F extends string> {
  key: K;
  resource: string;
  updatable: readonly F[];
  fields: Record<F, z.ZodType<string, string>>;
  /** Fields that exist but cannot be changed (OUTPUT_ONLY or IMMUTABLE), besides id, times and revision. */
  fixed: readonly string[];
}
/** A spec whose key and fields the compiler checks against the generated request `Req`. */
const updateOf =
  <Req>() =>
  <K extends keyof Req & string, F extends keyof NonNullable<Req[K]> & string>(spec: UpdateSpec<K, F>) =>
    spec;

const ACCOUNT = updateOf<UpdateAccountRequest>()({ key: 'account', resource: 'Account', updatable: ['displayName'], fields: { displayName }, fixed: ['account_number'] });
const PROFILE = updateOf<UpdateUserProfileRequest>()({
  key: 'userProfile',
  resource: 'UserProfile',
  updatable: ['username', 'email'],
  fields: { username, email },
  fixed: ['account_id'],
});
const KEY = updateOf<UpdateApiKeyRequest>()({
  key: 'apiKey',
  resource: 'ApiKey',
  updatable: ['description'],
  fields: { description },
  fixed: ['user_profile_id', 'account_id', 'revoke_time', 'key_prefix'],
});
const LLM_CLIENT = updateOf<UpdateLlmClientRequest>()({
  key: 'llmClient',
  resource: 'LlmClient',
  updatable: ['name', 'description'],
  fields: { name: llmClientName, description },
  fixed: ['account_id'],
});
const PLUGIN = updateOf<UpdatePluginRequest>()({ key: 'plugin', resource: 'Plugin', updatable: ['name', 'description'], fields: { name: pluginName, description }, fixed: ['account_id'] });

/**
 * An Update request's one parse step. AIP-134 with one deliberate choice: the mask is required (`*` selects
 * every updatable field), because proto3 sends an empty string for both "clear the description" and "left it
 * alone". Then the resource's id, the fields the mask names (only those: the others are not read), the
 * expected revision and the request id, in one zod parse.
 */
function parseUpdate<K extends string, F extends string>(req: unknown, spec: UpdateSpec<K, F>): { id: string; patch: Partial<Record<F, string>> } & Conditions {
  const { updateMask } = parseInput(z.object({ updateMask: z.array(z.string()).optional() }), req);
  const paths = spec.updatable.map(snakeCase);
  if (!updateMask?.length) throw invalidArgument('update_mask', `is required: list fields among ${paths.join(', ')}, or *`, 'UPDATE_MASK_INVALID');
  const chosen = checkUpdateMask(updateMask, paths, ['id', 'create_time', 'update_time', 'revision', ...spec.fixed], spec.resource);
  const fields = spec.updatable.filter((f) => chosen.has(snakeCase(f)));
  const resource = z.object({ id: uuid, ...Object.fromEntries(fields.map((f) => [f, spec.fields[f]])) }, { error: 'is required' });
  const at: Record<string, typeof resource> = { [spec.key]: resource };
  const r = parseInput(z.object({ expectedRevision, requestId }).and(z.object(at)), req);
  const parsed = new Map<string, unknown>(Object.entries(r[spec.key] ?? {}));
  const patch: Partial<Record<F, string>> = {};
  for (const f of fields) {
    const v = parsed.get(f);
    if (typeof v === 'string') patch[f] = v;
  }
  const id = parsed.get('id');
  return { id: typeof id === 'string' ? id : '', patch, expectedRevision: r.expectedRevision, requestId: r.requestId };
}

/** Delete and Revoke take the same request: an id and the conditions. */
const parseDelete = (req: unknown) => parseInput(deleteById, req);

export function adminHandlers(admin: AdminUseCases, maintenance: Maintenance): ServiceHandlers<AdminServiceServer> {
  const deleted = async (req: unknown, remove: (id: string, c: Conditions) => Promise<void>) => {
    const r = parseDelete(req);
    await remove(r.id, r);
    return {};
  };
  const updated = async <K extends string, F extends string, R, M>(req: unknown, spec: UpdateSpec<K, F>, run: (u: ReturnType<typeof parseUpdate<K, F>>) => Promise<{ row: R; changed: boolean }>, toMessage: (r: R) => M) => {
    const u = await run(parseUpdate(req, spec));
    // The reply names the resource by the spec's key (account, user_profile, …); TypeScript cannot follow a computed key.
    return { [spec.key]: toMessage(u.row), changed: u.changed } as Record<K, M> & { changed: boolean };
  };
  // LLM clients and plugins: one shape, two tables.
  const owned = <K extends string>(table: OwnedTable, name: typeof pluginName, spec: UpdateSpec<K, 'name' | 'description'>) => ({
    create: (req: unknown) => {
      const r = parseInput(createOwned(name), req);
      return admin.createOwned(table, r.accountId, r.name, r.description, r.requestId);
    },
    get: (req: unknown) => admin.getOwned(table, parseInput(byId, req).id),
    list: (req: unknown) => {
      const r = parseInput(listOf, req);
      return admin.listOwned(table, r.accountId, r);
    },
    update: (req: unknown) => updated(req, spec, (u) => admin.updateOwned(table, u.id, u.patch, u), toOwned),
    delete: (req: unknown) => deleted(req, (id, c) => admin.deleteOwned(table, id, c)),
  });
  const llmClients = owned('llm_clients', llmClientName, LLM_CLIENT);
  const plugins = owned('plugins', pluginName, PLUGIN);
  return {
    purgeExpiredData: async (req) => {
      const r = parseInput(purgeExpiredData, req);
      const olderThanMs = r.olderThan.seconds * 1000 + Math.floor(r.olderThan.nanos / 1e6);
      const report = await maintenance.purge({ olderThanMs, batchSize: r.batchSize || undefined });
      return {
        promptCount: report.prompts,
        historyEntryCount: report.history,
        toolCallCount: report.toolCalls,
        pluginUsageCount: report.pluginUsage,
        sessionCount: report.sessions,
        tombstoneCount: report.tombstones,
        requestIdCount: report.requestIds,
        batchCount: report.batches,
      };
    },

    // --- Accounts ---
    createAccount: async (req) => {
      const r = parseInput(createAccount, req);
      return { account: toAccount(await admin.createAccount(r.accountNumber, r.displayName, r.requestId)) };
    },
    getAccount: async (req) => {
      return { account: toAccount(await admin.getAccount(parseInput(getAccount, req))) };
    },
    listAccounts: async (req) => {
      const r = parseInput(listAccounts, req);
      return pageReply(await admin.listAccounts(r), toAccount, (accounts, nextPageToken) => ({ accounts, nextPageToken }));
    },
    updateAccount: (req) => updated(req, ACCOUNT, (u) => admin.updateAccount(u.id, u.patch, u), toAccount),
    deleteAccount: (req) => deleted(req, (id, c) => admin.deleteAccount(id, c)),

    // --- User profiles ---
    createUserProfile: async (req) => {
      const r = parseInput(createUserProfile, req);
      return { userProfile: toUserProfile(await admin.createUserProfile(r.accountId, r.username, r.email, r.requestId)) };
    },
    getUserProfile: async (req) => ({ userProfile: toUserProfile(await admin.getUserProfile(parseInput(byId, req).id)) }),
    listUserProfiles: async (req) => {
      const r = parseInput(listOf, req);
      return pageReply(await admin.listUserProfiles(r.accountId, r), toUserProfile, (userProfiles, nextPageToken) => ({ userProfiles, nextPageToken }));
    },
    updateUserProfile: (req) => updated(req, PROFILE, (u) => admin.updateUserProfile(u.id, u.patch, u), toUserProfile),
    deleteUserProfile: (req) => deleted(req, (id, c) => admin.deleteUserProfile(id, c)),

    // --- API keys ---
    createApiKey: async (req) => {
      const r = parseInput(createApiKey, req);
      const { key, secret } = await admin.createApiKey(r.userProfileId, r.description, r.requestId);
      return { apiKey: toApiKey(key), secret };
    },
    getApiKey: async (req) => ({ apiKey: toApiKey(await admin.getApiKey(parseInput(byId, req).id)) }),
    listApiKeys: async (req) => {
      const r = parseInput(listApiKeys, req);
      return pageReply(await admin.listApiKeys(r, r), toApiKey, (apiKeys, nextPageToken) => ({ apiKeys, nextPageToken }));
    },
    updateApiKey: (req) => updated(req, KEY, (u) => admin.updateApiKey(u.id, u.patch, u), toApiKey),
    revokeApiKey: async (req) => {
      const r = parseDelete(req);
      const u = await admin.revokeApiKey(r.id, r);
      return { apiKey: toApiKey(u.row), changed: u.changed };
    },
    deleteApiKey: (req) => deleted(req, (id, c) => admin.deleteApiKey(id, c)),

    // --- LLM clients ---
    createLlmClient: async (req) => ({ llmClient: toLlmClient(await llmClients.create(req)) }),
    getLlmClient: async (req) => ({ llmClient: toLlmClient(await llmClients.get(req)) }),
    listLlmClients: async (req) => pageReply(await llmClients.list(req), toLlmClient, (llmClients, nextPageToken) => ({ llmClients, nextPageToken })),
    updateLlmClient: (req) => llmClients.update(req),
    deleteLlmClient: (req) => llmClients.delete(req),

    // --- Plugins ---
    createPlugin: async (req) => ({ plugin: toPlugin(await plugins.create(req)) }),
    getPlugin: async (req) => ({ plugin: toPlugin(await plugins.get(req)) }),
    listPlugins: async (req) => pageReply(await plugins.list(req), toPlugin, (plugins, nextPageToken) => ({ plugins, nextPageToken })),
    updatePlugin: (req) => plugins.update(req),
    deletePlugin: (req) => plugins.delete(req),
  };
}
