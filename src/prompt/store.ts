import { z } from 'zod';
import { isoDate } from '../json-codec.js';
import type { Tx } from '../ports/unit-of-work.js';
import { labelsOf, noLabels } from '../labels.js';
import type { TimeOp } from '../filter.js';

/**
 * What the prompt use cases need from storage, and the rows they exchange. The row schemas are the one
 * description of each row: the types come from them, and so do the codecs that check a row coming back as
 * JSON (a cached copy, a bus event, a stored request result). Dates travel as ISO text and `isoDate` revives
 * them.
 */

const json = z.record(z.string(), z.unknown());

/** What every resource row carries: when it was made and changed, and its revision. */
const stamped = { createdAt: isoDate, updatedAt: isoDate, revision: z.number().int() };

export const promptRowSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  userProfileId: z.string(),
  llmClientId: z.string(),
  name: z.string(),
  description: z.string(),
  version: z.string(),
  annotations: z.record(z.string(), z.string()),
  tags: z.array(z.string()),
  sessionKey: z.string(),
  ipAddress: z.string(),
  userAgent: z.string(),
  url: z.string(),
  /** The gateway's end user the session belongs to, set on creation; '' when none (and in copies older than it). */
  endUserId: z.string().default(''),
  /** The developer's labels (null prototype); a copy or stored answer older than them reads as none. */
  labels: z
    .record(z.string(), z.string())
    .optional()
    .transform((l) => (l ? labelsOf(Object.entries(l)) : noLabels())),
  /** revision: 1 on creation, +1 per committed change to the prompt or its logs. */
  ...stamped,
});
export type PromptRow = z.output<typeof promptRowSchema>;

/** Log rows: `id` is the UUID the API shows; `seq` the internal creation order, for paging. */
const logRow = {
  id: z.string(),
  seq: z.number().int(),
  promptId: z.string(),
  ...stamped,
};

export const historyRowSchema = z.object({
  ...logRow,
  request: json,
  response: json,
  /** OpenAI-style chat messages, as stored. */
  messages: z.array(z.unknown()),
});
export type HistoryRow = z.infer<typeof historyRowSchema>;

export const toolCallRowSchema = z.object({
  ...logRow,
  pluginId: z.string().optional(),
  functionName: z.string(),
  functionArgs: z.string(),
  request: json,
  response: json,
});
export type ToolCallRow = z.infer<typeof toolCallRowSchema>;

export const pluginUsageRowSchema = z.object({ ...logRow, pluginId: z.string(), inputText: z.string() });
export type PluginUsageRow = z.infer<typeof pluginUsageRowSchema>;

export type NewPrompt = Omit<PromptRow, 'id' | 'createdAt' | 'updatedAt' | 'revision'>;

/**
 * A prompt as its hot copy holds it. Labels are required: a copy without them was written by a server that
 * did not know them while the row may hold some; it does not decode, so it is a miss read from Postgres.
 */
export const cachedPromptSchema = promptRowSchema.extend({ labels: z.record(z.string(), z.string()).transform((l) => labelsOf(Object.entries(l))) });

/** The fields UpdatePrompt may change. */
export type PromptPatch = Partial<Pick<PromptRow, 'name' | 'description' | 'version' | 'annotations' | 'tags' | 'labels'>>;

type Json = Record<string, unknown>;

export interface NewHistory {
  promptId: string;
  request: Json;
  response: Json;
  messages: unknown[];
}
export interface NewToolCall {
  promptId: string;
  pluginId: string | undefined;
  functionName: string;
  functionArgs: string;
  request: Json;
  response: Json;
}
export interface NewPluginUsage {
  promptId: string;
  pluginId: string;
  inputText: string;
}

/** A prompt written whole with its logs by ImportPrompt, keeping the times the source recorded. */
export interface ImportedPrompt extends NewPrompt {
  createdAt: Date;
  updatedAt: Date;
}

/** One log entry of an import, in the order it came (which its revision follows). */
export type ImportedLog =
  | ({ table: 'prompt_history'; createdAt: Date } & Omit<NewHistory, 'promptId'>)
  | ({ table: 'prompt_tool_calls'; createdAt: Date } & Omit<NewToolCall, 'promptId'>)
  | ({ table: 'prompt_plugin_usage'; createdAt: Date } & Omit<NewPluginUsage, 'promptId'>);

export interface LogRows {
  prompt_history: HistoryRow;
  prompt_tool_calls: ToolCallRow;
  prompt_plugin_usage: PluginUsageRow;
}
export type LogTable = keyof LogRows;
export const LOG_TABLES: readonly LogTable[] = ['prompt_history', 'prompt_tool_calls', 'prompt_plugin_usage'];

export type LogEntry =
  | { table: 'prompt_history'; row: HistoryRow }
  | { table: 'prompt_tool_calls'; row: ToolCallRow }
  | { table: 'prompt_plugin_usage'; row: PluginUsageRow };

/** What a watch replays: log entries, and the prompt itself at the revision of its latest update. */
export type ReplayEntry = (LogEntry & { revision?: undefined }) | { table: 'prompts'; row: PromptRow; revision: number };

/** The revision a replayed entry takes: a log row's own, or the prompt's update revision. */
export const replayRevision = (e: ReplayEntry): number => e.revision ?? e.row.revision;

export interface PromptFilter {
  llmClientId?: string | undefined;
  tag?: string | undefined;
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
  endUserId?: string | undefined;
  /** Labels set to these values (all of them). */
  labels?: Array<{ key: string; value: string }>;
  /** Labels set, whatever their values. */
  hasLabels?: string[];
  /** Bounds on the creation or last update time (all of them). */
  times?: Array<{ column: 'created' | 'updated'; op: TimeOp; at: Date }>;
}

/** An explicit list order (the default is newest created first): by creation or update time, id as tiebreak. */
export interface PromptOrder {
  by: 'created' | 'updated';
  desc: boolean;
}

/** Keyset position in the newest-first prompt order; `createdAt` is Postgres' own text (microseconds). */
export interface PromptCursor {
  createdAt: string;
  id: string;
}

/** A prompt that is gone, as its watchers and the cache need to hear of it. */
export interface GonePrompt {
  id: string;
  sessionKey: string;
  revision: number;
}

/** What deleting prompts removed with them. */
export interface DeletedLogs {
  history: number;
  toolCalls: number;
  pluginUsage: number;
  /** Stored answers of request ids that repeated the prompts' content. */
  requestIds: number;
}

export interface PurgedBatch {
  prompts: GonePrompt[];
  history: number;
  toolCalls: number;
  pluginUsage: number;
}

/** Prompts and their logs. Methods given a `Tx` run in that transaction; without one, outside any. */
export interface PromptStore {
  /** A read-only snapshot, so a multi-table read reflects one moment. */
  snapshot<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  /** Inserts unless the session key exists; returns the row either way, `created` telling which. */
  insertOrGet(p: NewPrompt, tx?: Tx): Promise<{ row: PromptRow; created: boolean }>;
  /**
   * Inserts a prompt with its logs unless its session key exists (undefined then, nothing written). Its
   * revision is 1 + the number of entries; entry i takes revision i + 2.
   */
  insertImported(p: ImportedPrompt, logs: readonly ImportedLog[], tx: Tx): Promise<PromptRow | undefined>;
  byId(id: string, tx?: Tx): Promise<PromptRow | undefined>;
  bySessionKey(sessionKey: string, tx?: Tx): Promise<PromptRow | undefined>;
  /** One page of an account's prompts, newest first, each with its cursor. */
  list(accountId: string, filter: PromptFilter, after: PromptCursor | undefined, limit: number, order?: PromptOrder): Promise<Array<{ row: PromptRow; cursor: PromptCursor }>>;
  /** How many of the account's prompts pass every filter set. */
  count(accountId: string, filter: PromptFilter): Promise<number>;
  /** The account's prompt, its row locked until `tx` ends (writes to one prompt then follow commit order). */
  lock(accountId: string, id: string, tx: Tx): Promise<PromptRow | undefined>;
  /** Writes a (non-empty) patch of a locked prompt, bumping its revision and recording it as its update revision. */
  applyPatch(id: string, patch: PromptPatch, tx: Tx): Promise<PromptRow>;
  /** Deletes a locked prompt with its logs and the stored request results that repeat them. */
  delete(id: string, tx: Tx): Promise<void>;
  /** The first `limit` prompts of one end user of an account, oldest first (no lock). */
  endUserPrompts(accountId: string, endUserId: string, limit: number): Promise<GonePrompt[]>;
  /** Deletes prompts (locked in `tx`) with their logs and stored request results, counting what went. */
  deleteCounted(ids: readonly string[], tx: Tx): Promise<DeletedLogs>;
  /**
   * Starts a log write: locks the prompt row, bumps its revision and activity time. Undefined when the
   * account has no such prompt.
   */
  bumpRevision(accountId: string, promptId: string, tx: Tx): Promise<number | undefined>;
  /** The prompt's revision; 0 when it is gone. */
  revisionOf(promptId: string, tx?: Tx): Promise<number>;
  /** bumpRevision and insertHistory as one atomic statement, for a write that needs no transaction. */
  appendHistory(accountId: string, h: NewHistory): Promise<HistoryRow | undefined>;
  insertHistory(h: NewHistory & { revision: number }, tx: Tx): Promise<HistoryRow>;
  insertToolCall(c: NewToolCall & { revision: number }, tx: Tx): Promise<ToolCallRow>;
  insertPluginUsage(u: NewPluginUsage & { revision: number }, tx: Tx): Promise<PluginUsageRow>;
  /** A page of one log in creation order, after the entry of sequence number `afterSeq`. */
  listLog<T extends LogTable>(table: T, promptId: string, afterSeq: number, limit: number, tx?: Tx): Promise<Array<LogRows[T]>>;
  /** The most recent rows of one log, newest first. */
  recentLog<T extends LogTable>(table: T, promptId: string, limit: number, tx?: Tx): Promise<Array<LogRows[T]>>;
  /**
   * The first `limit` changes after revision `after`, ascending: log entries of every kind, and the prompt
   * itself when its latest update is among them (earlier updates are superseded).
   */
  logsByRevision(promptId: string, after: number, limit: number, tx?: Tx): Promise<ReplayEntry[]>;
  /** Deletes up to `batchSize` prompts idle since before `cutoff`, with their logs, in one short transaction. */
  purgeIdleBatch(cutoff: Date, batchSize: number): Promise<PurgedBatch>;
}

/** An LLM client or a plugin: what a prompt refers to, owned by one account. */
export const ownedRefSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  name: z.string(),
  description: z.string(),
  ...stamped,
});
export type OwnedRef = z.infer<typeof ownedRefSchema>;

/** The account resources a prompt refers to (owned by AdminService; prompt only reads them). */
export interface PromptDirectory {
  llmClientById(id: string, tx?: Tx): Promise<OwnedRef | undefined>;
  /** The account's LLM client of that name, when the account's number is `accountNumber`. */
  llmClientByName(accountId: string, accountNumber: string, name: string, tx?: Tx): Promise<OwnedRef | undefined>;
  pluginById(id: string, tx?: Tx): Promise<OwnedRef | undefined>;
  /** One page of the account's plugins in name order, after `afterName`. */
  listPlugins(accountId: string, afterName: string | undefined, limit: number): Promise<OwnedRef[]>;
}

/** Request-id records past their window, which retention removes with idle prompts. */
export interface RequestIdExpiry {
  expire(opts: { now?: Date }): Promise<number>;
}
