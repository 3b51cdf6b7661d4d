import { z } from 'zod';
import { decodeJson, encodeJson, zodCodec } from '../json-codec.js';
import type { Bus } from '../ports/bus.js';
import type { GonePrompt, HistoryRow, PluginUsageRow, PromptRow, ReplayEntry, ToolCallRow } from './store.js';
import { historyRowSchema, pluginUsageRowSchema, promptRowSchema, toolCallRowSchema } from './store.js';

/**
 * Bus channel of one prompt's changes. The id sits in a hash tag so a Redis Cluster keeps everything about
 * one prompt in one slot.
 */
export const promptChannel = (promptId: string) => `prompt:{${promptId}}`;

const base = { v: z.literal(1), promptId: z.string(), revision: z.number().int() };

/**
 * What a committed change of a prompt announces: the bus carries it, and WatchPrompt delivers it whether it
 * came over the bus or was replayed from Postgres. `revision` is the prompt's revision after the change; a
 * watcher that sees a gap replays, because the bus delivers at most once. `v` versions the shape: a
 * replica never has to guess what another one published.
 */
const promptEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('history'), ...base, row: historyRowSchema }),
  z.object({ type: z.literal('tool_call'), ...base, row: toolCallRowSchema }),
  z.object({ type: z.literal('plugin_usage'), ...base, row: pluginUsageRowSchema }),
  z.object({ type: z.literal('prompt_updated'), ...base, row: promptRowSchema }),
  z.object({ type: z.literal('prompt_deleted'), ...base }),
]);
export type PromptEvent = z.infer<typeof promptEventSchema>;

const promptEventCodec = zodCodec(promptEventSchema);

/** The one place each kind of event is built. */
export const promptEvents = {
  history: (row: HistoryRow): PromptEvent => ({ type: 'history', v: 1, promptId: row.promptId, revision: row.revision, row }),
  toolCall: (row: ToolCallRow): PromptEvent => ({ type: 'tool_call', v: 1, promptId: row.promptId, revision: row.revision, row }),
  pluginUsage: (row: PluginUsageRow): PromptEvent => ({ type: 'plugin_usage', v: 1, promptId: row.promptId, revision: row.revision, row }),
  /** `revision`: the revision of the update (a replayed prompt row has moved on since). */
  updated: (row: PromptRow, revision = row.revision): PromptEvent => ({ type: 'prompt_updated', v: 1, promptId: row.id, revision, row }),
  deleted: (p: Pick<GonePrompt, 'id' | 'revision'>): PromptEvent => ({ type: 'prompt_deleted', v: 1, promptId: p.id, revision: p.revision }),
  /** A change replayed from Postgres, as the event that announced it. */
  replayed: (e: ReplayEntry): PromptEvent => {
    switch (e.table) {
      case 'prompt_history':
        return promptEvents.history(e.row);
      case 'prompt_tool_calls':
        return promptEvents.toolCall(e.row);
      case 'prompt_plugin_usage':
        return promptEvents.pluginUsage(e.row);
      case 'prompts':
        return promptEvents.updated(e.row, e.revision);
    }
  },
};

/** Publishes a committed change; callers run it through afterCommit, which contains a failure. */
export function publishPromptEvent(bus: Bus, event: PromptEvent): Promise<void> {
  return bus.publish(promptChannel(event.promptId), encodeJson(promptEventCodec, event));
}

/** A bus message back as its event; undefined when it is not one (a lost message is replayed anyway). */
export function decodePromptEvent(message: string): PromptEvent | undefined {
  try {
    return decodeJson(promptEventCodec, message);
  } catch {
    return undefined;
  }
}
