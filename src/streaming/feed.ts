import { AppError } from '../errors.js';
import type { Bus } from '../ports/bus.js';
import type { Telemetry, WatcherKind } from '../ports/telemetry.js';

/** A committed change has a revision; an ephemeral one (a token delta) does not and is never replayed. */
export type FeedItem<E> = { revision: number; event: E } | { revision: undefined; event: E };

export interface FeedOptions<E> {
  bus: Bus;
  channel: string;
  /** Deliver what was committed after this revision, then everything live. */
  afterRevision: number;
  /** Committed items with revision > after, ascending, at most `limit` (from Postgres, the record). */
  load(after: number, limit: number): Promise<Array<{ revision: number; event: E }>>;
  /** Decodes one bus message; undefined drops it. */
  parse(message: string): FeedItem<E> | undefined;
  /** Hands one item to the consumer; resolves when it may take the next. */
  deliver(item: FeedItem<E>): Promise<void>;
  /** More undelivered live messages than this means the consumer is too slow: the feed fails. */
  maxPending: number;
  signal: AbortSignal;
  /** Stop after delivering this item (e.g. the session was deleted). */
  isFinal?(item: FeedItem<E>): boolean;
  /**
   * Called once, when the replay is done and before anything live is delivered, with the revision the replay
   * reached; resolves when the consumer may take the next item. Not called when the feed ends during the replay.
   */
  caughtUp?(revision: number): Promise<void>;
  /** Where the feed reports itself as a watcher of `kind`: open, how far behind, cut off. */
  observed?: { telemetry: Telemetry; kind: WatcherKind };
}

/** RESOURCE_EXHAUSTED for the client: it fell too far behind, and may resume from `lastRevision`. */
export class SlowConsumerError extends AppError {
  constructor(readonly lastRevision: number) {
    super('RESOURCE_EXHAUSTED', `watcher too slow: it fell more than its buffer behind; resume with after_revision=${lastRevision}`, [], {
      reason: 'WATCHER_TOO_SLOW',
      metadata: new Map([['last_revision', String(lastRevision)]]),
    });
  }
}

const PAGE = 500;

/**
 * Replay-then-live with no gap and no duplicate. The bus subscription opens before the replay query, so
 * anything committed during the replay is either in the query's result or arrives on the bus; revisions
 * decide which copy is delivered. A live revision beyond last+1 means messages were missed (the bus is
 * at-most-once, and Redis may restart), so the gap is read from Postgres before going on.
 * Between the replay and the first live item, `caughtUp` marks the switch: everything before it was replayed.
 * Resolves when the signal aborts or a final item was delivered; rejects with SlowConsumerError.
 */
export function runFeed<E>(opts: FeedOptions<E>): Promise<number> {
  return new Feed(opts).run();
}

/**
 * One feed's state. A class rather than closures: an idle watcher is one of these, parked on one promise,
 * plus its bus and reconnect callbacks. The abort listener is the object itself (handleEvent), and the
 * cut-off of a delivery stuck on a consumer that stopped reading exists only while a delivery is in flight.
 */
class Feed<E> {
  private last: number;
  /** Undelivered live messages; allocated on the first one. */
  private pending: string[] | undefined;
  private wake: (() => void) | undefined;
  private resync = true;
  /** The first catch-up (the replay) is still to be marked as done. */
  private replaying = true;
  private overflow = false;
  private done = false;
  /** Rejects the delivery in flight, if any, when the buffer overflows. */
  private cut: ((err: Error) => void) | undefined;

  constructor(private readonly opts: FeedOptions<E>) {
    this.last = opts.afterRevision;
  }

  private onMessage(m: string): void {
    const pending = (this.pending ??= []);
    const observed = this.opts.observed;
    if (pending.length >= this.opts.maxPending) {
      if (!this.overflow) observed?.telemetry.watcherCutOff(observed.kind, 'too_slow');
      this.overflow = true;
      this.cut?.(new SlowConsumerError(this.last));
    } else {
      pending.push(m);
      observed?.telemetry.watcherBuffered(observed.kind, pending.length);
    }
    this.notify();
  }

  private onReconnect(): void {
    this.resync = true;
    this.notify();
  }

  /** The signal's abort listener (EventTarget calls handleEvent of a listener object). */
  handleEvent(): void {
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async deliver(item: FeedItem<E>): Promise<void> {
    if (this.overflow) throw new SlowConsumerError(this.last);
    const delivered = this.opts.deliver(item);
    try {
      await new Promise<void>((resolve, reject) => {
        this.cut = reject;
        delivered.then(resolve, reject);
      });
    } finally {
      this.cut = undefined;
    }
    if (item.revision !== undefined) this.last = item.revision;
    if (this.opts.isFinal?.(item)) this.done = true;
  }

  /** Delivers the caught-up marker, cut off like any delivery when the buffer overflows meanwhile. */
  private async mark(): Promise<void> {
    const caughtUp = this.opts.caughtUp;
    if (!caughtUp) return;
    if (this.overflow) throw new SlowConsumerError(this.last);
    try {
      await new Promise<void>((resolve, reject) => {
        this.cut = reject;
        caughtUp.call(this.opts, this.last).then(resolve, reject);
      });
    } finally {
      this.cut = undefined;
    }
  }

  private async catchUp(): Promise<void> {
    for (;;) {
      const page = await this.opts.load(this.last, PAGE);
      for (const item of page) {
        if (this.done || this.opts.signal.aborted) return;
        if (item.revision > this.last) await this.deliver(item);
      }
      if (page.length < PAGE) return;
    }
  }

  async run(): Promise<number> {
    const { opts } = this;
    const observed = opts.observed;
    const sub = await opts.bus.subscribe(opts.channel, (m) => this.onMessage(m));
    observed?.telemetry.watcherOpened(observed.kind);
    const offReconnect = opts.bus.onReconnect(() => this.onReconnect());
    opts.signal.addEventListener('abort', this);
    try {
      while (!this.done && !opts.signal.aborted) {
        if (this.overflow) throw new SlowConsumerError(this.last);
        if (this.resync) {
          this.resync = false;
          await this.catchUp();
          if (this.replaying && !this.done && !opts.signal.aborted) {
            this.replaying = false;
            await this.mark();
          }
          continue;
        }
        const message = this.pending?.shift();
        if (message === undefined) {
          await new Promise<void>((r) => (this.wake = r));
          continue;
        }
        const item = opts.parse(message);
        if (!item) continue;
        if (item.revision === undefined) await this.deliver(item);
        else if (item.revision === this.last + 1) await this.deliver(item);
        else if (item.revision > this.last + 1) {
          // Missed something: Postgres has it (this item included, as it was committed before publishing).
          await this.catchUp();
        }
        // item.revision <= last: already delivered by the replay.
      }
      return this.last;
    } finally {
      opts.signal.removeEventListener('abort', this);
      observed?.telemetry.watcherClosed(observed.kind);
      offReconnect();
      await sub.close();
    }
  }
}
