import { once } from 'node:events';
import type { ServerDuplexStream, ServerWritableStream } from '@grpc/grpc-js';

/**
 * Writes one message with backpressure: when grpc-js's buffer is full it waits for the client to drain
 * it, and gives up quietly when the call ends (the signal aborts). A consumer that stays behind is cut off
 * by the feed's bounded buffer, not here.
 */
export async function send<T>(
  call: ServerWritableStream<unknown, T> | ServerDuplexStream<unknown, T>,
  message: T,
  signal: AbortSignal,
): Promise<void> {
  if (call.write(message)) return;
  await once(call, 'drain', { signal }).catch(() => {});
}

/** What `receive` needs of a client-streaming or duplex call. */
interface Readable {
  iterator(options: { destroyOnReturn: boolean }): AsyncIterable<unknown>;
}

/**
 * A call's incoming messages, ended for a client that goes quiet: when a message is awaited for idleMs,
 * the wait rejects with `onIdle()`, so the handler ends the call. The time a handler spends between reads
 * does not count. When the call's signal aborts, the wait ends as if the client had finished sending, so
 * the handler's own cancellation path runs. Call close() when done reading.
 */
export class Incoming<T> implements AsyncIterableIterator<T> {
  private readonly source: AsyncIterator<unknown>;
  private readonly timer: NodeJS.Timeout;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void } | undefined;
  private closed = false;

  constructor(
    call: Readable,
    idleMs: number,
    private readonly signal: AbortSignal,
    private readonly onIdle: () => Error,
  ) {
    // destroyOnReturn: false, so stopping early leaves the call open for the response.
    this.source = call.iterator({ destroyOnReturn: false })[Symbol.asyncIterator]();
    // One timer per call, re-armed by each read; it only acts while a read is waiting.
    this.timer = setTimeout(() => this.expire(), idleMs).unref();
    signal.addEventListener('abort', this);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.closed || this.signal.aborted) return Promise.resolve({ done: true, value: undefined });
    this.timer.refresh();
    return new Promise((resolve, reject) => {
      const waiting = (this.waiting = { resolve, reject });
      this.source.next().then(
        (r) => this.settle(waiting, () => resolve(r as IteratorResult<T>)),
        (e) => this.settle(waiting, () => reject(e)),
      );
    });
  }

  async return(): Promise<IteratorResult<T>> {
    this.close();
    return { done: true, value: undefined };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.signal.removeEventListener('abort', this);
  }

  /** The signal aborted: end the wait in progress as the end of input. */
  handleEvent(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve({ done: true, value: undefined });
  }

  private settle(waiting: NonNullable<Incoming<T>['waiting']>, fn: () => void): void {
    // Settled already by the idle timer or the signal: this late result has no reader.
    if (this.waiting !== waiting) return;
    this.waiting = undefined;
    fn();
  }

  private expire(): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    this.close();
    w.reject(this.onIdle());
  }
}
