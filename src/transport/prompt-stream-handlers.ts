import { z } from 'zod';
import type { PromptServiceServer, WatchPromptResponse } from '../gen/parley/prompt/v1/prompt.js';
import { watchPrompt, type PromptUpdate } from '../prompt/watch.js';
import type { Bus } from '../ports/bus.js';
import type { PromptRepo } from '../storage/prompt-repo.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { uuid } from './zod-fields.js';
import { toHistory, toPluginUsage, toPrompt, toToolCall } from './prompt-handlers.js';
import { serverStream, type ServiceHandlers } from './rpc.js';

const watchRequest = z.object({ promptId: uuid, afterRevision: z.number().int().nonnegative('must not be negative') });

function toResponse(promptId: string, u: PromptUpdate): WatchPromptResponse {
  const base = { promptId, revision: u.revision };
  if ('caughtUp' in u) return { update: { ...base, caughtUp: {} } };
  if ('updated' in u) return { update: { ...base, promptUpdated: toPrompt(u.updated) } };
  if ('deleted' in u) return { update: { ...base, promptDeleted: {} } };
  switch (u.entry.table) {
    case 'prompt_history':
      return { update: { ...base, history: toHistory(u.entry.row) } };
    case 'prompt_tool_calls':
      return { update: { ...base, toolCall: toToolCall(u.entry.row) } };
    case 'prompt_plugin_usage':
      return { update: { ...base, pluginUsage: toPluginUsage(u.entry.row) } };
  }
}

export function promptStreamHandlers(deps: { prompts: PromptRepo; bus: Bus; maxPending: number }): Pick<ServiceHandlers<PromptServiceServer>, 'watchPrompt'> {
  return {
    watchPrompt: serverStream(async (req, out, ctx) => {
      const r = parseInput(watchRequest, req);
      await watchPrompt(deps, callerOf(ctx), r.promptId, r.afterRevision, (u) => out.send(toResponse(r.promptId, u)), ctx.signal);
    }),
  };
}
