import { z } from 'zod';
import type { PromptServiceServer, WatchPromptRequest, WatchPromptResponse } from '../gen/parley/prompt/v1/prompt.js';
import type { PromptUpdate, PromptWatch } from '../prompt/watch.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { uuid } from './zod-fields.js';
import { toHistory, toPluginUsage, toPrompt, toToolCall } from './prompt-handlers.js';
import { type ServiceHandlers } from './rpc.js';

const watchRequest: z.ZodType<{ promptId: string; afterRevision: number }, Partial<WatchPromptRequest>> = z.object({
  promptId: uuid,
  afterRevision: z.number().int().nonnegative('must not be negative'),
});

/** The wire form of one update: the event itself, or the caught-up marker. */
function toResponse(promptId: string, u: PromptUpdate): WatchPromptResponse {
  const base = { promptId, revision: u.revision };
  switch (u.type) {
    case 'caught_up':
      return { update: { ...base, caughtUp: {} } };
    case 'prompt_updated':
      return { update: { ...base, promptUpdated: toPrompt(u.row) } };
    case 'prompt_deleted':
      return { update: { ...base, promptDeleted: {} } };
    case 'history':
      return { update: { ...base, history: toHistory(u.row) } };
    case 'tool_call':
      return { update: { ...base, toolCall: toToolCall(u.row) } };
    case 'plugin_usage':
      return { update: { ...base, pluginUsage: toPluginUsage(u.row) } };
  }
}

export function promptStreamHandlers(watch: PromptWatch): Pick<ServiceHandlers<PromptServiceServer>, 'watchPrompt'> {
  return {
    watchPrompt: async (req, out, ctx) => {
      const r = parseInput(watchRequest, req);
      await watch.watch(callerOf(ctx), r.promptId, r.afterRevision, (u) => out.send(toResponse(r.promptId, u)), ctx.signal);
    },
  };
}
