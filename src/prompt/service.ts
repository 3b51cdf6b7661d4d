import { z } from 'zod';
import type { Principal } from '../principal.js';
import { invalidArgument, notFound, revisionMismatch } from '../errors.js';
import type { OwnedNameRow } from '../admin/store.js';
import type { KnexAdminStore as AdminRepo } from '../storage/admin-store.js';
import type { Bus } from '../ports/bus.js';
import { fingerprintOf } from '../fingerprint.js';
import { jsonCodec } from '../json-codec.js';
import { type Codec } from '../ports/unit-of-work.js';
import { type Idempotency } from '../storage/idempotency.js';
import type {
  HistoryRow,
  LogTable,
  PluginUsageRow,
  PromptFilter,
  PromptPatch,
  PromptRepo,
  PromptRow,
  Q,
  ToolCallRow,
} from '../storage/prompt-repo.js';
import type { PromptCache } from './cache.js';
import { afterCommit } from '../after-commit.js';
import { publishPromptEvent, type PromptEventKind } from './events.js';
import { toOpenAiMessage, type ChatMessageData } from './messages.js';
import { cursorInt, cursorOf, decodePageToken, isTimestampText, encodePageToken, pageSizeOf, splitPage, type Page, type PageRequest } from '../paging.js';
import { listPluginsOf } from '../admin/service.js';
import { DEFAULT_PROMPT_VERSION, defaultPromptName, historyMessages, newSessionKey, parseLlmClientUrl } from './rules.js';

export interface OpenPromptInput {
  sessionKey?: string | undefined;
  llmClientId?: string | undefined;
  llmClientUrl?: string | undefined;
  ipAddress: string;
  userAgent: string;
  url: string;
}

type Json = Record<string, unknown>;

export interface AppendHistoryInput {
  promptId: string;
  request: Json;
  response: Json;
  messages: ChatMessageData[];
}

export interface RecordToolCallInput {
  promptId: string;
  pluginId?: string | undefined;
  functionName: string;
  functionArgs: string;
  request: Json;
  response: Json;
}

export interface RecordPluginUsageInput {
  promptId: string;
  pluginId: string;
  inputText: string;
}

/** What PromptHelper.history serves, read from one snapshot. */
export interface PromptHistorySnapshot {
  prompt: PromptRow;
  /** The message list of the latest history entry (stored OpenAI form). */
  messages: unknown[];
  latest: HistoryRow | undefined;
  toolCalls: ToolCallRow[];
  pluginUsage: PluginUsageRow[];
  revision: number;
}

/** How many rows of each log GetPromptHistory returns (newest first); the List RPCs page through all. */
export const HISTORY_SNAPSHOT_LIMIT = 1000;

/**
 * Replies that carry stored content stop growing at this many bytes (the 4 MiB a gRPC client receives by
 * default, less room for the envelope). A page stops early before the item that would pass it; each stored
 * item is at most LOG_ENTRY_MAX_BYTES, so a page always has room for at least one.
 */
export const REPLY_BUDGET_BYTES = 3 * 1024 * 1024;

/** The encoded size of one item in a reply (the transport knows the wire form; the domain only adds up). */
export type SizeOf<T> = (item: T) => number;

/** The first items that fit `budget` bytes together (always at least one), and whether any were left out. */
export function fitBudget<T>(items: readonly T[], sizeOf: SizeOf<T>, budget = REPLY_BUDGET_BYTES): { fitted: T[]; cut: boolean } {
  let used = 0;
  const fitted: T[] = [];
  for (const item of items) {
    const n = sizeOf(item);
    if (fitted.length > 0 && used + n > budget) return { fitted, cut: true };
    used += n;
    fitted.push(item);
  }
  return { fitted, cut: false };
}

const method = (rpc: string) => `parley.prompt.v1.PromptService/${rpc}`;
// Request ids are per account: API keys of one account may retry each other's calls, other accounts
// can never collide with (or probe) them.
const scopeOf = (caller: Principal) => `account:${caller.accountId}`;

const rowDates = ['createdAt', 'updatedAt'] as const;
const promptCodec = jsonCodec<PromptRow>(rowDates);
const openCodec: Codec<{ prompt: PromptRow; created: boolean }> = {
  encode: (v) => v,
  decode: (j) => {
    const o = j as { prompt: unknown; created: boolean };
    return { prompt: promptCodec.decode(o.prompt), created: o.created };
  },
};
const updateCodec: Codec<{ prompt: PromptRow; changed: boolean }> = {
  encode: (v) => v,
  decode: (j) => {
    const o = j as { prompt: unknown; changed: boolean };
    return { prompt: promptCodec.decode(o.prompt), changed: o.changed };
  },
};
const revisionCodec = jsonCodec<{ revision: number }>();

const isIdCursor = cursorOf(z.object({ after: cursorInt(0) }).strict());
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// created_at as Postgres prints timestamptz, e.g. `2025-01-31 12:00:00.123456+00`.
const isPromptCursor = cursorOf(z.object({ createdAt: z.string().refine(isTimestampText), id: z.string().regex(UUID) }).strict());

/**
 * PromptHelper and the prompt logs. Every write is one Postgres transaction that also claims its request
 * id; cache evictions and bus events follow the commit, never precede it.
 */
export class PromptService {
  constructor(
    private readonly prompts: PromptRepo,
    private readonly admin: AdminRepo,
    private readonly cache: PromptCache,
    private readonly idempotency: Idempotency,
    private readonly bus: Bus,
  ) {}

  async open(caller: Principal, input: OpenPromptInput, requestId?: string): Promise<{ prompt: PromptRow; created: boolean }> {
    // The common case, a known session without a request id, writes nothing: one cache read answers it,
    // with no transaction and no re-fill. (With a request id, a repeat must replay the first answer, e.g.
    // created: true, so that path keeps the idempotency record.)
    let token: string | undefined;
    if (input.sessionKey && !requestId) {
      const cached = await this.cache.get(input.sessionKey);
      const row = cached.row && (await this.withRevision(cached.row));
      if (row && row.accountId === caller.accountId) return { prompt: row, created: false };
      token = cached.token;
    }
    const { value } = await this.idempotency.runKnex(
      this.key(caller, 'OpenPrompt', requestId, input),
      openCodec,
      (trx) => this.openIn(trx, caller, input),
      (v) => v.prompt.id,
    );
    // A fill needs a token taken before the transaction read, or it could race an update. A session this
    // call created under a key it generated is the exception: nobody else can know the key before we
    // answer, so a token taken now is early enough (and the next OpenPrompt by key is a hit).
    if (token === undefined && value.created && !input.sessionKey) token = (await this.cache.get(value.prompt.sessionKey)).token;
    if (token !== undefined) await this.cache.put(value.prompt, token);
    return value;
  }

  private async openIn(trx: Q, caller: Principal, input: OpenPromptInput): Promise<{ prompt: PromptRow; created: boolean }> {
    if (input.sessionKey) {
      const found = await this.findBySessionKey(caller, input.sessionKey, trx);
      if (found) return { prompt: found, created: false };
    }
    const llmClient = await this.resolveLlmClient(caller, input, trx);
    if (!llmClient) {
      if (input.sessionKey) throw notFound`prompt session ${input.sessionKey} (pass llm_client_id or llm_client_url to create it)`;
      throw invalidArgument('session_key', 'session_key, llm_client_id or llm_client_url is required');
    }
    const sessionKey = input.sessionKey ?? newSessionKey();
    const { row, created } = await this.prompts.insertOrGet(
      {
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
      },
      trx,
    );
    // The key may belong to another account (a race or a guess): that is not the caller's session.
    if (row.accountId !== caller.accountId) throw notFound`prompt session ${sessionKey}`;
    return { prompt: row, created };
  }

  async get(caller: Principal, by: { id?: string | undefined; sessionKey?: string | undefined }): Promise<PromptRow> {
    const row = by.sessionKey ? await this.findBySessionKey(caller, by.sessionKey) : await this.prompts.byId(by.id ?? '');
    if (!row || row.accountId !== caller.accountId) throw notFound`prompt ${by.id ?? by.sessionKey}`;
    return row;
  }

  async list(caller: Principal, filter: PromptFilter, page: PageRequest): Promise<Page<PromptRow>> {
    const size = pageSizeOf(page.pageSize);
    const filters = { ...filter, createdAfter: filter.createdAfter?.toISOString(), createdBefore: filter.createdBefore?.toISOString() };
    const after = decodePageToken(page.pageToken, 'prompts', filters, isPromptCursor);
    const rows = await this.prompts.list(caller.accountId, filter, after, size + 1);
    const { page: items, more } = splitPage(rows, size);
    const last = items[items.length - 1];
    return { items: items.map((r) => r.row), nextPageToken: more && last ? encodePageToken('prompts', filters, last.cursor) : '' };
  }

  async update(
    caller: Principal,
    id: string,
    patch: PromptPatch,
    expectedRevision: number | undefined,
    requestId?: string,
  ): Promise<{ prompt: PromptRow; changed: boolean }> {
    const { value, replayed } = await this.idempotency.runKnex(
      this.key(caller, 'UpdatePrompt', requestId, { id, patch, expectedRevision }),
      updateCodec,
      async (trx) => {
        const out = await this.prompts.update(caller.accountId, id, patch, expectedRevision, trx);
        if (out.kind === 'missing') throw notFound`prompt ${id}`;
        if (out.kind === 'mismatch') throw revisionMismatch(out.revision);
        return { prompt: out.row, changed: out.kind === 'updated' };
      },
      (v) => v.prompt.id,
    );
    if (value.changed) {
      await afterCommit(
        () => this.cache.evict(value.prompt.sessionKey),
        () => (replayed ? Promise.resolve() : this.publish('prompt_updated', id, value.prompt.revision, value.prompt)),
      );
    }
    return value;
  }

  /**
   * Deletes the prompt and its logs; resolves to its revision when deleted. A repeated request id replays
   * success; without one, a second call is NOT_FOUND.
   */
  async delete(caller: Principal, id: string, expectedRevision: number | undefined, requestId?: string): Promise<number> {
    // The cached row carries the prompt's content: drop it before deleting, so a store that cannot be
    // reached fails the call with nothing deleted rather than leave a copy readable after a success.
    const before = await this.prompts.byId(id);
    if (before && before.accountId === caller.accountId) await this.cache.evict(before.sessionKey);
    let deleted: PromptRow | undefined;
    const { value } = await this.idempotency.runKnex(this.key(caller, 'DeletePrompt', requestId, { id, expectedRevision }), revisionCodec, async (trx) => {
      const out = await this.prompts.delete(caller.accountId, id, expectedRevision, trx);
      if (out.kind === 'missing') throw notFound`prompt ${id}`;
      if (out.kind === 'mismatch') throw revisionMismatch(out.revision);
      deleted = out.row;
      return { revision: out.row.revision };
    });
    // Set only when this call deleted it (a replay deleted nothing and has nothing to announce).
    const d = deleted;
    if (d) {
      await afterCommit(
        () => this.cache.evict(d.sessionKey),
        () => this.publish('prompt_deleted', id, d.revision, { id }),
      );
    }
    return value.revision;
  }

  async appendHistory(caller: Principal, input: AppendHistoryInput, requestId?: string): Promise<HistoryRow> {
    if (!requestId) {
      // Nothing to claim: the bump and the insert go as one statement, with no transaction around them.
      const value = await this.prompts.appendHistory(caller.accountId, {
        promptId: input.promptId,
        request: input.request,
        response: input.response,
        messages: input.messages.map(toOpenAiMessage),
      });
      if (!value) throw notFound`prompt ${input.promptId}`;
      await this.publish('history', input.promptId, value.revision, value);
      return value;
    }
    return this.logWrite(caller, 'AppendHistory', 'history', input, requestId, historyCodec, (trx, revision) =>
      this.prompts.insertHistory(
        { promptId: input.promptId, request: input.request, response: input.response, messages: input.messages.map(toOpenAiMessage), revision },
        trx,
      ),
    );
  }

  async recordToolCall(caller: Principal, input: RecordToolCallInput, requestId?: string): Promise<ToolCallRow> {
    return this.logWrite(caller, 'RecordToolCall', 'tool_call', input, requestId, toolCallCodec, async (trx, revision) => {
      if (input.pluginId) await this.requirePlugin(caller, input.pluginId, trx);
      return this.prompts.insertToolCall({ ...input, pluginId: input.pluginId, revision }, trx);
    });
  }

  async recordPluginUsage(caller: Principal, input: RecordPluginUsageInput, requestId?: string): Promise<PluginUsageRow> {
    return this.logWrite(caller, 'RecordPluginUsage', 'plugin_usage', input, requestId, pluginUsageCodec, async (trx, revision) => {
      await this.requirePlugin(caller, input.pluginId, trx);
      return this.prompts.insertPluginUsage({ ...input, revision }, trx);
    });
  }

  listHistory(caller: Principal, promptId: string, page: PageRequest, sizeOf: SizeOf<HistoryRow>): Promise<Page<HistoryRow>> {
    return this.listLog(caller, 'prompt_history', promptId, page, sizeOf);
  }

  listToolCalls(caller: Principal, promptId: string, page: PageRequest, sizeOf: SizeOf<ToolCallRow>): Promise<Page<ToolCallRow>> {
    return this.listLog(caller, 'prompt_tool_calls', promptId, page, sizeOf);
  }

  listPluginUsage(caller: Principal, promptId: string, page: PageRequest, sizeOf: SizeOf<PluginUsageRow>): Promise<Page<PluginUsageRow>> {
    return this.listLog(caller, 'prompt_plugin_usage', promptId, page, sizeOf);
  }

  /** PromptHelper.history: the prompt, its latest messages, its tool calls and plugin usage. */
  async history(caller: Principal, by: { id?: string | undefined; sessionKey?: string | undefined }): Promise<PromptHistorySnapshot> {
    return this.prompts.snapshot(async (trx) => {
      const prompt = by.sessionKey ? await this.prompts.bySessionKey(by.sessionKey, trx) : await this.prompts.byId(by.id ?? '', trx);
      if (!prompt || prompt.accountId !== caller.accountId) throw notFound`prompt ${by.id ?? by.sessionKey}`;
      const [latest] = await this.prompts.recentLog('prompt_history', prompt.id, 1, trx);
      const toolCalls = await this.prompts.recentLog('prompt_tool_calls', prompt.id, HISTORY_SNAPSHOT_LIMIT, trx);
      const pluginUsage = await this.prompts.recentLog('prompt_plugin_usage', prompt.id, HISTORY_SNAPSHOT_LIMIT, trx);
      const revision = await this.prompts.revisionOf(prompt.id, trx);
      return { prompt, latest, messages: latest ? historyMessages(latest) : [], toolCalls, pluginUsage, revision };
    });
  }

  async listPlugins(caller: Principal, page: PageRequest): Promise<Page<OwnedNameRow>> {
    return listPluginsOf(this.admin, caller.accountId, page);
  }

  /** Retention: deletes prompts idle since before `now - olderThanMs`, with their logs, batch by batch. */
  async purgeIdle(opts: { olderThanMs: number; now?: Date; batchSize?: number }): Promise<PurgeReport> {
    const cutoff = new Date((opts.now ?? new Date()).getTime() - opts.olderThanMs);
    const batchSize = opts.batchSize ?? 500;
    const report: PurgeReport = { prompts: 0, history: 0, toolCalls: 0, pluginUsage: 0, batches: 0, requestIds: 0 };
    for (;;) {
      const b = await this.prompts.purgeIdleBatch(cutoff, batchSize);
      if (b.prompts.length === 0) break;
      report.batches++;
      report.prompts += b.prompts.length;
      report.history += b.history;
      report.toolCalls += b.toolCalls;
      report.pluginUsage += b.pluginUsage;
      for (const p of b.prompts) {
        await afterCommit(
          () => this.cache.evict(p.sessionKey),
          () => this.publish('prompt_deleted', p.id, p.revision, { id: p.id }),
        );
      }
      if (b.prompts.length < batchSize) break;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
    report.requestIds = await this.idempotency.expire({ now: opts.now });
    return report;
  }

  private async logWrite<T extends { revision: number }>(
    caller: Principal,
    rpc: string,
    kind: PromptEventKind,
    input: { promptId: string },
    requestId: string | undefined,
    codec: Codec<T>,
    insert: (trx: Q, revision: number) => Promise<T>,
  ): Promise<T> {
    const { value, replayed } = await this.idempotency.runKnex(this.key(caller, rpc, requestId, input), codec, async (trx) => {
      const revision = await this.prompts.bumpRevision(caller.accountId, input.promptId, trx);
      if (revision === undefined) throw notFound`prompt ${input.promptId}`;
      return insert(trx, revision);
    }, () => input.promptId);
    if (!replayed) await this.publish(kind, input.promptId, value.revision, value);
    return value;
  }

  /** One page in creation order: at most the page size, and cut before the item that would pass the reply budget. */
  private async listLog<T extends LogTable, R extends { seq: number }>(caller: Principal, table: T, promptId: string, page: PageRequest, sizeOf: SizeOf<R>) {
    const size = pageSizeOf(page.pageSize);
    const after = decodePageToken(page.pageToken, table, { promptId }, isIdCursor);
    const prompt = await this.prompts.byId(promptId);
    if (!prompt || prompt.accountId !== caller.accountId) throw notFound`prompt ${promptId}`;
    const rows = (await this.prompts.listLog(table, promptId, after?.after ?? 0, size + 1)) as unknown as R[];
    const { page: sized, more } = splitPage(rows, size);
    const { fitted: items, cut } = fitBudget(sized, sizeOf);
    const last = items[items.length - 1];
    return { items, nextPageToken: (more || cut) && last ? encodePageToken(table, { promptId }, { after: last.seq }) : '' };
  }

  private key(caller: Principal, rpc: string, requestId: string | undefined, request: unknown) {
    // The fingerprint only tells a retry from a reused request id; without an id nothing reads it.
    return { scope: scopeOf(caller), method: method(rpc), requestId, fingerprint: requestId ? fingerprintOf(request) : '' };
  }

  private async publish(kind: PromptEventKind, promptId: string, revision: number, row: unknown): Promise<void> {
    await publishPromptEvent(this.bus, { kind, promptId, revision, row });
  }

  /** Another account's plugin reads as absent: its id is never accepted, nor confirmed to exist. */
  private async requirePlugin(caller: Principal, pluginId: string, trx: Q): Promise<void> {
    const plugin = await this.admin.ownedById('plugins', pluginId, trx);
    if (!plugin || plugin.accountId !== caller.accountId) throw notFound`plugin ${pluginId}`;
  }

  /**
   * A cached row with its current revision. The cache holds the prompt's content, which only UpdatePrompt
   * changes (and evicts); the revision also moves with every log write, so it is read from Postgres (a
   * primary-key read of one column) rather than evicting the cache on every log write. Undefined when the
   * prompt is gone.
   */
  private async withRevision(row: PromptRow, q?: Q): Promise<PromptRow | undefined> {
    const revision = await this.prompts.revisionOf(row.id, q);
    return revision === 0 ? undefined : { ...row, revision };
  }

  /** Cache first, then Postgres (filling the cache); another account's session reads as absent. */
  private async findBySessionKey(caller: Principal, sessionKey: string, q?: Q): Promise<PromptRow | undefined> {
    const cached = await this.cache.get(sessionKey);
    let row = cached.row && (await this.withRevision(cached.row, q));
    if (!row) {
      row = await this.prompts.bySessionKey(sessionKey, q);
      if (row) await this.cache.put(row, cached.token);
    }
    return row && row.accountId === caller.accountId ? row : undefined;
  }

  private async resolveLlmClient(caller: Principal, input: OpenPromptInput, q: Q): Promise<OwnedNameRow | undefined> {
    if (input.llmClientId) {
      const c = await this.admin.ownedById('llm_clients', input.llmClientId, q);
      if (!c || c.accountId !== caller.accountId) throw notFound`LLM client ${input.llmClientId}`;
      return c;
    }
    if (input.llmClientUrl) {
      const parsed = parseLlmClientUrl(input.llmClientUrl);
      if (!parsed) {
        throw invalidArgument('llm_client_url', 'must look like https://<client>.<NNNN-NNNN-NNNN>.<api domain>/…');
      }
      const account = await this.admin.accountById(caller.accountId, q);
      const c =
        account?.accountNumber === parsed.accountNumber
          ? await this.admin.ownedByName('llm_clients', caller.accountId, parsed.llmClientName, q)
          : undefined;
      if (!c) throw notFound`LLM client ${parsed.llmClientName} of account ${parsed.accountNumber}`;
      return c;
    }
    return undefined;
  }
}

export interface PurgeReport {
  prompts: number;
  history: number;
  toolCalls: number;
  pluginUsage: number;
  batches: number;
  requestIds: number;
}

const historyCodec = jsonCodec<HistoryRow>(rowDates);
const toolCallCodec = jsonCodec<ToolCallRow>(rowDates);
const pluginUsageCodec = jsonCodec<PluginUsageRow>(rowDates);
