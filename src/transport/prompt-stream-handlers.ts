import type { ServerWritableStream } from '@grpc/grpc-js';
import { z } from 'zod';
import type { WatchPromptResponse } from '../gen/parley/prompt/v1/prompt.js';
import { watchPrompt, type PromptUpdate } from '../prompt/watch.js';
import type { Bus } from '../ports/bus.js';
import type { PromptRepo } from '../storage/prompt-repo.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { uuid } from './zod-fields.js';
import { toHistory, toPluginUsage, toPrompt, toToolCall } from './prompt-handlers.js';
import { serverStream, type Handler } from './rpc.js';
import { send } from './streams.js';

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

export function promptStreamHandlers(deps: { prompts: PromptRepo; bus: Bus; maxPending: number }): Record<string, Handler> {
  return {
    watchPrompt: serverStream(async (req, call: ServerWritableStream<unknown, WatchPromptResponse>, ctx) => {
      const r = parseInput(watchRequest, req);
      await watchPrompt(deps, callerOf(ctx), r.promptId, r.afterRevision, (u) => send(call, toResponse(r.promptId, u), ctx.signal), ctx.signal);
    }),
  };
}
