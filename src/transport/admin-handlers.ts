import { z } from 'zod';
import type { AdminService, Conditions } from '../admin/service.js';
import { ACCOUNT_NUMBER, LLM_CLIENT_NAME, PLUGIN_NAME, USERNAME } from '../admin/rules.js';
import type { AccountRow, ApiKeyRow, OwnedNameRow, UserProfileRow } from '../storage/admin-repo.js';
import type { Account, AdminServiceServer, ApiKey, LlmClient, Plugin, UserProfile } from '../gen/parley/admin/v1/admin.js';
import { invalidArgument, quote } from '../errors.js';
import { parseInput } from '../validate.js';
import { optionalString, uuid } from './convert.js';
import { unary, type ServiceHandlers } from './rpc.js';
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

const chars = (s: string) => [...s].length;

/** FIELD_TOO_LARGE for the first of `fields` past its limit. */
function checkSizes(fields: Array<[field: string, value: string | undefined, max: number]>): void {
  for (const [field, value, max] of fields) {
    if (value !== undefined && value.length > max && chars(value) > max) {
      throw invalidArgument(field, `must be at most ${max} characters`, 'FIELD_TOO_LARGE');
    }
  }
}

const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());
const expectedRevision = z.number().int().min(1, 'must be a revision (1 or more)').optional();
const displayName = z.string();
const description = z.string();
const email = z.union([z.literal(''), z.string().email('must be an email address')]);
const username = z.string().regex(USERNAME, 'must be 1-150 letters, digits or . _ @ + -, starting with a letter or digit');
const llmClientName = z
  .string()
  .regex(LLM_CLIENT_NAME, 'must be 1-63 lower-case letters and digits, starting with a letter (it is the first label of the client URL)');
const pluginName = z.string().regex(PLUGIN_NAME, 'must be a letter, then up to 63 letters, digits, _ or -');
const pageSize = z.number().int().min(0, 'must not be negative');

const createAccount = z.object({
  accountNumber: optionalString.pipe(z.string().regex(ACCOUNT_NUMBER, 'must look like 1234-5678-9012').optional()),
  displayName,
  requestId,
});
const getAccount = z.object({ id: optionalString.pipe(uuid.optional()), accountNumber: optionalString });
const createUserProfile = z.object({ accountId: uuid, username, email, requestId });
const byId = z.object({ id: uuid });
const deleteById = z.object({ id: uuid, expectedRevision, requestId });
const createApiKey = z.object({ userProfileId: uuid, description, requestId });
const createOwned = (name: z.ZodType<string>) => z.object({ accountId: uuid, name, description, requestId });
const listOf = z.object({ accountId: uuid, pageSize, pageToken: optionalString });
const listAccounts = z.object({ pageSize, pageToken: optionalString });
const listApiKeys = z.object({
  accountId: optionalString.pipe(uuid.optional()),
  userProfileId: optionalString.pipe(uuid.optional()),
  pageSize,
  pageToken: optionalString,
});

const purgeExpiredData = z.object({
  olderThan: z.object(
    { seconds: z.number().int().min(0, 'must not be negative').max(100 * 365 * 86_400, 'must be at most 100 years'), nanos: z.number().int().min(0).max(999_999_999) },
    { error: 'is required' },
  ),
  batchSize: z.number().int().min(0, 'must not be negative').max(100_000, 'must be at most 100000'),
});

/** Every path of a resource that names a field, and which of those an update may change. */
interface MaskSpec<F extends string> {
  resource: string;
  updatable: readonly F[];
  /** Fields that exist but cannot be changed (OUTPUT_ONLY or IMMUTABLE). */
  fixed: readonly string[];
}

/**
 * AIP-134 with one deliberate choice: the mask is required (`*` selects every updatable field), because
 * proto3 sends an empty string for both "clear the description" and "left it alone". A path that names no
 * updatable field is INVALID_ARGUMENT on update_mask, reason UPDATE_MASK_INVALID, naming the path.
 */
export function maskFields<F extends string>(paths: string[] | undefined, spec: MaskSpec<F>): Set<F> {
  const all = spec.updatable.join(', ');
  if (!paths || paths.length === 0) throw invalidArgument('update_mask', `is required: list fields among ${all}, or *`, 'UPDATE_MASK_INVALID');
  const fields = new Set<F>();
  for (const p of paths) {
    if (p === '*') spec.updatable.forEach((f) => fields.add(f));
    else if ((spec.updatable as readonly string[]).includes(p)) fields.add(p as F);
    else if (spec.fixed.includes(p)) throw invalidArgument('update_mask', `${quote(p)} cannot be changed (updatable: ${all})`, 'UPDATE_MASK_INVALID');
    else throw invalidArgument('update_mask', `${quote(p)} names no field of ${spec.resource} (updatable: ${all})`, 'UPDATE_MASK_INVALID');
  }
  return fields;
}

const fixed = (...f: string[]) => ['id', 'create_time', 'update_time', 'revision', ...f];
const ACCOUNT_MASK: MaskSpec<'display_name'> = { resource: 'Account', updatable: ['display_name'], fixed: fixed('account_number') };
const PROFILE_MASK: MaskSpec<'username' | 'email'> = { resource: 'UserProfile', updatable: ['username', 'email'], fixed: fixed('account_id') };
const KEY_MASK: MaskSpec<'description'> = {
  resource: 'ApiKey',
  updatable: ['description'],
  fixed: fixed('user_profile_id', 'account_id', 'revoke_time', 'key_prefix'),
};
const ownedMask = (resource: string): MaskSpec<'name' | 'description'> => ({ resource, updatable: ['name', 'description'], fixed: fixed('account_id') });

/** The id, expected revision and request id of an Update request whose resource sits in `field`. */
function conditionsOf(field: string, req: { expectedRevision?: number | undefined; requestId: string }, id: string | undefined): { id: string } & Conditions {
  if (!uuid.safeParse(id ?? '').success) throw invalidArgument(`${field}.id`, 'must be a UUID');
  const r = parseInput(z.object({ expectedRevision, requestId }), { expectedRevision: req.expectedRevision, requestId: req.requestId });
  return { id: id!, ...r };
}

/** Parses one updatable field of `resource`: size first (FIELD_TOO_LARGE), then its rule. */
function patchField<T>(prefix: string, field: string, value: string, max: number, schema: z.ZodType<T>): T {
  const path = `${prefix}.${field}`;
  checkSizes([[path, value, max]]);
  const r = schema.safeParse(value);
  if (!r.success) throw invalidArgument(path, r.error.issues[0]?.message ?? 'is invalid');
  return r.data;
}

export function adminHandlers(admin: AdminService, maintenance: Maintenance): ServiceHandlers<AdminServiceServer> {
  const L = ADMIN_TEXT_LIMITS;
  return {
    purgeExpiredData: unary(async (req) => {
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
    }),

    // --- Accounts ---
    createAccount: unary(async (req: any) => {
      checkSizes([
        ['account_number', req.accountNumber, L.account_number],
        ['display_name', req.displayName, L.display_name],
      ]);
      const r = parseInput(createAccount, req);
      return { account: toAccount(await admin.createAccount(r.accountNumber, r.displayName, r.requestId)) };
    }),
    getAccount: unary(async (req: any) => {
      checkSizes([['account_number', req.accountNumber, L.account_number]]);
      const r = parseInput(getAccount, req);
      if (!r.id && !r.accountNumber) throw invalidArgument('id', 'id or account_number is required');
      return { account: toAccount(await admin.getAccount(r)) };
    }),
    listAccounts: unary(async (req) => {
      const r = parseInput(listAccounts, req);
      const page = await admin.listAccounts(r);
      return { accounts: page.items.map(toAccount), nextPageToken: page.nextPageToken };
    }),
    updateAccount: unary(async (req: any) => {
      const fields = maskFields(req.updateMask, ACCOUNT_MASK);
      const c = conditionsOf('account', req, req.account?.id);
      const a = req.account ?? {};
      const patch = { displayName: fields.has('display_name') ? patchField('account', 'display_name', a.displayName ?? '', L.display_name, displayName) : undefined };
      const u = await admin.updateAccount(c.id, patch, c);
      return { account: toAccount(u.row), changed: u.changed };
    }),
    deleteAccount: unary(async (req) => {
      const r = parseInput(deleteById, req);
      await admin.deleteAccount(r.id, r);
      return {};
    }),

    // --- User profiles ---
    createUserProfile: unary(async (req: any) => {
      checkSizes([
        ['username', req.username, L.username],
        ['email', req.email, L.email],
      ]);
      const r = parseInput(createUserProfile, req);
      return { userProfile: toUserProfile(await admin.createUserProfile(r.accountId, r.username, r.email, r.requestId)) };
    }),
    getUserProfile: unary(async (req) => ({ userProfile: toUserProfile(await admin.getUserProfile(parseInput(byId, req).id)) })),
    listUserProfiles: unary(async (req) => {
      const r = parseInput(listOf, req);
      const page = await admin.listUserProfiles(r.accountId, r);
      return { userProfiles: page.items.map(toUserProfile), nextPageToken: page.nextPageToken };
    }),
    updateUserProfile: unary(async (req: any) => {
      const fields = maskFields(req.updateMask, PROFILE_MASK);
      const c = conditionsOf('user_profile', req, req.userProfile?.id);
      const p = req.userProfile ?? {};
      const patch = {
        username: fields.has('username') ? patchField('user_profile', 'username', p.username ?? '', L.username, username) : undefined,
        email: fields.has('email') ? patchField('user_profile', 'email', p.email ?? '', L.email, email) : undefined,
      };
      const u = await admin.updateUserProfile(c.id, patch, c);
      return { userProfile: toUserProfile(u.row), changed: u.changed };
    }),
    deleteUserProfile: unary(async (req) => {
      const r = parseInput(deleteById, req);
      await admin.deleteUserProfile(r.id, r);
      return {};
    }),

    // --- API keys ---
    createApiKey: unary(async (req: any) => {
      checkSizes([['description', req.description, L.description]]);
      const r = parseInput(createApiKey, req);
      const { key, secret } = await admin.createApiKey(r.userProfileId, r.description, r.requestId);
      return { apiKey: toApiKey(key), secret };
    }),
    getApiKey: unary(async (req) => ({ apiKey: toApiKey(await admin.getApiKey(parseInput(byId, req).id)) })),
    listApiKeys: unary(async (req) => {
      const r = parseInput(listApiKeys, req);
      const page = await admin.listApiKeys(r, r);
      return { apiKeys: page.items.map(toApiKey), nextPageToken: page.nextPageToken };
    }),
    updateApiKey: unary(async (req: any) => {
      const fields = maskFields(req.updateMask, KEY_MASK);
      const c = conditionsOf('api_key', req, req.apiKey?.id);
      const k = req.apiKey ?? {};
      const patch = { description: fields.has('description') ? patchField('api_key', 'description', k.description ?? '', L.description, description) : undefined };
      const u = await admin.updateApiKey(c.id, patch, c);
      return { apiKey: toApiKey(u.row), changed: u.changed };
    }),
    revokeApiKey: unary(async (req) => {
      const r = parseInput(deleteById, req);
      const u = await admin.revokeApiKey(r.id, r);
      return { apiKey: toApiKey(u.row), changed: u.changed };
    }),
    deleteApiKey: unary(async (req) => {
      const r = parseInput(deleteById, req);
      await admin.deleteApiKey(r.id, r);
      return {};
    }),

    // --- LLM clients ---
    createLlmClient: unary(async (req: any) => {
      checkSizes([
        ['name', req.name, L.llm_client_name],
        ['description', req.description, L.description],
      ]);
      const r = parseInput(createOwned(llmClientName), req);
      return { llmClient: toLlmClient(await admin.createLlmClient(r.accountId, r.name, r.description, r.requestId)) };
    }),
    getLlmClient: unary(async (req) => ({ llmClient: toLlmClient(await admin.getLlmClient(parseInput(byId, req).id)) })),
    listLlmClients: unary(async (req) => {
      const r = parseInput(listOf, req);
      const page = await admin.listLlmClients(r.accountId, r);
      return { llmClients: page.items.map(toLlmClient), nextPageToken: page.nextPageToken };
    }),
    updateLlmClient: unary(async (req: any) => {
      const fields = maskFields(req.updateMask, ownedMask('LlmClient'));
      const c = conditionsOf('llm_client', req, req.llmClient?.id);
      const o = req.llmClient ?? {};
      const patch = {
        name: fields.has('name') ? patchField('llm_client', 'name', o.name ?? '', L.llm_client_name, llmClientName) : undefined,
        description: fields.has('description') ? patchField('llm_client', 'description', o.description ?? '', L.description, description) : undefined,
      };
      const u = await admin.updateLlmClient(c.id, patch, c);
      return { llmClient: toLlmClient(u.row), changed: u.changed };
    }),
    deleteLlmClient: unary(async (req) => {
      const r = parseInput(deleteById, req);
      await admin.deleteLlmClient(r.id, r);
      return {};
    }),

    // --- Plugins ---
    createPlugin: unary(async (req: any) => {
      checkSizes([
        ['name', req.name, L.plugin_name],
        ['description', req.description, L.description],
      ]);
      const r = parseInput(createOwned(pluginName), req);
      return { plugin: toPlugin(await admin.createPlugin(r.accountId, r.name, r.description, r.requestId)) };
    }),
    getPlugin: unary(async (req) => ({ plugin: toPlugin(await admin.getPlugin(parseInput(byId, req).id)) })),
    listPlugins: unary(async (req) => {
      const r = parseInput(listOf, req);
      const page = await admin.listPlugins(r.accountId, r);
      return { plugins: page.items.map(toPlugin), nextPageToken: page.nextPageToken };
    }),
    updatePlugin: unary(async (req: any) => {
      const fields = maskFields(req.updateMask, ownedMask('Plugin'));
      const c = conditionsOf('plugin', req, req.plugin?.id);
      const o = req.plugin ?? {};
      const patch = {
        name: fields.has('name') ? patchField('plugin', 'name', o.name ?? '', L.plugin_name, pluginName) : undefined,
        description: fields.has('description') ? patchField('plugin', 'description', o.description ?? '', L.description, description) : undefined,
      };
      const u = await admin.updatePlugin(c.id, patch, c);
      return { plugin: toPlugin(u.row), changed: u.changed };
    }),
    deletePlugin: unary(async (req) => {
      const r = parseInput(deleteById, req);
      await admin.deletePlugin(r.id, r);
      return {};
    }),
  };
}
