import type { Principal } from '../principal.js';
import { invalidArgument } from '../errors.js';
import type { Bus } from '../ports/bus.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { runFeed, type FeedItem } from '../streaming/feed.js';
import { decodePromptEvent, promptChannel, type PromptEvent } from './events.js';
import type { PromptUseCases } from './service.js';

/**
 * What a prompt watcher receives, each with the revision it took: the events a change announced (a log
 * entry or a prompt update replayable, the prompt's deletion live only), or the marker that the replay is
 * done.
 */
export type PromptUpdate = PromptEvent | { type: 'caught_up'; revision: number };

/** A bus message as a feed item: the deletion is not in the replayable log, so it carries no revision. */
function feedItem(event: PromptEvent): FeedItem<PromptUpdate> {
  return event.type === 'prompt_deleted' ? { revision: undefined, event } : { revision: event.revision, event };
}

/** WatchPrompt: a prompt's changes replayed from Postgres after a revision, a caught-up marker, then live. */
export class PromptWatch {
  constructor(
    private readonly prompts: PromptUseCases,
    private readonly bus: Bus,
    private readonly maxPending: number,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {}

  async watch(caller: Principal, promptId: string, afterRevision: number, deliver: (u: PromptUpdate) => Promise<void>, signal: AbortSignal): Promise<void> {
    // The same access check as every other RPC on a prompt: another account's prompt is NOT_FOUND.
    const prompt = await this.prompts.get(caller, { id: promptId });
    if (afterRevision > prompt.revision) {
      throw invalidArgument('after_revision', `prompt ${promptId} is at revision ${prompt.revision}, before ${afterRevision}`);
    }
    await runFeed<PromptUpdate>({
      bus: this.bus,
      channel: promptChannel(promptId),
      afterRevision,
      load: async (after, limit) => (await this.prompts.changesAfter(promptId, after, limit)).map((event) => ({ revision: event.revision, event })),
      parse: (message) => {
        const event = decodePromptEvent(message);
        return event && feedItem(event);
      },
      deliver: (item) => deliver(item.event),
      maxPending: this.maxPending,
      signal,
      isFinal: (item) => item.event.type === 'prompt_deleted',
      caughtUp: (revision) => deliver({ type: 'caught_up', revision }),
      observed: { telemetry: this.telemetry, kind: 'prompt' },
    });
  }
}
