import { z } from 'zod';
import type { AdminService } from '../admin/service.js';
import { ACCOUNT_NUMBER, LLM_CLIENT_NAME, PLUGIN_NAME, USERNAME } from '../admin/rules.js';
import type { AccountRow, ApiKeyRow, OwnedNameRow, UserProfileRow } from '../storage/admin-repo.js';
import type { Account, ApiKey, LlmClient, Plugin, UserProfile } from '../gen/parley/admin/v1/admin.js';
import { invalidArgument } from '../errors.js';
import { parseInput } from '../validate.js';
import { optionalString, uuid } from './convert.js';
import { unary, type Handler } from './rpc.js';
import type { Maintenance } from '../maintenance/purge.js';

export const toAccount = (r: AccountRow): Account => ({ ...r });
export const toUserProfile = (r: UserProfileRow): UserProfile => ({ ...r });
export const toApiKey = (r: ApiKeyRow): ApiKey => ({ ...r });
export const toLlmClient = (r: OwnedNameRow): LlmClient => ({ ...r });
export const toPlugin = (r: OwnedNameRow): Plugin => ({ ...r });

const displayName = z.string().max(200, 'must be at most 200 characters');
const description = z.string().max(2000, 'must be at most 2000 characters');

const createAccount = z.object({
  accountNumber: optionalString.pipe(z.string().regex(ACCOUNT_NUMBER, 'must look like 1234-5678-9012').optional()),
  displayName,
});
const getAccount = z.object({ id: optionalString.pipe(uuid.optional()), accountNumber: optionalString });
const createUserProfile = z.object({
  accountId: uuid,
  username: z.string().regex(USERNAME, 'must be 1-150 letters, digits or . _ @ + -'),
  email: z.union([z.literal(''), z.string().email('must be an email address')]),
});
const byId = z.object({ id: uuid });
const createApiKey = z.object({ userProfileId: uuid, description });
const createLlmClient = z.object({
  accountId: uuid,
  name: z.string().regex(LLM_CLIENT_NAME, 'must be 1-63 lower-case letters and digits, starting with a letter (it is the first label of the client URL)'),
  description,
});

const createPlugin = z.object({
  accountId: uuid,
  name: z.string().regex(PLUGIN_NAME, 'must be a letter, then up to 63 letters, digits, _ or -'),
  description,
});
const listPlugins = z.object({
  accountId: uuid,
  pageSize: z.number().int().min(0, 'must not be negative'),
  pageToken: optionalString,
});

const purgeExpiredData = z.object({
  olderThan: z.object(
    { seconds: z.number().int().min(0, 'must not be negative').max(100 * 365 * 86_400, 'must be at most 100 years'), nanos: z.number().int().min(0).max(999_999_999) },
    { error: 'is required' },
  ),
  batchSize: z.number().int().min(0, 'must not be negative').max(100_000, 'must be at most 100000'),
});

export function adminHandlers(admin: AdminService, maintenance: Maintenance): Record<string, Handler> {
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
    createAccount: unary(async (req) => {
      const r = parseInput(createAccount, req);
      return { account: toAccount(await admin.createAccount(r.accountNumber, r.displayName)) };
    }),
    getAccount: unary(async (req) => {
      const r = parseInput(getAccount, req);
      if (!r.id && !r.accountNumber) throw invalidArgument('id', 'id or account_number is required');
      return { account: toAccount(await admin.getAccount(r)) };
    }),
    createUserProfile: unary(async (req) => {
      const r = parseInput(createUserProfile, req);
      return { userProfile: toUserProfile(await admin.createUserProfile(r.accountId, r.username, r.email)) };
    }),
    getUserProfile: unary(async (req) => ({ userProfile: toUserProfile(await admin.getUserProfile(parseInput(byId, req).id)) })),
    createApiKey: unary(async (req) => {
      const r = parseInput(createApiKey, req);
      const { key, secret } = await admin.createApiKey(r.userProfileId, r.description);
      return { apiKey: toApiKey(key), secret };
    }),
    revokeApiKey: unary(async (req) => ({ apiKey: toApiKey(await admin.revokeApiKey(parseInput(byId, req).id)) })),
    createLlmClient: unary(async (req) => {
      const r = parseInput(createLlmClient, req);
      return { llmClient: toLlmClient(await admin.createLlmClient(r.accountId, r.name, r.description)) };
    }),
    getLlmClient: unary(async (req) => ({ llmClient: toLlmClient(await admin.getLlmClient(parseInput(byId, req).id)) })),
    createPlugin: unary(async (req) => {
      const r = parseInput(createPlugin, req);
      return { plugin: toPlugin(await admin.createPlugin(r.accountId, r.name, r.description)) };
    }),
    getPlugin: unary(async (req) => ({ plugin: toPlugin(await admin.getPlugin(parseInput(byId, req).id)) })),
    listPlugins: unary(async (req) => {
      const r = parseInput(listPlugins, req);
      const page = await admin.listPlugins(r.accountId, r);
      return { plugins: page.items.map(toPlugin), nextPageToken: page.nextPageToken };
    }),
  };
}
