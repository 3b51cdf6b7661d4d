import { randomUUID } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { ChatRole } from '../../../src/gen/parley/prompt/v1/prompt.js';
import { bearer, createTenant, rpc, type Tenant, type TestServer } from '../../helpers/harness.js';
import { genie, modelType } from '../../genie/fixtures.js';

/** What one tenant owns in the fuzz world: ids its calls use, so handlers' deep paths are reached. */
export interface Holdings {
  tenant: Tenant;
  promptIds: string[];
  sessionKeys: string[];
  sessionIds: string[];
  pluginIds: string[];
  pluginNames: string[];
  secondaryKeys: string[];
  /** API keys that may be revoked (never the one the fuzz calls use). */
  spareKeyIds: string[];
  /** A spare account with a profile, an LLM client and a plugin: what Update and Delete RPCs may hit. */
  spare: { accountId: string; userProfileId: string; llmClientId: string; pluginId: string };
}

export interface World {
  /** The tenant the fuzz calls act as. */
  self: Holdings;
  /** Another account whose key is used against `self`'s ids (and the other way round). */
  peer: Holdings;
  /** Ids of the victim, which runs steady valid calls beside the fuzz; only ever used across tenants. */
  victimIds: string[];
  /** Page tokens the server issued for `self`'s lists (first page of size 1), by list. */
  tokens: Record<'prompts' | 'history' | 'toolCalls' | 'pluginUsage' | 'plugins' | 'adminPlugins' | 'modelTypes' | 'sessions' | 'secondaryKeys' | 'dialogue', string[]>;
  /** Credentials: self, peer, admin, none and a made-up key. */
  md: Record<'self' | 'peer' | 'admin' | 'none' | 'bogus', Metadata>;
  modelTypes: string[];
}

const message = (content: string) => ({ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined });

/** A tenant with prompts, logs, plugins, model types, sessions and secondary storage. */
export async function populate(s: TestServer, tenant: Tenant): Promise<Holdings> {
  const p = s.prompt;
  const md = tenant.md;
  const pluginIds: string[] = [];
  const pluginNames = ['weather', 'search'];
  for (const name of pluginNames) pluginIds.push((await rpc(s.admin, s.admin.createPlugin, { accountId: tenant.accountId, name, description: '', requestId: '' }, s.adminMd)).plugin!.id);
  const promptIds: string[] = [];
  const sessionKeys: string[] = [];
  for (let i = 0; i < 2; i++) {
    const { prompt } = await rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '10.0.0.1', userAgent: 'fuzz', url: '', requestId: '' }, md);
    promptIds.push(prompt!.id);
    sessionKeys.push(prompt!.sessionKey);
    for (let j = 0; j < 2; j++) {
      await rpc(p, p.appendHistory, { promptId: prompt!.id, request: { q: j }, response: { a: j }, messages: [message(`hello ${j}`)], requestId: '' }, md);
      await rpc(p, p.recordToolCall, { promptId: prompt!.id, pluginId: pluginIds[0]!, functionName: 'get_weather', functionArgs: '{}', request: undefined, response: undefined, requestId: '' }, md);
      await rpc(p, p.recordPluginUsage, { promptId: prompt!.id, pluginId: pluginIds[1]!, inputText: 'x', requestId: '' }, md);
    }
  }
  const g = genie(s, tenant);
  await g.register(modelType());
  await g.register(modelType({ schemaVersion: 2 }));
  await g.register(modelType({ name: 'free', jsonSchema: undefined }));
  const sessionIds: string[] = [];
  for (let i = 0; i < 3; i++) sessionIds.push((await g.create(i === 2 ? 'free' : 'qa', { topic: `t${i}` })).sessionId);
  await g.send(sessionIds[0]!, 'user_input', 'question?');
  await g.append(sessionIds[0]!, 'system', 'a note');
  const secondaryKeys = ['doc', 'notes'];
  for (const k of secondaryKeys) await g.put(sessionIds[0]!, k, Buffer.from(`value of ${k}`));
  const spareKeyIds: string[] = [];
  for (let i = 0; i < 3; i++) spareKeyIds.push((await rpc(s.admin, s.admin.createApiKey, { userProfileId: tenant.userProfileId, description: 'spare', requestId: '' }, s.adminMd)).apiKey!.id);
  const a = s.admin;
  const { account } = await rpc(a, a.createAccount, { accountNumber: '', displayName: 'spare', requestId: '' }, s.adminMd);
  const spare = {
    accountId: account!.id,
    userProfileId: (await rpc(a, a.createUserProfile, { accountId: account!.id, username: 'spare', email: '', requestId: '' }, s.adminMd)).userProfile!.id,
    llmClientId: (await rpc(a, a.createLlmClient, { accountId: account!.id, name: 'spare', description: '', requestId: '' }, s.adminMd)).llmClient!.id,
    pluginId: (await rpc(a, a.createPlugin, { accountId: account!.id, name: 'spare', description: '', requestId: '' }, s.adminMd)).plugin!.id,
  };
  return { tenant, promptIds, sessionKeys, sessionIds, pluginIds, pluginNames, secondaryKeys, spareKeyIds, spare };
}

/** The fuzz world beside `victim` (populated at the same time, which is why it is a promise). */
export async function buildWorld(s: TestServer, victim: Promise<Holdings>): Promise<World> {
  const [self, peer, v] = await Promise.all([victim, createTenant(s).then((t) => populate(s, t)), createTenant(s).then((t) => populate(s, t))]);
  const p = s.prompt;
  const md = self.tenant.md;
  const promptId = self.promptIds[0]!;
  const sessionId = self.sessionIds[0]!;
  const first = { pageSize: 1, pageToken: '' };
  const tok = (t: string) => (t ? [t] : []);
  const tokens: World['tokens'] = {
    prompts: tok((await rpc(p, p.listPrompts, { filter: '', orderBy: '', showTotalSize: false, ...first, llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '' }, md)).nextPageToken),
    history: tok((await rpc(p, p.listHistory, { promptId, ...first }, md)).nextPageToken),
    toolCalls: tok((await rpc(p, p.listToolCalls, { promptId, ...first }, md)).nextPageToken),
    pluginUsage: tok((await rpc(p, p.listPluginUsage, { promptId, ...first }, md)).nextPageToken),
    plugins: tok((await rpc(p, p.listPlugins, first, md)).nextPageToken),
    adminPlugins: tok((await rpc(s.admin, s.admin.listPlugins, { accountId: self.tenant.accountId, ...first }, s.adminMd)).nextPageToken),
    modelTypes: tok((await rpc(s.genie, s.genie.listModelTypes, { name: '', ...first }, md)).nextPageToken),
    sessions: tok((await rpc(s.genie, s.genie.listSessions, { endUserId: '', modelType: '', state: '', filter: '', orderBy: '', showTotalSize: false, ...first }, md)).nextPageToken),
    secondaryKeys: tok((await rpc(s.genie, s.genie.listSecondaryKeys, { sessionId, ...first }, md)).nextPageToken),
    dialogue: tok((await rpc(s.genie, s.genie.listDialogue, { sessionId, revision: undefined, ...first }, md)).nextPageToken),
  };
  for (const [list, t] of Object.entries(tokens)) if (t.length === 0) throw new Error(`the world has a single page of ${list}: the fuzz could not reach its cursor`);
  const victimIds = [v.tenant.accountId, v.tenant.userProfileId, v.tenant.llmClientId, ...v.promptIds, ...v.sessionKeys, ...v.sessionIds, ...v.pluginIds];
  return {
    self,
    peer,
    victimIds,
    tokens,
    md: { self: md, peer: peer.tenant.md, admin: s.adminMd, none: new (md.constructor as new () => Metadata)(), bogus: bearer(`pk_${randomUUID()}`) },
    modelTypes: ['qa', 'free'],
  };
}
