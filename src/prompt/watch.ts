import type { Principal } from '../auth.js';
import { invalidArgument, notFound } from '../errors.js';
import type { Bus } from '../storage/kv.js';
import type { HistoryRow, LogEntry, PluginUsageRow, PromptRepo, PromptRow, ToolCallRow } from '../storage/prompt-repo.js';
import { runFeed, type FeedItem } from '../streaming/feed.js';
import { promptChannel, type PromptEvent } from './events.js';

/** What a prompt watcher receives: a log entry (replayable, with its revision) or live news of the prompt. */
export type PromptUpdate =
  | { revision: number; entry: LogEntry }
  | { revision: 0; updated: PromptRow }
  | { revision: 0; deleted: true };

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
      return { revision: undefined, event: { revision: 0, updated: revive(e.row as PromptRow) } };
    case 'prompt_deleted':
      return { revision: undefined, event: { revision: 0, deleted: true } };
    default:
      return undefined;
  }
}

/** WatchPrompt: a prompt's log replayed from Postgres after a revision, then live. */
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
  const head = await deps.prompts.revisionOf(promptId);
  if (afterRevision > head) throw invalidArgument('after_revision', `prompt ${promptId} is at revision ${head}, before ${afterRevision}`);
  await runFeed<PromptUpdate>({
    bus: deps.bus,
    channel: promptChannel(promptId),
    afterRevision,
    load: async (after, limit) =>
      (await deps.prompts.logsByRevision(promptId, after, limit)).map((entry) => ({
        revision: entry.row.revision,
        event: { revision: entry.row.revision, entry },
      })),
    parse,
    deliver: (item) => deliver(item.event),
    maxPending: deps.maxPending,
    signal,
    isFinal: (item) => 'deleted' in item.event,
  });
}
