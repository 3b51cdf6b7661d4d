import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth.js';
import { AppError, invalidArgument, notFound, publicMessage } from '../errors.js';
import type { GenieEventLog } from '../storage/genie-events.js';
import type { GenieCache, LiveCommit, LiveEphemeral } from '../storage/genie-cache.js';
import { sessionChannel } from '../storage/genie-cache.js';
import type { Bus } from '../storage/kv.js';
import { runFeed, type FeedItem, type FeedOptions } from '../streaming/feed.js';
import type { Actor } from './dialogue-format.js';
import type { GenieService, SessionView } from './service.js';

/** One update as a watcher receives it: a committed revision, or live-only news about an utterance. */
export type LiveUpdate = { revision: number; commit: LiveCommit['events'] } | { revision: 0; ephemeral: LiveEphemeral };

export interface UtteranceChunk {
  sessionId: string;
  actor: string;
  event: string;
  utteranceId: string;
  text: string;
  expectedRevision: number;
  final: boolean;
}

/** Live side of genie sessions: watching (replay, then live) and streamed utterances. */
export class GenieLive {
  constructor(
    private readonly genie: GenieService,
    private readonly log: GenieEventLog,
    private readonly cache: GenieCache,
    private readonly bus: Bus,
    /** Undelivered live updates a watcher may fall behind by before it is cut off. */
    private readonly maxPending: number,
  ) {}

  /**
   * Delivers every revision committed after `afterRevision`, then live updates, until the signal aborts or
   * the session is deleted. A consumer more than maxPending updates behind fails with RESOURCE_EXHAUSTED.
   */
  async watch(
    caller: Principal,
    sessionId: string,
    afterRevision: number,
    deliver: (u: LiveUpdate) => Promise<void>,
    signal: AbortSignal,
  ): Promise<void> {
    const head = await this.log.head(sessionId);
    if (!head || head.accountId !== caller.accountId) throw notFound`session ${sessionId}`;
    if (afterRevision > head.revision) {
      throw invalidArgument('after_revision', `session ${sessionId} is at revision ${head.revision}, before ${afterRevision}`);
    }
    if (head.deleted && afterRevision >= head.revision) return;
    // Returned, not awaited: an idle watcher then holds no suspended frame of its own besides the feed's.
    return runFeed(new SessionFeed(this.bus, sessionId, afterRevision, this.maxPending, signal, this.log, deliver)).then(ended);
  }

  /**
   * Streams one utterance: each chunk is published as a delta, and the whole text is committed as one
   * dialogue element when the chunks end normally. Cancellation, a bad chunk, a chunk over a limit (the
   * iterable throws: the transport bounds how much text is held and for how long) or a failed commit
   * publish an aborted update instead, and nothing is written.
   */
  async streamUtterance(caller: Principal, chunks: AsyncIterable<UtteranceChunk>, signal: AbortSignal): Promise<{ view: SessionView; utteranceId: string }> {
    let first: (UtteranceChunk & { actor: Actor }) | undefined;
    let text = '';
    let index = 0;
    let final = false;
    const abort = async (reason: string) => {
      if (first) await this.cache.publishEphemeral(first.sessionId, { aborted: { utteranceId: first.utteranceId, reason } });
    };
    try {
      for await (const chunk of chunks) {
        if (final) throw invalidArgument('final', 'no message may follow the one marked final');
        final = chunk.final;
        if (!first) {
          first = await this.begin(caller, chunk);
        } else {
          for (const k of ['sessionId', 'actor', 'event', 'utteranceId'] as const) {
            if (chunk[k] && chunk[k] !== first[k]) throw invalidArgument(snake(k), `must be empty or ${JSON.stringify(first[k])} after the first message`);
          }
        }
        if (!chunk.text) {
          if (final) break;
          continue;
        }
        text += chunk.text;
        await this.cache.publishEphemeral(first.sessionId, {
          delta: { utteranceId: first.utteranceId, actor: first.actor, chunkIndex: index++, text: chunk.text },
        });
        if (final) break;
      }
      if (!first) throw invalidArgument('session_id', 'the stream ended before its first message');
      // A cancelling grpc client may flush END_STREAM just before its RST_STREAM, so end-of-input can come
      // a moment before the cancellation. Give the cancellation that moment: a vanished worker's half
      // utterance must never be committed.
      if (!final) await settle(signal, CANCEL_GRACE_MS);
      if (signal.aborted) throw new AppError('CANCELLED', 'the worker went away before finishing the utterance', [], { reason: 'UTTERANCE_CANCELLED' });
      const req = { sessionId: first.sessionId, expectedRevision: first.expectedRevision };
      const view = first.event
        ? (await this.genie.sendEvent(caller, { ...req, event: first.event, actor: first.actor, actorInput: text })).view
        : await this.genie.appendDialogue(caller, { ...req, actor: first.actor, actorText: text });
      return { view, utteranceId: first.utteranceId };
    } catch (err) {
      await abort(signal.aborted ? 'cancelled' : publicMessage(err));
      throw err;
    }
  }

  private async begin(caller: Principal, chunk: UtteranceChunk): Promise<UtteranceChunk & { actor: Actor }> {
    if (!chunk.sessionId) throw invalidArgument('session_id', 'is required in the first message');
    if (chunk.actor !== 'user' && chunk.actor !== 'assistant' && chunk.actor !== 'system') {
      throw invalidArgument('actor', 'must be system, assistant or user');
    }
    const head = await this.log.head(chunk.sessionId);
    if (!head || head.accountId !== caller.accountId || head.deleted) throw notFound`session ${chunk.sessionId}`;
    return { ...chunk, actor: chunk.actor, utteranceId: chunk.utteranceId || randomUUID() };
  }
}

/** How long end-of-input waits for a cancellation that may be right behind it. */
const CANCEL_GRACE_MS = 100;

function settle(signal: AbortSignal, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/**
 * One watch's feed options as a class, so its callbacks are shared methods rather than closures made per
 * watcher (under tsx every named closure also carries a `name` property).
 */
class SessionFeed implements FeedOptions<LiveUpdate> {
  readonly channel: string;
  readonly parse = parseLive;
  readonly isFinal = isDeleted;

  constructor(
    readonly bus: Bus,
    private readonly sessionId: string,
    readonly afterRevision: number,
    readonly maxPending: number,
    readonly signal: AbortSignal,
    private readonly log: GenieEventLog,
    private readonly sink: (u: LiveUpdate) => Promise<void>,
  ) {
    this.channel = sessionChannel(sessionId);
  }

  async load(after: number, limit: number): Promise<Array<{ revision: number; event: LiveUpdate }>> {
    return (await this.log.commitsAfter(this.sessionId, after, limit)).map((c) => ({ revision: c.revision, event: { revision: c.revision, commit: c.events } }));
  }

  deliver(item: FeedItem<LiveUpdate>): Promise<void> {
    return this.sink(item.event);
  }
}

const isDeleted = (item: FeedItem<LiveUpdate>) => 'commit' in item.event && item.event.commit.some((e) => e.kind === 'session_deleted');
const ended = () => undefined;

function parseLive(message: string): FeedItem<LiveUpdate> | undefined {
  const m = JSON.parse(message) as Partial<LiveCommit> & Partial<{ delta: unknown; aborted: unknown }>;
  if (typeof m.revision === 'number' && Array.isArray(m.events)) {
    return { revision: m.revision, event: { revision: m.revision, commit: m.events } };
  }
  if (m.delta || m.aborted) return { revision: undefined, event: { revision: 0, ephemeral: m as LiveEphemeral } };
  return undefined;
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
