import { randomUUID } from 'node:crypto';
import type { Principal } from '../principal.js';
import { AppError, clip, invalidArgument, notFound, publicMessage } from '../errors.js';
import { fingerprintOf } from '../fingerprint.js';
import type { Bus } from '../ports/bus.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { runFeed, type FeedItem, type FeedOptions } from '../streaming/feed.js';
import { busMessageCodec, sessionChannel, type EphemeralEvent, type SessionEvent } from './events.js';
import { ACTORS, type Actor, type DialogueFormatName } from './dialogue-format.js';
import type { GenieUseCases, Rendering } from './service.js';
import type { TokenizerEncoding } from './tokens.js';
import type { SessionEventLog } from './store.js';
import type { UtteranceRelay } from './utterance-relay.js';

/**
 * One update as a watcher receives it: a committed revision, the end of the replay (`caughtUp`, at the
 * revision the replay reached), or live-only news about an utterance.
 */
export type LiveUpdate =
  | { revision: number; commit: SessionEvent[] }
  | { revision: number; caughtUp: true }
  | { revision: number; snapshot: Rendering }
  | { revision: 0; ephemeral: EphemeralEvent };

/** Where a watch starts. */
export interface WatchStart {
  /** Replay what was committed after this revision (ignored with a snapshot, which sets it). */
  afterRevision: number;
  /** Utterance id → the last chunk index the consumer has of it. */
  afterDeltas: ReadonlyMap<string, number>;
  /** Start from the dialogue rendered at the current revision instead of a replay. */
  snapshot?: { format: DialogueFormatName; tokenBudget?: number | undefined; encoding?: TokenizerEncoding | undefined } | undefined;
}

/**
 * The first message of a StreamUtterance, parsed by transport: it names the session and the speaker, and
 * what the utterance is (empty strings and undefined mean "not set").
 */
export interface UtteranceStart {
  sessionId: string;
  actor: Actor;
  eventName: string;
  utteranceId: string;
  text: string;
  expectedRevision: number | undefined;
  lastChunk: boolean;
  requestId: string;
}

/** A later message, parsed by transport against the first: more text, and whether it is the last. */
export interface UtterancePart {
  text: string;
  lastChunk: boolean;
}

/** A committed utterance: what changed, never its text. */
export interface UtteranceCommit {
  utteranceId: string;
  revision: number;
  /** 1-based position of the element in the dialogue. */
  dialogueIndex: number;
  /** The session's state after the commit. */
  state: string;
  updateTime: Date;
}

/** The RPC whose commits a StreamUtterance request id claims. */
const STREAM_UTTERANCE = 'parley.genie.v1.GenieService/StreamUtterance';

export const MESSAGE_AFTER_LAST_CHUNK = 'MESSAGE_AFTER_LAST_CHUNK';

/** INVALID_ARGUMENT for a message after the one with last_chunk; `revision` is where the utterance committed. */
export function messageAfterLastChunk(revision?: number): AppError {
  const committed = revision === undefined ? '' : `; the utterance stays committed at revision ${revision}`;
  return new AppError('INVALID_ARGUMENT', `last_chunk: no message may follow the one with last_chunk set${committed}`, [
    { field: 'last_chunk', description: `no message may follow the one with last_chunk set${committed}` },
  ], { reason: MESSAGE_AFTER_LAST_CHUNK, metadata: revision === undefined ? undefined : new Map([['revision', String(revision)]]) });
}

/** Live side of genie sessions: watching (replay, then live) and streamed utterances. */
export class GenieWatch {
  constructor(
    private readonly genie: GenieUseCases,
    private readonly log: SessionEventLog,
    private readonly relay: UtteranceRelay,
    private readonly bus: Bus,
    /** Undelivered live updates a watcher may fall behind by before it is cut off. */
    private readonly maxPending: number,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {}

  /**
   * Delivers every revision committed after `start.afterRevision` (or, with `start.snapshot`, the dialogue
   * rendered at the current revision, and what was committed after it), then the deltas so far of the
   * utterances in flight (after `start.afterDeltas`), then one caughtUp update, then live updates, until the
   * signal aborts or the session is deleted. An utterance's deltas come once each, in chunk order, and none
   * after its commit or abort. A consumer more than maxPending updates behind fails with RESOURCE_EXHAUSTED.
   * `opened`, when given, is awaited with the session's revision once the session was found, before
   * anything is delivered.
   */
  async watch(
    caller: Principal,
    sessionId: string,
    start: WatchStart,
    deliver: (u: LiveUpdate) => Promise<void>,
    signal: AbortSignal,
    opened?: (revision: number) => Promise<void>,
  ): Promise<void> {
    const head = await this.log.head(sessionId);
    if (!head || head.accountId !== caller.accountId || (start.snapshot && head.deleted)) throw notFound`session ${sessionId}`;
    let afterRevision = start.afterRevision;
    if (afterRevision > head.revision) {
      throw invalidArgument('after_revision', `session ${sessionId} is at revision ${head.revision}, before ${afterRevision}`);
    }
    // Rendered before the watch is opened, so a refusal (a rendering too large) is the call's status.
    const snapshot = start.snapshot && (await this.genie.renderWithin(caller, sessionId, { ...start.snapshot, revision: head.revision }));
    await opened?.(head.revision);
    if (snapshot) {
      // The feed replays from the snapshot's revision: whatever commits meanwhile comes next, from Postgres.
      await deliver({ revision: snapshot.revision, snapshot });
      afterRevision = snapshot.revision;
    }
    if (head.deleted && afterRevision >= head.revision) return;
    // Returned, not awaited: an idle watcher then holds no suspended frame of its own besides the feed's.
    const feed = new SessionFeed(this.bus, sessionId, afterRevision, this.maxPending, signal, this.log, this.relay, new DeltaPositions(start.afterDeltas), deliver, this.telemetry);
    return runFeed(feed).then(ended);
  }

  /**
   * Streams one utterance: each chunk is published as a delta, and the whole text is committed as one
   * dialogue element on the chunk marked last_chunk, or when the chunks end normally. Cancellation, a bad
   * chunk, a chunk over a limit (the iterable throws: the transport bounds how much text is held and for how
   * long) or a failed commit before the commit publish an aborted update instead, and nothing is written. A
   * message after the last chunk fails with MESSAGE_AFTER_LAST_CHUNK; the commit stays. With a request id,
   * a repeat of an utterance already committed returns the first commit (its own deltas are aborted).
   */
  async streamUtterance(caller: Principal, start: UtteranceStart, rest: AsyncIterable<UtterancePart>, signal: AbortSignal): Promise<UtteranceCommit> {
    const first = await this.begin(caller, start);
    const chunks = (async function* () {
      yield start;
      yield* rest;
    })();
    let text = '';
    let index = 0;
    let committed: UtteranceCommit | undefined;
    const abort = (reason: string) => this.relay.aborted(first.sessionId, first.utteranceId, clip(reason, 1000));
    const unacked = new Unacked();
    try {
      for await (const chunk of chunks) {
        // Transport refuses a message after last_chunk before counting it; this is the domain's own guard.
        if (committed) throw messageAfterLastChunk(committed.revision);
        if (chunk.text) {
          text += chunk.text;
          await unacked.add(this.relay.delta(first.sessionId, { utteranceId: first.utteranceId, actor: first.actor, chunkIndex: index++, text: chunk.text }));
        }
        if (chunk.lastChunk) committed = await this.commit(caller, first, text);
      }
      if (committed) return committed;
      // A cancelling grpc client may flush END_STREAM just before its RST_STREAM, so end-of-input can come
      // a moment before the cancellation. Give the cancellation that moment: a vanished worker's half
      // utterance must never be committed.
      await settle(signal, CANCEL_GRACE_MS);
      if (signal.aborted) throw new AppError('CANCELLED', 'the worker went away before finishing the utterance', [], { reason: 'UTTERANCE_CANCELLED' });
      return await this.commit(caller, first, text);
    } catch (err) {
      if (committed) {
        if (err instanceof AppError && err.reason === MESSAGE_AFTER_LAST_CHUNK) throw messageAfterLastChunk(committed.revision);
        // A worker that sent last_chunk and then neither half-closed nor sent anything: the commit stands, and
        // the idle limit ends the wait for the close with the commit's answer, not with an error.
        if (err instanceof AppError && err.reason === 'CLIENT_STREAM_IDLE') return committed;
        throw err;
      }
      await abort(signal.aborted ? 'cancelled' : publicMessage(err));
      throw err;
    } finally {
      await unacked.drain();
    }
  }

  /** Commits the utterance (at most once per request id); a repeat aborts this stream's deltas. */
  private async commit(caller: Principal, first: Utterance, text: string): Promise<UtteranceCommit> {
    const requestId = first.requestId || undefined;
    const fingerprint = requestId
      ? fingerprintOf({
          sessionId: first.sessionId,
          actor: first.actor,
          eventName: first.eventName,
          utteranceId: first.clientUtteranceId,
          expectedRevision: first.expectedRevision,
          text,
        })
      : '';
    // Without a request id there is nothing to claim: the commit takes the one-statement path of any write.
    const once = requestId ? { scope: `account:${caller.accountId}`, method: STREAM_UTTERANCE, requestId, fingerprint } : undefined;
    const req = { sessionId: first.sessionId, expectedRevision: first.expectedRevision ?? 0, once, utteranceId: first.utteranceId };
    const view = first.eventName
      ? (await this.genie.sendEvent(caller, { ...req, event: first.eventName, actor: first.actor, actorInput: text })).view
      : await this.genie.appendDialogue(caller, { ...req, actor: first.actor, actorText: text });
    const s = view.session;
    if (view.replayed) {
      const reason = `a retry of request_id ${first.requestId}, already committed at revision ${s.revision}`;
      await this.relay.aborted(first.sessionId, first.utteranceId, reason);
    } else {
      await this.relay.committed(first.sessionId, first.utteranceId);
    }
    return { utteranceId: first.utteranceId, revision: s.revision, dialogueIndex: s.dialogueLength, state: s.state, updateTime: s.updatedAt };
  }

  private async begin(caller: Principal, chunk: UtteranceStart): Promise<Utterance> {
    const head = await this.log.head(chunk.sessionId);
    if (!head || head.accountId !== caller.accountId || head.deleted) throw notFound`session ${chunk.sessionId}`;
    // With a request id, the generated utterance id is that id, so a retry answers with the first one's.
    const utteranceId = chunk.utteranceId || chunk.requestId || randomUUID();
    return { ...chunk, clientUtteranceId: chunk.utteranceId, utteranceId };
  }
}

/**
 * Deltas handed to the relay and not yet acknowledged by the store. A worker's next chunk does not wait for
 * the previous one's round trip to Redis — the relay's commands go out in order on one connection, and local
 * watchers already have the delta — but at most MAX_UNACKED wait at once, so a slow Redis slows the worker
 * down rather than piling up its chunks. The relay contains its failures: these never reject.
 */
class Unacked {
  private readonly pending: Array<Promise<void>> = [];

  async add(sent: Promise<void>): Promise<void> {
    this.pending.push(sent);
    if (this.pending.length > MAX_UNACKED) await this.pending.shift();
  }

  async drain(): Promise<void> {
    await Promise.all(this.pending.splice(0));
  }
}

const MAX_UNACKED = 64;

/** An utterance under way: its first message, with the utterance id it goes out under. */
type Utterance = UtteranceStart & { clientUtteranceId: string };

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
  readonly observed: FeedOptions<LiveUpdate>['observed'];

  constructor(
    readonly bus: Bus,
    private readonly sessionId: string,
    readonly afterRevision: number,
    readonly maxPending: number,
    readonly signal: AbortSignal,
    private readonly log: SessionEventLog,
    private readonly relay: UtteranceRelay,
    private readonly positions: DeltaPositions,
    private readonly sink: (u: LiveUpdate) => Promise<void>,
    telemetry: Telemetry,
  ) {
    this.channel = sessionChannel(sessionId);
    this.observed = { telemetry, kind: 'genie' };
  }

  async load(after: number, limit: number): Promise<Array<{ revision: number; event: LiveUpdate }>> {
    return (await this.log.commitsAfter(this.sessionId, after, limit)).map((c) => ({ revision: c.revision, event: { revision: c.revision, commit: c.events } }));
  }

  deliver(item: FeedItem<LiveUpdate>): Promise<void> {
    const u = item.event;
    if ('ephemeral' in u) {
      const e = u.ephemeral;
      if (e.type === 'utterance_delta') {
        if (!this.positions.take(e.utteranceId, e.chunkIndex)) return DONE;
      } else this.positions.end(e.utteranceId);
    } else if ('commit' in u) {
      for (const e of u.commit) if (e.type === 'dialogue_appended' && e.utteranceId) this.positions.end(e.utteranceId);
    }
    return this.sink(u);
  }

  /**
   * After the replay: the deltas so far of the utterances still in flight. The bus subscription is older than
   * this read, so a delta missing from the log arrives live, and one in both is delivered once (positions);
   * an utterance whose commit the replay delivered is over, even if the log still had it.
   */
  async caughtUp(revision: number): Promise<void> {
    for (const d of await this.relay.inFlight(this.sessionId)) {
      if (this.signal.aborted) return;
      if (this.positions.take(d.utteranceId, d.chunkIndex)) await this.sink({ revision: 0, ephemeral: d });
    }
    return this.sink({ revision, caughtUp: true });
  }
}

const DONE = Promise.resolve();

/** Utterances a watch follows at most (each a few dozen bytes); the oldest is forgotten past it. */
const MAX_FOLLOWED = 64;

/**
 * Per utterance, the last chunk index a watch delivered (or its consumer had when it resumed), and the
 * utterances it saw end: a delta is delivered only once, in order, and never after its utterance ended.
 */
export class DeltaPositions {
  private readonly last = new Map<string, number>();
  private readonly ended = new Set<string>();

  constructor(initial: ReadonlyMap<string, number> = new Map()) {
    for (const [id, index] of initial) this.last.set(id, index);
  }

  /** Whether the delta is new to the consumer (and now counted as delivered). */
  take(utteranceId: string, chunkIndex: number): boolean {
    if (this.ended.has(utteranceId)) return false;
    const last = this.last.get(utteranceId);
    if (last !== undefined && chunkIndex <= last) return false;
    this.last.delete(utteranceId);
    this.last.set(utteranceId, chunkIndex);
    bound(this.last);
    return true;
  }

  end(utteranceId: string): void {
    this.last.delete(utteranceId);
    this.ended.add(utteranceId);
    bound(this.ended);
  }
}

function bound(m: Map<string, number> | Set<string>): void {
  if (m.size <= MAX_FOLLOWED) return;
  for (const k of m.keys()) {
    m.delete(k);
    break;
  }
}

const isDeleted = (item: FeedItem<LiveUpdate>) => 'commit' in item.event && item.event.commit.some((e) => e.type === 'session_deleted');
const ended = () => undefined;

/** A delta exactly as the bus message schema would accept it (the same fields and types), else undefined. */
export function asDelta(json: unknown): EphemeralEvent | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const d = json as Record<string, unknown>;
  if (d.type !== 'utterance_delta' || d.v !== 1) return undefined;
  const { utteranceId, actor, chunkIndex, text } = d;
  if (typeof utteranceId !== 'string' || typeof text !== 'string' || !Number.isInteger(chunkIndex) || !isActor(actor)) return undefined;
  return { type: 'utterance_delta', v: 1, utteranceId, actor, chunkIndex: chunkIndex as number, text };
}

const isActor = (a: unknown): a is Actor => typeof a === 'string' && (ACTORS as readonly string[]).includes(a);

/**
 * The last message parsed and what it parsed to: a replica hands one message to every local watcher of the
 * session in turn, so it is parsed once, not once per watcher (items are never mutated).
 */
let lastParsed: { message: string; item: FeedItem<LiveUpdate> | undefined } | undefined;

/** A message of the session's channel; one that does not decode (another version, corrupt) is skipped. */
function parseLive(message: string): FeedItem<LiveUpdate> | undefined {
  if (lastParsed?.message === message) return lastParsed.item;
  const item = decodeLive(message);
  lastParsed = { message, item };
  return item;
}

function decodeLive(message: string): FeedItem<LiveUpdate> | undefined {
  let m;
  try {
    const json: unknown = JSON.parse(message);
    // Deltas are most of what a channel carries: their flat shape is checked by hand, the rest by the schema.
    const delta = asDelta(json);
    if (delta) return { revision: undefined, event: { revision: 0, ephemeral: delta } };
    m = busMessageCodec.decode(json);
  } catch {
    return undefined;
  }
  if (m.type === 'commit') return { revision: m.revision, event: { revision: m.revision, commit: m.events } };
  return { revision: undefined, event: { revision: 0, ephemeral: m } };
}
