import type { Principal } from '../principal.js';
import { invalidArgument, notFound } from '../errors.js';
import type { Bus } from '../ports/bus.js';
import { replayRevision, type HistoryRow, type LogEntry, type PluginUsageRow, type PromptRepo, type PromptRow, type ToolCallRow } from '../storage/prompt-repo.js';
import { runFeed, type FeedItem } from '../streaming/feed.js';
import { promptChannel, type PromptEvent } from './events.js';

/**
 * What a prompt watcher receives, each with the revision it took: a log entry or a prompt update
 * (replayable), the prompt's deletion (live only), or the marker that the replay is done.
 */
export type PromptUpdate =
  | { revision: number; entry: LogEntry }
  | { revision: number; updated: PromptRow }
  | { revision: number; deleted: true }
  | { revision: number; caughtUp: true };

const tableOf = { history: 'prompt_history', tool_call: 'prompt_tool_calls', plugin_usage: 'prompt_plugin_usage' } as const;

/** Rows cross the bus as JSON: their dates come back as strings. */
function revive<T extends { createdAt: Date; updatedAt: Date }>(row: T): T {
  return { ...row, createdAt: new Date(row.createdAt), updatedAt: new Date(row.updatedAt) };
}

function parse(message: string): FeedItem<PromptUpdate> | undefined {
  const e = JSON.parse(message) as PromptEvent;
  switch (e.kind) {
    case 'history':
    case 'tool_call':
    case 'plugin_usage': {
      const row = revive(e.row as HistoryRow & ToolCallRow & PluginUsageRow);
      return { revision: e.revision, event: { revision: e.revision, entry: { table: tableOf[e.kind], row } as LogEntry } };
    }
    case 'prompt_updated':
      return { revision: e.revision, event: { revision: e.revision, updated: revive(e.row as PromptRow) } };
    case 'prompt_deleted':
      // Not in the replayable log: delivered whenever it arrives, and it ends the stream.
      return { revision: undefined, event: { revision: e.revision, deleted: true } };
    default:
      return undefined;
  }
}

/** WatchPrompt: a prompt's changes replayed from Postgres after a revision, a caught-up marker, then live. */
export async function watchPrompt(
  deps: { prompts: PromptRepo; bus: Bus; maxPending: number },
  caller: Principal,
  promptId: string,
  afterRevision: number,
  deliver: (u: PromptUpdate) => Promise<void>,
  signal: AbortSignal,
): Promise<void> {
  const prompt = await deps.prompts.byId(promptId);
  if (!prompt || prompt.accountId !== caller.accountId) throw notFound`prompt ${promptId}`;
  if (afterRevision > prompt.revision) {
    throw invalidArgument('after_revision', `prompt ${promptId} is at revision ${prompt.revision}, before ${afterRevision}`);
  }
  await runFeed<PromptUpdate>({
    bus: deps.bus,
    channel: promptChannel(promptId),
    afterRevision,
    load: async (after, limit) =>
      (await deps.prompts.logsByRevision(promptId, after, limit)).map((entry) => {
        const revision = replayRevision(entry);
        return { revision, event: entry.table === 'prompts' ? { revision, updated: entry.row } : { revision, entry } };
      }),
    parse,
    deliver: (item) => deliver(item.event),
    maxPending: deps.maxPending,
    signal,
    isFinal: (item) => 'deleted' in item.event,
    caughtUp: (revision) => deliver({ revision, caughtUp: true }),
  });
}
