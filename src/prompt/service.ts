import { z } from 'zod';
import type { Principal } from '../principal.js';
import { alreadyExists, failedPrecondition, notFound, revisionMismatch } from '../errors.js';
import type { Bus } from '../ports/bus.js';
import { fingerprintOf } from '../fingerprint.js';
import { zodCodec } from '../json-codec.js';
import { UNRECORDED, unrecorded, type Codec, type RequestKey, type Tx, type UnitOfWork } from '../ports/unit-of-work.js';
import { afterCommit } from '../after-commit.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { cursorInt, cursorOf, cursorString, decodePageToken, isTimestampText, encodePageToken, pageSizeOf, splitPage, type Page, type PageRequest } from '../paging.js';
import { noLabels, type Labels } from '../labels.js';
import { millisecondBounds, type Order, type Restriction } from '../filter.js';
import type { PromptCache } from './cache.js';
import { promptEvents, publishPromptEvent, type PromptEvent } from './events.js';
import { toOpenAiMessage, type ChatMessageData } from './messages.js';
import { changedFields, DEFAULT_PROMPT_VERSION, defaultPromptName, historyMessages, newSessionKey } from './rules.js';
import {
  historyRowSchema,
  pluginUsageRowSchema,
  promptRowSchema,
  toolCallRowSchema,
  type DeletedLogs,
  type GonePrompt,
  type HistoryRow,
  type ImportedLog,
  type LogRows,
  type LogTable,
  type OwnedRef,
  type PluginUsageRow,
  type PromptDirectory,
  type PromptFilter,
  type PromptOrder,
  type PromptPatch,
  type PromptRow,
  type PromptStore,
  type RequestIdExpiry,
  type ToolCallRow,
} from './store.js';

/** The LLM client a new session is for: by id, or by the name and account number its URL carries. */
export type LlmClientRef = { id: string } | { name: string; accountNumber: string };

export interface OpenPromptInput {
  sessionKey?: string | undefined;
  /** Required to create a session; a known session key needs none. */
  llmClient?: LlmClientRef | undefined;
  ipAddress: string;
  userAgent: string;
  url: string;
  /** The end user a new session belongs to; set on an existing one, it must be that session's own. */
  endUserId?: string | undefined;
  /** Labels of a new session (ignored for an existing one); undefined: none. */
  labels?: Labels | undefined;
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

/** A prompt and its logs as ImportPrompt writes them (checked by the transport as the write RPCs check theirs). */
export interface ImportPromptInput {
  sessionKey: string;
  /** Empty derives one from the session key. */
  name: string;
  description: string;
  version: string;
  annotations: Record<string, string>;
  tags: string[];
  ipAddress: string;
  userAgent: string;
  url: string;
  endUserId: string;
  llmClientId: string;
  /** Checked (labels.ts); null-prototype. */
  labels: Record<string, string>;
  createdAt: Date;
  updatedAt: Date;
  /** In the order they came; history messages in ChatMessageData form. */
  logs: ImportLogInput[];
}

export type ImportLogInput =
  | ({ table: 'prompt_history'; createdAt: Date } & Omit<AppendHistoryInput, 'promptId'>)
  | ({ table: 'prompt_tool_calls'; createdAt: Date } & Omit<RecordToolCallInput, 'promptId'>)
  | ({ table: 'prompt_plugin_usage'; createdAt: Date } & Omit<RecordPluginUsageInput, 'promptId'>);

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

export interface PurgeReport {
  prompts: number;
  history: number;
  toolCalls: number;
  pluginUsage: number;
  batches: number;
  requestIds: number;
}

/** What erasing one end user's prompts deleted. */
export interface EndUserPromptsErased {
  prompts: number;
  history: number;
  toolCalls: number;
  pluginUsage: number;
  requestIds: number;
}

/**
 * OpenPrompt of an existing session naming an end user: only its own. Leaving the end user out opens any
 * session (a gateway resuming by key need not repeat it).
 */
function checkEndUser(row: PromptRow, endUserId: string | undefined): PromptRow {
  if (sameEndUser(row, endUserId)) return row;
  throw failedPrecondition(
    `prompt session ${row.id} belongs to ${row.endUserId ? 'another end user' : 'no end user'}; its end user is set on creation and never changes`,
    'END_USER_MISMATCH',
    [{ type: 'END_USER', subject: `prompt/${row.id}`, description: 'end_user_id differs from the session\'s own' }],
  );
}

const sameEndUser = (row: PromptRow, endUserId: string | undefined) => endUserId === undefined || row.endUserId === endUserId;

/** How many rows of each log GetPromptHistory returns (newest first); the List RPCs page through all. */
const HISTORY_SNAPSHOT_LIMIT = 1000;

/**
 * Replies that carry stored content stop growing at this many bytes (the 4 MiB a gRPC client receives by
 * default, less room for the envelope). A page stops early before the item that would pass it; each stored
 * item is at most LOG_ENTRY_MAX_BYTES, so a page always has room for at least one.
 */
export const REPLY_BUDGET_BYTES = 3 * 1024 * 1024;

/** The encoded size of one item in a reply (the transport knows the wire form; the domain only adds up). */
export type SizeOf<T> = (item: T) => number;

/** The first items that fit `budget` bytes together (always at least one), and whether any were left out. */
function fitBudget<T>(items: readonly T[], sizeOf: SizeOf<T>, budget = REPLY_BUDGET_BYTES): { fitted: T[]; cut: boolean } {
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

/** Where a keyset page comes from: its list's name and filters (bound into the token), cursor and rows. */
interface KeysetList<R, C> {
  list: string;
  filters: unknown;
  isCursor: (c: unknown) => c is C;
  fetch: (after: C | undefined, limit: number) => Promise<R[]>;
  cursorOf: (row: R) => C;
  sizeOf?: SizeOf<R> | undefined;
}

/** One page: at most the page size, cut before the item that would pass the reply budget (when sized). */
async function keysetPage<R, C>(page: PageRequest, l: KeysetList<R, C>): Promise<Page<R>> {
  const size = pageSizeOf(page.pageSize);
  const after = decodePageToken(page.pageToken, l.list, l.filters, l.isCursor);
  const { page: sized, more } = splitPage(await l.fetch(after, size + 1), size);
  const { fitted: items, cut } = l.sizeOf ? fitBudget(sized, l.sizeOf) : { fitted: sized, cut: false };
  const last = items[items.length - 1];
  return { items, nextPageToken: (more || cut) && last ? encodePageToken(l.list, l.filters, l.cursorOf(last)) : '' };
}

const method = (rpc: string) => `parley.prompt.v1.PromptService/${rpc}`;
// Request ids are per account: API keys of one account may retry each other's calls, other accounts
// can never collide with (or probe) them.
const scopeOf = (caller: Principal) => `account:${caller.accountId}`;

const openCodec = zodCodec(z.object({ prompt: promptRowSchema, created: z.boolean() }));
const updateCodec = zodCodec(z.object({ prompt: promptRowSchema, changed: z.boolean() }));
const revisionCodec = zodCodec(z.object({ revision: z.number().int() }));
const importCodec = zodCodec(z.object({ prompt: promptRowSchema }));
const historyCodec = zodCodec(historyRowSchema);
const toolCallCodec = zodCodec(toolCallRowSchema);
const pluginUsageCodec = zodCodec(pluginUsageRowSchema);

const isIdCursor = cursorOf(z.object({ after: cursorInt(0) }).strict());
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// created_at as Postgres prints timestamptz, e.g. `2025-01-31 12:00:00.123456+00`.
const isPromptCursor = cursorOf(z.object({ createdAt: z.string().refine(isTimestampText), id: z.string().regex(UUID) }).strict());
// The same list and cursor as AdminService.ListPlugins, so a page token of either continues in both.
const isPluginCursor = cursorOf(z.object({ name: cursorString(64) }).strict());

export interface PromptUseCasesDeps {
  store: PromptStore;
  directory: PromptDirectory;
  cache: PromptCache;
  /** Runs each write in one transaction, at most once per request id; and expires old request ids. */
  unitOfWork: UnitOfWork & RequestIdExpiry;
  bus: Bus;
  /** Where contained cache and bus failures are reported; nothing by default. */
  telemetry?: Telemetry;
}

/**
 * PromptHelper and the prompt logs. Every write is one transaction that also claims its request id; cache
 * fences and bus events follow the commit (afterCommit), never precede it.
 */
export class PromptUseCases {
  private readonly store: PromptStore;
  private readonly directory: PromptDirectory;
  private readonly cache: PromptCache;
  private readonly unitOfWork: UnitOfWork & RequestIdExpiry;
  private readonly bus: Bus;
  private readonly telemetry: Telemetry;

  constructor(deps: PromptUseCasesDeps) {
    ({ store: this.store, directory: this.directory, cache: this.cache, unitOfWork: this.unitOfWork, bus: this.bus } = deps);
    this.telemetry = deps.telemetry ?? noTelemetry;
  }

  async open(caller: Principal, input: OpenPromptInput, requestId?: string): Promise<{ prompt: PromptRow; created: boolean }> {
    // The common case, a known session without a request id, writes nothing: one cache read answers it,
    // with no transaction and no re-fill. (With a request id, a repeat must replay the first answer, e.g.
    // created: true, so that path keeps the idempotency record.)
    let token: string | undefined;
    if (input.sessionKey && !requestId) {
      const cached = await this.cache.get(input.sessionKey);
      const row = cached.row && (await this.withRevision(cached.row));
      // A copy whose end user differs is not trusted to refuse: the locked path below decides on Postgres.
      if (row && row.accountId === caller.accountId && sameEndUser(row, input.endUserId)) return { prompt: row, created: false };
      token = cached.token;
    }
    const { value } = await this.unitOfWork.run(
      this.key(caller, 'OpenPrompt', requestId, input),
      openCodec,
      (tx) => this.openIn(tx, caller, input),
      (v) => v.prompt.id,
    );
    // A fill needs a token taken before the transaction read, or it could race an update. A session this
    // call created under a key it generated is the exception: nobody else can know the key before we
    // answer, so a token taken now is early enough (and the next OpenPrompt by key is a hit).
    await afterCommit(this.telemetry, async () => {
      if (token === undefined && value.created && !input.sessionKey) token = (await this.cache.get(value.prompt.sessionKey)).token;
      if (token !== undefined) await this.cache.put(value.prompt, token);
    });
    return value;
  }

  private async openIn(tx: Tx, caller: Principal, input: OpenPromptInput): Promise<{ prompt: PromptRow; created: boolean }> {
    if (input.sessionKey) {
      const found = await this.findBySessionKey(caller, input.sessionKey, tx);
      if (found) {
        // A cached copy may predate end users (written by an older replica): Postgres has the say on a refusal.
        const current = sameEndUser(found, input.endUserId) ? found : ((await this.store.bySessionKey(input.sessionKey, tx)) ?? found);
        return { prompt: checkEndUser(current, input.endUserId), created: false };
      }
    }
    // The handler lets no request through with neither a session key nor an LLM client.
    if (!input.llmClient) throw notFound`prompt session ${input.sessionKey ?? ''} (pass llm_client_id or llm_client_url to create it)`;
    const llmClient = await this.resolveLlmClient(caller, input.llmClient, tx);
    const sessionKey = input.sessionKey ?? newSessionKey();
    const { row, created } = await this.store.insertOrGet(
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
        endUserId: input.endUserId ?? '',
        labels: input.labels ?? noLabels(),
      },
      tx,
    );
    // The key may belong to another account (a race or a guess): that is not the caller's session.
    if (row.accountId !== caller.accountId) throw notFound`prompt session ${sessionKey}`;
    // A racing open of the same new key may have created it first, for another end user.
    return { prompt: created ? row : checkEndUser(row, input.endUserId), created };
  }

  async get(caller: Principal, by: { id?: string | undefined; sessionKey?: string | undefined }): Promise<PromptRow> {
    const row = by.sessionKey ? await this.findBySessionKey(caller, by.sessionKey) : await this.store.byId(by.id ?? '');
    if (!row || row.accountId !== caller.accountId) throw notFound`prompt ${by.id ?? by.sessionKey}`;
    return row;
  }

  /**
   * A page of the account's prompts passing the typed filters and `query` (ANDed), newest first or in
   * `query.order`, with the count of all that match when `withTotal`.
   */
  async list(
    caller: Principal,
    filter: PromptFilter,
    page: PageRequest,
    query: { restrictions?: Restriction[]; order?: Order | undefined; withTotal?: boolean } = {},
  ): Promise<Page<PromptRow> & { totalSize: number }> {
    const restrictions = query.restrictions ?? [];
    // The filter and order join the token's filters only when set, so tokens issued before them stay valid.
    const filters = {
      ...filter,
      createdAfter: filter.createdAfter?.toISOString(),
      createdBefore: filter.createdBefore?.toISOString(),
      ...(restrictions.length ? { filter: restrictions } : {}),
      ...(query.order ? { orderBy: query.order } : {}),
    };
    const order: PromptOrder | undefined = query.order && { by: query.order.field === 'create_time' ? 'created' : 'updated', desc: query.order.desc };
    // Equalities of the filter narrow the typed fields; two different values of one field match nothing.
    const pick = (field: 'llm_client_id' | 'end_user_id', typed: string | undefined) => {
      const values = new Set([...(typed ? [typed] : []), ...restrictions.flatMap((r) => (r.kind === 'equals' && r.field === field ? [r.value] : []))]);
      return { value: [...values][0], none: values.size > 1 };
    };
    const llmClient = pick('llm_client_id', filter.llmClientId);
    const endUser = pick('end_user_id', filter.endUserId);
    const labels = new Map<string, string>();
    let conflicting = false;
    for (const r of restrictions) {
      if (r.kind !== 'label') continue;
      if (labels.has(r.key) && labels.get(r.key) !== r.value) conflicting = true;
      labels.set(r.key, r.value);
    }
    // A filter's llm_client_id that is not a UUID names no prompt (the column is a uuid: it must not reach it).
    if (llmClient.none || endUser.none || conflicting || (llmClient.value !== undefined && !UUID.test(llmClient.value))) {
      decodePageToken(page.pageToken, 'prompts', filters, isPromptCursor);
      return { items: [], nextPageToken: '', totalSize: 0 };
    }
    const stored: PromptFilter = {
      ...filter,
      llmClientId: llmClient.value,
      endUserId: endUser.value,
      labels: [...labels].map(([key, value]) => ({ key, value })),
      hasLabels: restrictions.flatMap((r) => (r.kind === 'has_label' ? [r.key] : [])),
      // Times compare at the millisecond the API shows (see millisecondBounds).
      times: restrictions.flatMap((r) => (r.kind === 'time' ? millisecondBounds(r).map((b) => ({ column: r.field === 'create_time' ? ('created' as const) : ('updated' as const), ...b })) : [])),
    };
    const p = await keysetPage(page, {
      list: 'prompts',
      filters,
      isCursor: isPromptCursor,
      fetch: (after, limit) => this.store.list(caller.accountId, stored, after, limit, order),
      cursorOf: (r) => r.cursor,
    });
    const totalSize = query.withTotal ? await this.store.count(caller.accountId, stored) : 0;
    return { items: p.items.map((r) => r.row), nextPageToken: p.nextPageToken, totalSize };
  }

  async update(
    caller: Principal,
    id: string,
    patch: PromptPatch,
    expectedRevision: number | undefined,
    requestId?: string,
  ): Promise<{ prompt: PromptRow; changed: boolean }> {
    const { value, replayed } = await this.unitOfWork.run(
      this.key(caller, 'UpdatePrompt', requestId, { id, patch, expectedRevision }),
      updateCodec,
      async (tx) => {
        const current = await this.lockForWrite(caller, id, expectedRevision, tx);
        const changes = changedFields(current, patch);
        if (Object.keys(changes).length === 0) return { prompt: current, changed: false };
        return { prompt: await this.store.applyPatch(id, changes, tx), changed: true };
      },
      (v) => v.prompt.id,
    );
    if (value.changed) {
      await afterCommit(this.telemetry, 
        () => this.cache.evict(value.prompt.sessionKey),
        () => (replayed ? Promise.resolve() : this.publish(promptEvents.updated(value.prompt))),
      );
    }
    return value;
  }

  /**
   * Deletes the prompt and its logs; resolves to its revision when deleted. A repeated request id replays
   * success; without one, a second call is NOT_FOUND.
   */
  async delete(caller: Principal, id: string, expectedRevision: number | undefined, requestId?: string): Promise<number> {
    // The cached row carries the prompt's content: drop it before deleting (see FencedCopies.evictBeforeDelete).
    const before = await this.store.byId(id);
    if (before && before.accountId === caller.accountId) await this.cache.evictBeforeDelete(before.sessionKey);
    let deleted: PromptRow | undefined;
    const { value } = await this.unitOfWork.run(this.key(caller, 'DeletePrompt', requestId, { id, expectedRevision }), revisionCodec, async (tx) => {
      const current = await this.lockForWrite(caller, id, expectedRevision, tx);
      await this.store.delete(id, tx);
      deleted = current;
      return { revision: current.revision };
    });
    // Set only when this call deleted it (a replay deleted nothing and has nothing to announce).
    if (deleted) await this.forgetDeleted([deleted]);
    return value.revision;
  }

  /**
   * After prompts are gone (deleted, purged, or taken by their account's deletion): the cache must not serve
   * them, and their watchers must hear of it.
   */
  async forgetDeleted(prompts: readonly GonePrompt[]): Promise<void> {
    for (const p of prompts) {
      await afterCommit(this.telemetry, 
        () => this.cache.evict(p.sessionKey),
        () => this.publish(promptEvents.deleted(p)),
      );
    }
  }

  /**
   * Writes a prompt with its logs in one transaction, or nothing: ALREADY_EXISTS when the session key is
   * taken (so a rerun of a migration writes nothing twice), NOT_FOUND for an LLM client or plugin outside the
   * caller's account. The prompt is new, so no watcher can be on it and no cached copy can exist; the cache
   * entry of its key is dropped all the same, after the commit, as every other write that changes a session.
   */
  async importPrompt(caller: Principal, input: ImportPromptInput): Promise<PromptRow> {
    const { value } = await this.unitOfWork.run(
      this.key(caller, 'ImportPrompt', undefined, undefined),
      importCodec,
      async (tx) => {
        await this.resolveLlmClient(caller, { id: input.llmClientId }, tx);
        const plugins = new Set<string>();
        for (const l of input.logs) if (l.table !== 'prompt_history' && l.pluginId) plugins.add(l.pluginId);
        for (const id of plugins) await this.requirePlugin(caller, id, tx);
        const logs: ImportedLog[] = input.logs.map((l) => (l.table === 'prompt_history' ? { ...l, messages: l.messages.map(toOpenAiMessage) } : l.table === 'prompt_tool_calls' ? { ...l, pluginId: l.pluginId } : l));
        const prompt = await this.store.insertImported(
          {
            accountId: caller.accountId,
            userProfileId: caller.userProfileId,
            llmClientId: input.llmClientId,
            name: input.name || defaultPromptName(input.sessionKey),
            description: input.description,
            version: input.version || DEFAULT_PROMPT_VERSION,
            annotations: input.annotations,
            tags: input.tags,
            sessionKey: input.sessionKey,
            ipAddress: input.ipAddress,
            userAgent: input.userAgent,
            url: input.url,
            endUserId: input.endUserId,
            labels: input.labels,
            createdAt: input.createdAt,
            updatedAt: input.updatedAt,
          },
          logs,
          tx,
        );
        if (!prompt) throw alreadyExists`prompt ${input.sessionKey}`;
        return { prompt };
      },
      (v) => v.prompt.id,
    );
    await afterCommit(this.telemetry, () => this.cache.evict(value.prompt.sessionKey));
    return value.prompt;
  }

  async appendHistory(caller: Principal, input: AppendHistoryInput, requestId?: string): Promise<HistoryRow> {
    const entry = { promptId: input.promptId, request: input.request, response: input.response, messages: input.messages.map(toOpenAiMessage) };
    if (!requestId) {
      // Nothing to claim: the bump and the insert go as one statement, with no transaction around them.
      const value = await this.store.appendHistory(caller.accountId, entry);
      if (!value) throw notFound`prompt ${input.promptId}`;
      await afterCommit(this.telemetry, () => this.publish(promptEvents.history(value)));
      return value;
    }
    return this.logWrite(caller, 'AppendHistory', input, requestId, historyCodec, promptEvents.history, (tx, revision) =>
      this.store.insertHistory({ ...entry, revision }, tx),
    );
  }

  async recordToolCall(caller: Principal, input: RecordToolCallInput, requestId?: string): Promise<ToolCallRow> {
    return this.logWrite(caller, 'RecordToolCall', input, requestId, toolCallCodec, promptEvents.toolCall, async (tx, revision) => {
      if (input.pluginId) await this.requirePlugin(caller, input.pluginId, tx);
      return this.store.insertToolCall({ ...input, pluginId: input.pluginId, revision }, tx);
    });
  }

  async recordPluginUsage(caller: Principal, input: RecordPluginUsageInput, requestId?: string): Promise<PluginUsageRow> {
    return this.logWrite(caller, 'RecordPluginUsage', input, requestId, pluginUsageCodec, promptEvents.pluginUsage, async (tx, revision) => {
      await this.requirePlugin(caller, input.pluginId, tx);
      return this.store.insertPluginUsage({ ...input, revision }, tx);
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
    return this.store.snapshot(async (tx) => {
      const prompt = by.sessionKey ? await this.store.bySessionKey(by.sessionKey, tx) : await this.store.byId(by.id ?? '', tx);
      if (!prompt || prompt.accountId !== caller.accountId) throw notFound`prompt ${by.id ?? by.sessionKey}`;
      const [latest] = await this.store.recentLog('prompt_history', prompt.id, 1, tx);
      const toolCalls = await this.store.recentLog('prompt_tool_calls', prompt.id, HISTORY_SNAPSHOT_LIMIT, tx);
      const pluginUsage = await this.store.recentLog('prompt_plugin_usage', prompt.id, HISTORY_SNAPSHOT_LIMIT, tx);
      const revision = await this.store.revisionOf(prompt.id, tx);
      return { prompt, latest, messages: latest ? historyMessages(latest) : [], toolCalls, pluginUsage, revision };
    });
  }

  /** The caller's plugins by name (what a tool call or plugin usage may name). */
  listPlugins(caller: Principal, page: PageRequest): Promise<Page<OwnedRef>> {
    return keysetPage(page, {
      list: 'plugins',
      filters: { accountId: caller.accountId },
      isCursor: isPluginCursor,
      fetch: (after, limit) => this.directory.listPlugins(caller.accountId, after?.name, limit),
      cursorOf: (r) => ({ name: r.name }),
    });
  }

  /**
   * WatchPrompt's replay: the first `limit` changes after revision `after`, as the events that announced
   * them. Callers have passed `get` (the access check) for this prompt first.
   */
  async changesAfter(promptId: string, after: number, limit: number): Promise<PromptEvent[]> {
    return (await this.store.logsByRevision(promptId, after, limit)).map(promptEvents.replayed);
  }

  /**
   * Deletes every prompt of one end user of the caller's account as DeletePrompt does (cache copies dropped
   * first, logs and the stored answers that repeat them deleted, watchers told), `batchSize` prompts per
   * short transaction. Prompts created meanwhile are erased if they commit before the last batch is read.
   */
  async eraseEndUser(caller: Principal, endUserId: string, batchSize: number): Promise<EndUserPromptsErased> {
    const report: EndUserPromptsErased = { prompts: 0, history: 0, toolCalls: 0, pluginUsage: 0, requestIds: 0 };
    for (;;) {
      const batch = await this.store.endUserPrompts(caller.accountId, endUserId, batchSize);
      // The cached rows carry the prompts' content: they go before the rows (see FencedCopies.evictBeforeDelete),
      // the batch's at once.
      await Promise.all(batch.map((p) => this.cache.evictBeforeDelete(p.sessionKey)));
      const { value: gone } = await this.unitOfWork.run(UNRECORDED, unrecorded<{ locked: GonePrompt[]; logs: DeletedLogs | undefined }>(), async (tx) => {
        const locked: GonePrompt[] = [];
        for (const p of batch) {
          const row = await this.store.lock(caller.accountId, p.id, tx);
          // Deleted meanwhile (by DeletePrompt or the purge): nothing left to erase.
          if (row?.endUserId === endUserId) locked.push({ id: row.id, sessionKey: row.sessionKey, revision: row.revision });
        }
        return { locked, logs: locked.length ? await this.store.deleteCounted(locked.map((p) => p.id), tx) : undefined };
      });
      report.prompts += gone.locked.length;
      report.history += gone.logs?.history ?? 0;
      report.toolCalls += gone.logs?.toolCalls ?? 0;
      report.pluginUsage += gone.logs?.pluginUsage ?? 0;
      report.requestIds += gone.logs?.requestIds ?? 0;
      await Promise.all(gone.locked.map((p) => this.forgetDeleted([p])));
      if (batch.length < batchSize) return report;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Retention: deletes prompts idle since before `now - olderThanMs`, with their logs, batch by batch. */
  async purgeIdle(opts: { olderThanMs: number; now?: Date; batchSize?: number }): Promise<PurgeReport> {
    const cutoff = new Date((opts.now ?? new Date()).getTime() - opts.olderThanMs);
    const batchSize = opts.batchSize ?? 500;
    const report: PurgeReport = { prompts: 0, history: 0, toolCalls: 0, pluginUsage: 0, batches: 0, requestIds: 0 };
    for (;;) {
      const b = await this.store.purgeIdleBatch(cutoff, batchSize);
      if (b.prompts.length === 0) break;
      report.batches++;
      report.prompts += b.prompts.length;
      report.history += b.history;
      report.toolCalls += b.toolCalls;
      report.pluginUsage += b.pluginUsage;
      await this.forgetDeleted(b.prompts);
      if (b.prompts.length < batchSize) break;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
    report.requestIds = await this.unitOfWork.expire({ now: opts.now });
    return report;
  }

  /** The caller's prompt, locked for this write; NOT_FOUND or ABORTED when it is gone or has moved on. */
  private async lockForWrite(caller: Principal, id: string, expectedRevision: number | undefined, tx: Tx): Promise<PromptRow> {
    const current = await this.store.lock(caller.accountId, id, tx);
    if (!current) throw notFound`prompt ${id}`;
    if (expectedRevision !== undefined && expectedRevision !== current.revision) throw revisionMismatch(current.revision);
    return current;
  }

  private async logWrite<T extends { revision: number }>(
    caller: Principal,
    rpc: string,
    input: { promptId: string },
    requestId: string | undefined,
    codec: Codec<T>,
    eventOf: (row: T) => PromptEvent,
    insert: (tx: Tx, revision: number) => Promise<T>,
  ): Promise<T> {
    const { value, replayed } = await this.unitOfWork.run(
      this.key(caller, rpc, requestId, input),
      codec,
      async (tx) => {
        const revision = await this.store.bumpRevision(caller.accountId, input.promptId, tx);
        if (revision === undefined) throw notFound`prompt ${input.promptId}`;
        return insert(tx, revision);
      },
      () => input.promptId,
    );
    if (!replayed) await afterCommit(this.telemetry, () => this.publish(eventOf(value)));
    return value;
  }

  private listLog<T extends LogTable>(caller: Principal, table: T, promptId: string, page: PageRequest, sizeOf: SizeOf<LogRows[T]>): Promise<Page<LogRows[T]>> {
    return keysetPage(page, {
      list: table,
      filters: { promptId },
      isCursor: isIdCursor,
      fetch: async (after, limit) => {
        await this.get(caller, { id: promptId });
        return this.store.listLog(table, promptId, after?.after ?? 0, limit);
      },
      cursorOf: (r) => ({ after: r.seq }),
      sizeOf,
    });
  }

  private key(caller: Principal, rpc: string, requestId: string | undefined, request: unknown): RequestKey {
    // The fingerprint only tells a retry from a reused request id; without an id nothing reads it.
    return { scope: scopeOf(caller), method: method(rpc), requestId, fingerprint: requestId ? fingerprintOf(request) : '' };
  }

  private publish(event: PromptEvent): Promise<void> {
    return publishPromptEvent(this.bus, event);
  }

  /** Another account's plugin reads as absent: its id is never accepted, nor confirmed to exist. */
  private async requirePlugin(caller: Principal, pluginId: string, tx: Tx): Promise<void> {
    const plugin = await this.directory.pluginById(pluginId, tx);
    if (!plugin || plugin.accountId !== caller.accountId) throw notFound`plugin ${pluginId}`;
  }

  /**
   * A cached row with its current revision. The cache holds the prompt's content, which only UpdatePrompt
   * changes (and evicts); the revision also moves with every log write, so it is read from Postgres (a
   * primary-key read of one column) rather than evicting the cache on every log write. Undefined when the
   * prompt is gone.
   */
  private async withRevision(row: PromptRow, tx?: Tx): Promise<PromptRow | undefined> {
    const revision = await this.store.revisionOf(row.id, tx);
    return revision === 0 ? undefined : { ...row, revision };
  }

  /** Cache first, then the store (filling the cache); another account's session reads as absent. */
  private async findBySessionKey(caller: Principal, sessionKey: string, tx?: Tx): Promise<PromptRow | undefined> {
    const cached = await this.cache.get(sessionKey);
    let row = cached.row && (await this.withRevision(cached.row, tx));
    if (!row) {
      row = await this.store.bySessionKey(sessionKey, tx);
      if (row) await this.cache.put(row, cached.token);
    }
    return row && row.accountId === caller.accountId ? row : undefined;
  }

  private async resolveLlmClient(caller: Principal, ref: LlmClientRef, tx: Tx): Promise<OwnedRef> {
    if ('id' in ref) {
      const c = await this.directory.llmClientById(ref.id, tx);
      if (!c || c.accountId !== caller.accountId) throw notFound`LLM client ${ref.id}`;
      return c;
    }
    const c = await this.directory.llmClientByName(caller.accountId, ref.accountNumber, ref.name, tx);
    if (!c) throw notFound`LLM client ${ref.name} of account ${ref.accountNumber}`;
    return c;
  }
}
