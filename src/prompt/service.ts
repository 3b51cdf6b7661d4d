import type { Principal } from '../auth.js';
import { invalidArgument, notFound } from '../errors.js';
import type { AdminRepo, OwnedNameRow } from '../storage/admin-repo.js';
import type { PromptRepo, PromptRow } from '../storage/prompt-repo.js';
import type { PromptCache } from './cache.js';
import { DEFAULT_PROMPT_VERSION, defaultPromptName, newSessionKey, parseLlmClientUrl } from './rules.js';

export interface OpenPromptInput {
  sessionKey?: string | undefined;
  llmClientId?: string | undefined;
  llmClientUrl?: string | undefined;
  ipAddress: string;
  userAgent: string;
  url: string;
}

/** PromptHelper: gets or creates a caller's prompt session and serves it from the cache. */
export class PromptService {
  constructor(
    private readonly prompts: PromptRepo,
    private readonly admin: AdminRepo,
    private readonly cache: PromptCache,
  ) {}

  async open(caller: Principal, input: OpenPromptInput): Promise<{ prompt: PromptRow; created: boolean }> {
    if (input.sessionKey) {
      const found = await this.findBySessionKey(caller, input.sessionKey);
      if (found) return { prompt: found, created: false };
    }
    const llmClient = await this.resolveLlmClient(caller, input);
    if (!llmClient) {
      if (input.sessionKey) throw notFound(`prompt session ${input.sessionKey} (pass llm_client_id or llm_client_url to create it)`);
      throw invalidArgument('session_key', 'session_key, llm_client_id or llm_client_url is required');
    }
    const sessionKey = input.sessionKey ?? newSessionKey();
    const { row, created } = await this.prompts.insertOrGet({
      accountId: caller.accountId,
      userProfileId: caller.userProfileId,
      llmClientId: llmClient.id,
      name: defaultPromptName(sessionKey),
      description: '',
      version: DEFAULT_PROMPT_VERSION,
      annotations: {},
      tags: [],
      sessionKey,
      ipAddress: input.ipAddress,
      userAgent: input.userAgent,
      url: input.url,
    });
    // The key may belong to another account (a race or a guess): that is not the caller's session.
    if (row.accountId !== caller.accountId) throw notFound(`prompt session ${sessionKey}`);
    await this.cache.put(row);
    return { prompt: row, created };
  }

  async get(caller: Principal, by: { id?: string; sessionKey?: string }): Promise<PromptRow> {
    const row = by.sessionKey ? await this.findBySessionKey(caller, by.sessionKey) : await this.prompts.byId(by.id ?? '');
    if (!row || row.accountId !== caller.accountId) throw notFound(`prompt ${by.id ?? by.sessionKey}`);
    return row;
  }

  /** Cache first, then Postgres (filling the cache); another account's session reads as absent. */
  private async findBySessionKey(caller: Principal, sessionKey: string): Promise<PromptRow | undefined> {
    let row = await this.cache.get(sessionKey);
    if (!row) {
      row = await this.prompts.bySessionKey(sessionKey);
      if (row) await this.cache.put(row);
    }
    return row && row.accountId === caller.accountId ? row : undefined;
  }

  private async resolveLlmClient(caller: Principal, input: OpenPromptInput): Promise<OwnedNameRow | undefined> {
    if (input.llmClientId) {
      const c = await this.admin.ownedById('llm_clients', input.llmClientId);
      if (!c || c.accountId !== caller.accountId) throw notFound(`LLM client ${input.llmClientId}`);
      return c;
    }
    if (input.llmClientUrl) {
      const parsed = parseLlmClientUrl(input.llmClientUrl);
      if (!parsed) {
        throw invalidArgument('llm_client_url', 'must look like https://<client>.<NNNN-NNNN-NNNN>.<api domain>/…');
      }
      const account = await this.admin.accountById(caller.accountId);
      const c =
        account?.accountNumber === parsed.accountNumber
          ? await this.admin.ownedByName('llm_clients', caller.accountId, parsed.llmClientName)
          : undefined;
      if (!c) throw notFound(`LLM client ${parsed.llmClientName} of account ${parsed.accountNumber}`);
      return c;
    }
    return undefined;
  }
}
