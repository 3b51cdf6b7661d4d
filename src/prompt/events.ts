import type { Bus } from '../ports/bus.js';

/**
 * Bus channel of one prompt's changes. The id sits in a hash tag so a Redis Cluster keeps everything about
 * one prompt in one slot.
 */
export const promptChannel = (promptId: string) => `prompt:{${promptId}}`;

export type PromptEventKind = 'history' | 'tool_call' | 'plugin_usage' | 'prompt_updated' | 'prompt_deleted';

/**
 * What a log write (or a prompt update/delete) publishes after its transaction commits. `revision` is the
 * prompt's log revision after the change; a watcher that sees a gap replays from Postgres, because the bus
 * delivers at most once.
 */
export interface PromptEvent {
  kind: PromptEventKind;
  promptId: string;
  revision: number;
  row: unknown;
}

/** Best effort: the change is committed already, and a lost event is recovered by replay, not by failing. */
export async function publishPromptEvent(bus: Bus, event: PromptEvent): Promise<void> {
  await bus.publish(promptChannel(event.promptId), JSON.stringify(event)).catch(() => {});
}
