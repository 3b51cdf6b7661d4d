import type { Bus } from '../storage/kv.js';

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
}

export class SlowConsumerError extends Error {
  constructor(readonly lastRevision: number) {
    super(`consumer fell more than its buffer behind; resume with after_revision=${lastRevision}`);
  }
}

const PAGE = 500;

/**
 * Replay-then-live with no gap and no duplicate. The bus subscription opens before the replay query, so
 * anything committed during the replay is either in the query's result or arrives on the bus; revisions
 * decide which copy is delivered. A live revision beyond last+1 means messages were missed (the bus is
 * at-most-once, and Redis may restart), so the gap is read from Postgres before going on.
 * Resolves when the signal aborts or a final item was delivered; rejects with SlowConsumerError.
 */
export async function runFeed<E>(opts: FeedOptions<E>): Promise<number> {
  let last = opts.afterRevision;
  const pending: string[] = [];
  let wake: (() => void) | undefined;
  let resync = true;
  let overflow = false;
  // Settles when the buffer overflows, so a delivery stuck on a consumer that stopped reading is cut too.
  let onOverflow!: () => void;
  const overflowed = new Promise<'overflow'>((r) => (onOverflow = () => r('overflow')));
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  const sub = await opts.bus.subscribe(opts.channel, (m) => {
    if (pending.length >= opts.maxPending) {
      overflow = true;
      onOverflow();
    } else pending.push(m);
    notify();
  });
  const offReconnect = opts.bus.onReconnect(() => {
    resync = true;
    notify();
  });
  const onAbort = () => notify();
  opts.signal.addEventListener('abort', onAbort);

  let done = false;
  const deliver = async (item: FeedItem<E>) => {
    if ((await Promise.race([opts.deliver(item), overflowed])) === 'overflow') throw new SlowConsumerError(last);
    if (item.revision !== undefined) last = item.revision;
    if (opts.isFinal?.(item)) done = true;
  };
  const catchUp = async () => {
    for (;;) {
      const page = await opts.load(last, PAGE);
      for (const item of page) {
        if (done || opts.signal.aborted) return;
        if (item.revision > last) await deliver(item);
      }
      if (page.length < PAGE) return;
    }
  };

  try {
    while (!done && !opts.signal.aborted) {
      if (overflow) throw new SlowConsumerError(last);
      if (resync) {
        resync = false;
        await catchUp();
        continue;
      }
      const message = pending.shift();
      if (message === undefined) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      const item = opts.parse(message);
      if (!item) continue;
      if (item.revision === undefined) await deliver(item);
      else if (item.revision === last + 1) await deliver(item);
      else if (item.revision > last + 1) {
        // Missed something: Postgres has it (this item included, as it was committed before publishing).
        await catchUp();
      }
      // item.revision <= last: already delivered by the replay.
    }
    return last;
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    offReconnect();
    await sub.close();
  }
}
