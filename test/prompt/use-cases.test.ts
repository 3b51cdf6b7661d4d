import test from 'ava';
import { randomUUID } from 'node:crypto';
import { AppError } from '../../src/errors.js';
import type { Principal } from '../../src/principal.js';
import type { Codec, RequestKey, Tx, UnitOfWork } from '../../src/ports/unit-of-work.js';
import { PromptCache } from '../../src/prompt/cache.js';
import { decodePromptEvent, promptChannel, type PromptEvent } from '../../src/prompt/events.js';
import { PromptUseCases } from '../../src/prompt/service.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import type {
  DeletedLogs,
  GonePrompt,
  HistoryRow,
  LogRows,
  LogTable,
  NewHistory,
  NewPluginUsage,
  ImportedLog,
  ImportedPrompt,
  NewPrompt,
  NewToolCall,
  OwnedRef,
  PluginUsageRow,
  PromptCursor,
  PromptDirectory,
  PromptFilter,
  PromptPatch,
  PromptRow,
  PromptStore,
  PurgedBatch,
  ReplayEntry,
  RequestIdExpiry,
  ToolCallRow,
} from '../../src/prompt/store.js';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';

// PromptUseCases without a database: an in-memory store and unit of work behind the domain's own
// interfaces, and the in-process KV and bus (made to fail on demand).

/** The one transaction handle of this fake: the domain only passes it along. */
const TX = Object.freeze({}) as Tx;

class MemoryUnitOfWork implements UnitOfWork, RequestIdExpiry {
  private readonly results = new Map<string, { fingerprint: string; json: string }>();

  async run<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>): Promise<{ value: T; replayed: boolean }> {
    const id = key.requestId && `${key.scope}/${key.requestId}`;
    const first = id ? this.results.get(id) : undefined;
    if (first) return { value: codec.decode(JSON.parse(first.json)), replayed: true };
    const value = await work(TX);
    if (id) this.results.set(id, { fingerprint: key.fingerprint, json: JSON.stringify(codec.encode(value)) });
    return { value, replayed: false };
  }

  async expire(): Promise<number> {
    return 0;
  }
}

interface StoredPrompt {
  row: PromptRow;
  updateRevision: number;
}

class MemoryPromptStore implements PromptStore, PromptDirectory {
  readonly prompts = new Map<string, StoredPrompt>();
  readonly logs: { [T in LogTable]: Array<LogRows[T]> } = { prompt_history: [], prompt_tool_calls: [], prompt_plugin_usage: [] };
  readonly llmClients: OwnedRef[] = [];
  readonly plugins: OwnedRef[] = [];
  bySessionKeyReads = 0;
  private seq = 0;

  async snapshot<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return work(TX);
  }

  async insertOrGet(p: NewPrompt): Promise<{ row: PromptRow; created: boolean }> {
    const existing = [...this.prompts.values()].find((s) => s.row.sessionKey === p.sessionKey);
    if (existing) return { row: { ...existing.row }, created: false };
    const now = new Date();
    const row: PromptRow = { ...p, id: randomUUID(), createdAt: now, updatedAt: now, revision: 1 };
    this.prompts.set(row.id, { row, updateRevision: 0 });
    return { row: { ...row }, created: true };
  }

  async insertImported(p: ImportedPrompt, logs: readonly ImportedLog[]): Promise<PromptRow | undefined> {
    if ([...this.prompts.values()].some((s) => s.row.sessionKey === p.sessionKey)) return undefined;
    const { createdAt, updatedAt, ...rest } = p;
    const row: PromptRow = { ...rest, id: randomUUID(), createdAt, updatedAt, revision: 1 + logs.length };
    this.prompts.set(row.id, { row, updateRevision: 0 });
    logs.forEach((l, i) => {
      const common = { id: randomUUID(), seq: ++this.seq, promptId: row.id, revision: i + 2, createdAt: l.createdAt, updatedAt: l.createdAt };
      if (l.table === 'prompt_history') this.logs.prompt_history.push({ ...common, request: l.request, response: l.response, messages: l.messages });
      else if (l.table === 'prompt_tool_calls') this.logs.prompt_tool_calls.push({ ...common, pluginId: l.pluginId, functionName: l.functionName, functionArgs: l.functionArgs, request: l.request, response: l.response });
      else this.logs.prompt_plugin_usage.push({ ...common, pluginId: l.pluginId, inputText: l.inputText });
    });
    return { ...row };
  }

  async byId(id: string): Promise<PromptRow | undefined> {
    const s = this.prompts.get(id);
    return s && { ...s.row };
  }

  async bySessionKey(sessionKey: string): Promise<PromptRow | undefined> {
    this.bySessionKeyReads++;
    const s = [...this.prompts.values()].find((p) => p.row.sessionKey === sessionKey);
    return s && { ...s.row };
  }

  async list(accountId: string, _f: PromptFilter, _after: PromptCursor | undefined, limit: number): Promise<Array<{ row: PromptRow; cursor: PromptCursor }>> {
    return [...this.prompts.values()]
      .filter((s) => s.row.accountId === accountId)
      .slice(0, limit)
      .map((s) => ({ row: { ...s.row }, cursor: { createdAt: s.row.createdAt.toISOString(), id: s.row.id } }));
  }

  async count(accountId: string): Promise<number> {
    return [...this.prompts.values()].filter((s) => s.row.accountId === accountId).length;
  }

  async lock(accountId: string, id: string): Promise<PromptRow | undefined> {
    const s = this.prompts.get(id);
    return s && s.row.accountId === accountId ? { ...s.row } : undefined;
  }

  async applyPatch(id: string, patch: PromptPatch): Promise<PromptRow> {
    const s = this.prompts.get(id);
    if (!s) throw new Error(`prompt ${id} is not locked`);
    s.row = { ...s.row, ...patch, updatedAt: new Date(), revision: s.row.revision + 1 };
    s.updateRevision = s.row.revision;
    return { ...s.row };
  }

  async delete(id: string): Promise<void> {
    this.prompts.delete(id);
  }

  async endUserPrompts(accountId: string, endUserId: string, limit: number): Promise<GonePrompt[]> {
    return [...this.prompts.values()]
      .filter((s) => s.row.accountId === accountId && s.row.endUserId === endUserId)
      .slice(0, limit)
      .map((s) => ({ id: s.row.id, sessionKey: s.row.sessionKey, revision: s.row.revision }));
  }

  async deleteCounted(ids: readonly string[]): Promise<DeletedLogs> {
    const count = (table: LogTable) => {
      const before = this.logs[table].length;
      (this.logs[table] as Array<{ promptId: string }>) = this.logs[table].filter((r) => !ids.includes(r.promptId));
      return before - this.logs[table].length;
    };
    const out = { history: count('prompt_history'), toolCalls: count('prompt_tool_calls'), pluginUsage: count('prompt_plugin_usage'), requestIds: 0 };
    for (const id of ids) this.prompts.delete(id);
    return out;
  }

  async bumpRevision(accountId: string, promptId: string): Promise<number | undefined> {
    const s = this.prompts.get(promptId);
    if (!s || s.row.accountId !== accountId) return undefined;
    s.row = { ...s.row, revision: s.row.revision + 1 };
    return s.row.revision;
  }

  async revisionOf(promptId: string): Promise<number> {
    return this.prompts.get(promptId)?.row.revision ?? 0;
  }

  private logColumns(promptId: string, revision: number) {
    const now = new Date();
    return { id: randomUUID(), seq: ++this.seq, promptId, revision, createdAt: now, updatedAt: now };
  }

  async appendHistory(accountId: string, h: NewHistory): Promise<HistoryRow | undefined> {
    const revision = await this.bumpRevision(accountId, h.promptId);
    return revision === undefined ? undefined : this.insertHistory({ ...h, revision });
  }

  async insertHistory(h: NewHistory & { revision: number }): Promise<HistoryRow> {
    const row: HistoryRow = { ...h, ...this.logColumns(h.promptId, h.revision) };
    this.logs.prompt_history.push(row);
    return row;
  }

  async insertToolCall(c: NewToolCall & { revision: number }): Promise<ToolCallRow> {
    const row: ToolCallRow = { ...c, ...this.logColumns(c.promptId, c.revision) };
    this.logs.prompt_tool_calls.push(row);
    return row;
  }

  async insertPluginUsage(u: NewPluginUsage & { revision: number }): Promise<PluginUsageRow> {
    const row: PluginUsageRow = { ...u, ...this.logColumns(u.promptId, u.revision) };
    this.logs.prompt_plugin_usage.push(row);
    return row;
  }

  async listLog<T extends LogTable>(table: T, promptId: string, afterSeq: number, limit: number): Promise<Array<LogRows[T]>> {
    const rows: Array<LogRows[T]> = this.logs[table];
    return rows.filter((r) => r.promptId === promptId && r.seq > afterSeq).slice(0, limit);
  }

  async recentLog<T extends LogTable>(table: T, promptId: string, limit: number): Promise<Array<LogRows[T]>> {
    const rows: Array<LogRows[T]> = this.logs[table];
    return rows.filter((r) => r.promptId === promptId).reverse().slice(0, limit);
  }

  async logsByRevision(promptId: string, after: number, limit: number): Promise<ReplayEntry[]> {
    const mine = <R extends { promptId: string; revision: number }>(rows: R[]) => rows.filter((r) => r.promptId === promptId && r.revision > after);
    const entries: ReplayEntry[] = [
      ...mine(this.logs.prompt_history).map((row) => ({ table: 'prompt_history' as const, row })),
      ...mine(this.logs.prompt_tool_calls).map((row) => ({ table: 'prompt_tool_calls' as const, row })),
      ...mine(this.logs.prompt_plugin_usage).map((row) => ({ table: 'prompt_plugin_usage' as const, row })),
    ];
    const s = this.prompts.get(promptId);
    if (s && s.updateRevision > after) entries.push({ table: 'prompts', row: { ...s.row }, revision: s.updateRevision });
    return entries.sort((x, y) => (x.revision ?? x.row.revision) - (y.revision ?? y.row.revision)).slice(0, limit);
  }

  async purgeIdleBatch(): Promise<PurgedBatch> {
    return { prompts: [], history: 0, toolCalls: 0, pluginUsage: 0 };
  }

  async llmClientById(id: string): Promise<OwnedRef | undefined> {
    return this.llmClients.find((c) => c.id === id);
  }

  async llmClientByName(accountId: string, _accountNumber: string, name: string): Promise<OwnedRef | undefined> {
    return this.llmClients.find((c) => c.accountId === accountId && c.name === name);
  }

  async pluginById(id: string): Promise<OwnedRef | undefined> {
    return this.plugins.find((p) => p.id === id);
  }

  async listPlugins(accountId: string, afterName: string | undefined, limit: number): Promise<OwnedRef[]> {
    return this.plugins.filter((p) => p.accountId === accountId && (afterName === undefined || p.name > afterName)).slice(0, limit);
  }
}

/** The in-process KV, whose fences fail while `down` (having dropped the copy first, as KvStore.fence promises). */
class FlakyKv extends MemoryKv {
  down = false;

  override async fence(key: string): Promise<void> {
    await super.fence(key);
    if (this.down) throw new Error('redis is down');
  }
}

class FlakyBus extends MemoryBus {
  down = false;

  override async publish(channel: string, message: string): Promise<void> {
    if (this.down) throw new Error('redis is down');
    return super.publish(channel, message);
  }
}

function world() {
  const store = new MemoryPromptStore();
  const kv = new FlakyKv();
  const bus = new FlakyBus();
  const prompts = new PromptUseCases({ store, directory: store, cache: new PromptCache(kv, 60_000), unitOfWork: new MemoryUnitOfWork(), bus });
  const caller: Principal = { apiKeyId: randomUUID(), userProfileId: randomUUID(), accountId: randomUUID() };
  const now = new Date();
  const client: OwnedRef = { id: randomUUID(), accountId: caller.accountId, name: 'hr', description: '', createdAt: now, updatedAt: now, revision: 1 };
  store.llmClients.push(client);
  const meta = { ipAddress: '', userAgent: '', url: '' };
  const open = (sessionKey?: string, requestId?: string) => prompts.open(caller, { sessionKey, llmClient: { id: client.id }, ...meta }, requestId);
  return { store, kv, bus, prompts, caller, open };
}

const codeOf = (err: unknown) => (err instanceof AppError ? err.code : undefined);

test('PromptUseCases.open creates a session, then finds it by its session key', async (t) => {
  const w = world();
  const first = await w.open();
  t.true(first.created);
  t.is(first.prompt.revision, 1);
  t.is(first.prompt.accountId, w.caller.accountId);
  const again = await w.open(first.prompt.sessionKey);
  t.false(again.created);
  t.is(again.prompt.id, first.prompt.id);
  t.is(w.store.prompts.size, 1);
});

test('PromptUseCases.open with a request id replays its first answer', async (t) => {
  const w = world();
  const requestId = randomUUID();
  const first = await w.open(undefined, requestId);
  const again = await w.open(undefined, requestId);
  t.true(again.created, 'the replay says what the first call said');
  t.is(again.prompt.id, first.prompt.id);
  t.deepEqual(again.prompt.createdAt, first.prompt.createdAt, 'dates come back as Dates through the codec');
});

test('PromptUseCases.open serves a known session from the cache', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  await w.open(prompt.sessionKey); // fills the cache
  const reads = w.store.bySessionKeyReads;
  const hit = await w.open(prompt.sessionKey);
  t.is(hit.prompt.id, prompt.id);
  t.deepEqual(hit.prompt.updatedAt, prompt.updatedAt);
  t.is(w.store.bySessionKeyReads, reads, 'no store read for a cached session');
});

test('PromptUseCases.open of an unknown session without an LLM client is NOT_FOUND', async (t) => {
  const w = world();
  const err = await t.throwsAsync(w.prompts.open(w.caller, { sessionKey: 'a'.repeat(64), ipAddress: '', userAgent: '', url: '' }));
  t.is(codeOf(err), 'NOT_FOUND');
});

test('PromptUseCases.update with a stale expected revision is ABORTED and writes nothing', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  const ok = await w.prompts.update(w.caller, prompt.id, { description: 'first' }, prompt.revision);
  t.true(ok.changed);
  t.is(ok.prompt.revision, prompt.revision + 1);
  const err = await t.throwsAsync(w.prompts.update(w.caller, prompt.id, { description: 'late' }, prompt.revision));
  t.is(codeOf(err), 'ABORTED');
  t.is((await w.prompts.get(w.caller, { id: prompt.id })).description, 'first');
});

test('PromptUseCases.update of the same values changes nothing and announces nothing', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  const messages: string[] = [];
  await w.bus.subscribe(promptChannel(prompt.id), (m) => messages.push(m));
  const same = await w.prompts.update(w.caller, prompt.id, { name: prompt.name, tags: [] }, undefined);
  t.false(same.changed);
  t.is(same.prompt.revision, prompt.revision);
  t.deepEqual(messages, []);
});

test('PromptUseCases.update announces the change as a typed, versioned event', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  const events: Array<PromptEvent | undefined> = [];
  await w.bus.subscribe(promptChannel(prompt.id), (m) => events.push(decodePromptEvent(m)));
  const { prompt: updated } = await w.prompts.update(w.caller, prompt.id, { description: 'new' }, undefined);
  t.deepEqual(events, [{ type: 'prompt_updated', v: 1, promptId: prompt.id, revision: updated.revision, row: updated }]);
});

test('PromptUseCases.update reports success when the cache and bus fail after the commit, and the next read is correct', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  await w.open(prompt.sessionKey); // the cache holds the old version
  w.kv.down = true;
  w.bus.down = true;
  const { prompt: updated, changed } = await w.prompts.update(w.caller, prompt.id, { description: 'after the outage' }, undefined);
  t.true(changed, 'the committed write answers OK');
  t.is(updated.description, 'after the outage');
  const read = await w.prompts.get(w.caller, { sessionKey: prompt.sessionKey });
  t.is(read.description, 'after the outage', 'the next read does not serve the copy the failed fence dropped');
  t.is(read.revision, updated.revision);
});

test('PromptUseCases log writes succeed when the bus fails after the commit', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  w.bus.down = true;
  const row = await w.prompts.appendHistory(w.caller, { promptId: prompt.id, request: { a: 1 }, response: {}, messages: [] });
  t.is(row.revision, prompt.revision + 1);
  const withId = await w.prompts.recordToolCall(
    w.caller,
    { promptId: prompt.id, functionName: 'f', functionArgs: '{}', request: {}, response: {} },
    randomUUID(),
  );
  t.is(withId.revision, prompt.revision + 2);
});

test('PromptUseCases hides another account\'s prompt and replays a prompt\'s changes as events', async (t) => {
  const w = world();
  const { prompt } = await w.open();
  const stranger: Principal = { ...w.caller, accountId: randomUUID() };
  t.is(codeOf(await t.throwsAsync(w.prompts.get(stranger, { id: prompt.id }))), 'NOT_FOUND');
  t.is(codeOf(await t.throwsAsync(w.prompts.update(stranger, prompt.id, { description: 'x' }, undefined))), 'NOT_FOUND');
  const h = await w.prompts.appendHistory(w.caller, { promptId: prompt.id, request: {}, response: {}, messages: [] });
  const { prompt: updated } = await w.prompts.update(w.caller, prompt.id, { description: 'x' }, undefined);
  const replay = await w.prompts.changesAfter(prompt.id, 0, 10);
  t.deepEqual(
    replay.map((e) => [e.type, e.revision]),
    [
      ['history', h.revision],
      ['prompt_updated', updated.revision],
    ],
  );
});

test('PromptUseCases.open with an end user: a cached copy without one (an older replica wrote it) does not refuse; Postgres decides', async (t) => {
  const w = world();
  const meta = { ipAddress: '', userAgent: '', url: '' };
  const client = w.store.llmClients[0]!;
  const { prompt } = await w.prompts.open(w.caller, { llmClient: { id: client.id }, ...meta, endUserId: 'alice' });
  t.is(prompt.endUserId, 'alice');
  // The copy an older replica would have cached: the same row without the end user.
  const cache = new PromptCache(w.kv, 60_000);
  await w.kv.fence(promptCacheKey(prompt.sessionKey));
  await cache.put({ ...prompt, endUserId: '' }, (await cache.get(prompt.sessionKey)).token);
  t.is((await cache.get(prompt.sessionKey)).row?.endUserId, '');
  const reopened = await w.prompts.open(w.caller, { sessionKey: prompt.sessionKey, ...meta, endUserId: 'alice' });
  t.is(reopened.prompt.id, prompt.id);
  const e = await t.throwsAsync(w.prompts.open(w.caller, { sessionKey: prompt.sessionKey, ...meta, endUserId: 'bob' }), { instanceOf: AppError });
  t.is(e.reason, 'END_USER_MISMATCH');
});

test('PromptUseCases.eraseEndUser deletes the end user\'s prompts batch by batch with their logs, tells watchers, and leaves the rest', async (t) => {
  const w = world();
  const meta = { ipAddress: '', userAgent: '', url: '' };
  const client = w.store.llmClients[0]!;
  const openFor = async (endUserId: string) => (await w.prompts.open(w.caller, { llmClient: { id: client.id }, ...meta, endUserId })).prompt;
  const mine = [await openFor('alice'), await openFor('alice'), await openFor('alice')];
  const other = await openFor('bob');
  for (const p of [...mine, other]) await w.prompts.appendHistory(w.caller, { promptId: p.id, request: { q: 1 }, response: {}, messages: [] });
  const deleted: string[] = [];
  for (const p of mine) await w.bus.subscribe(promptChannel(p.id), (m) => void deleted.push(decodePromptEvent(m)?.type ?? ''));
  const report = await w.prompts.eraseEndUser(w.caller, 'alice', 2);
  t.deepEqual(report, { prompts: 3, history: 3, toolCalls: 0, pluginUsage: 0, requestIds: 0 });
  t.deepEqual(deleted, ['prompt_deleted', 'prompt_deleted', 'prompt_deleted']);
  for (const p of mine) t.is(codeOf(await t.throwsAsync(w.prompts.get(w.caller, { id: p.id }))), 'NOT_FOUND');
  t.is((await w.prompts.get(w.caller, { id: other.id })).endUserId, 'bob');
  t.deepEqual(await w.prompts.eraseEndUser(w.caller, 'alice', 2), { prompts: 0, history: 0, toolCalls: 0, pluginUsage: 0, requestIds: 0 });
});
