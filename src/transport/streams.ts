import { once } from 'node:events';
import type { Readable as NodeReadable, Writable as NodeWritable } from 'node:stream';

/** Where a server-streaming or duplex handler writes its responses. */
export interface Sink<T> {
  /**
   * Writes one message with backpressure: when grpc-js's buffer is full it waits for the client to drain
   * it, and gives up quietly when the call ends (its signal aborts, or `signal` when given). After the call
   * has ended it does nothing. A consumer that stays behind is cut off by the feed's bounded buffer, not here.
   */
  send(message: T, signal?: AbortSignal): Promise<void>;
}

/** A Sink over a grpc-js writable call; a class, so a long-lived stream holds one small object. */
export class CallSink<T> implements Sink<T> {
  constructor(
    private readonly call: NodeWritable,
    private readonly signal: AbortSignal,
  ) {}

  async send(message: T, signal: AbortSignal = this.signal): Promise<void> {
    const call = this.call;
    // A call that has ended (its status is out, or it is being sent) takes no more messages: a write after end
    // is an error on the stream, not a message.
    if (call.writableEnded || call.destroyed) return;
    if (call.write(message)) return;
    await once(call, 'drain', { signal }).catch(() => {});
  }
}

/**
 * A request stream's messages, read by listening only. Not Node's stream iterator: when the stream emits
 * 'error' while that iterator waits for a message, it destroys the stream — and a grpc-js server call ends
 * with an error status by emitting 'error', then sends the status from its final write, which a destroyed
 * stream never makes. A Chat whose open failed while its request loop waited then ended with no status at
 * all, and the client waited for its deadline. This reader never destroys the call: an 'error' ends the
 * read in progress with that error, the end of the stream (or its close) ends the messages.
 */
export function readMessages(stream: NodeReadable): AsyncIterator<unknown> {
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const onEvent = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onError = (error: unknown) => {
    failure ??= { error };
    onEvent();
  };
  const events = ['readable', 'end', 'close'] as const;
  for (const e of events) stream.on(e, onEvent);
  stream.on('error', onError);
  const detach = () => {
    for (const e of events) stream.off(e, onEvent);
    stream.off('error', onError);
  };
  return {
    async next(): Promise<IteratorResult<unknown>> {
      for (;;) {
        // Messages are objects: null only ever means that none is buffered.
        const message: unknown = stream.destroyed ? null : stream.read();
        if (message !== null) return { done: false, value: message };
        if (failure) {
          detach();
          throw failure.error;
        }
        if (stream.readableEnded || stream.destroyed) {
          detach();
          return { done: true, value: undefined };
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    async return(): Promise<IteratorResult<unknown>> {
      detach();
      return { done: true, value: undefined };
    },
  };
}

/**
 * A call's incoming messages, ended for a client that goes quiet: when a message is awaited for idleMs,
 * the wait rejects with `onIdle()`, so the handler ends the call. The time a handler spends between reads
 * does not count. When the call's signal aborts, the wait ends as if the client had finished sending, so
 * the handler's own cancellation path runs. Call close() when done reading.
 */
export class Incoming<T> implements AsyncIterableIterator<T> {
  private readonly source: AsyncIterator<T>;
  private readonly timer: NodeJS.Timeout;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: Error) => void } | undefined;
  private closed = false;

  constructor(
    requests: AsyncIterable<T>,
    idleMs: number,
    private readonly signal: AbortSignal,
    private readonly onIdle: () => Error,
  ) {
    // The runtime's request stream reads with readMessages, which never destroys the call: stopping early
    // leaves it open for the response.
    this.source = requests[Symbol.asyncIterator]();
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
        (r) => this.settle(waiting, () => resolve(r)),
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
