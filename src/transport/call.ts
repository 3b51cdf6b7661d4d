import type { Metadata } from '@grpc/grpc-js';
import type { Principal } from '../principal.js';
import { unavailable } from '../errors.js';
import type { StreamLease } from './limits.js';
import { CallCancelled, DeadlineExceeded, type AbortState } from './status.js';

/** The ErrorInfo reason of a stream that shutdown ended. */
export const SERVER_SHUTTING_DOWN = 'SERVER_SHUTTING_DOWN';

/** What a handler gets of its call. */
export interface CallContext {
  method: string;
  metadata: Metadata;
  peer: string;
  /** Set for API-key services; admin and open services leave it undefined. */
  principal: Principal | undefined;
  /** Aborts when the client cancels, the deadline passes or the server shuts down. */
  signal: AbortSignal;
}

/** What the runtime reads of a grpc-js server call, whichever of the four kinds it is. */
export interface GrpcCall {
  readonly metadata: Metadata;
  readonly cancelled: boolean;
  getPeer(): string;
  getDeadline(): Date | number;
  once(event: 'cancelled' | 'close', listener: () => void): unknown;
}

/** What the registry needs of a live call. */
export interface LiveCall {
  readonly stream: boolean;
  /** Aborts the handler's signal (shutdown, once its grace period has passed). */
  abort(reason: Error): void;
  /** Ends a stream with UNAVAILABLE (shutdown, at once). */
  end(): void;
}

/**
 * One call as the middleware sees it (see middleware.ts): the handler's context, its registry entry, and,
 * for a streaming call, a lifetime that can end before its handler returns.
 */
export interface RpcCall extends CallContext, LiveCall, AbortState {
  readonly grpc: GrpcCall;
  /**
   * Streaming calls: settles (rejects with why) when the call ends before its handler does — the client
   * cancelled, the deadline passed, shutdown ended it. Unary calls: undefined; they end with their handler.
   */
  readonly ended: Promise<never> | undefined;
  /** True once a streaming call has ended, however it ended. */
  readonly finished: boolean;
  /** Whether the outcome is still to be sent: not to a client that is gone, nor at a deadline grpc-js answers. */
  readonly answers: boolean;
  /** Streams: the client cancelled (or its stream closed under the call). */
  cancel(): void;
  /** Streams: ends the call at its deadline (see StreamCall.expireAt). */
  expireAt(deadline: Date | number): void;
  /** Streams: keeps the account's stream slot until the call ends. */
  hold(lease: StreamLease): void;
  /** Streams: the call is over; what it held goes back. Idempotent. */
  finish(): void;
}

/** Every live call, so graceful shutdown can let unary calls finish and end streams with UNAVAILABLE. */
export class CallRegistry {
  private readonly live = new Set<LiveCall>();
  private idleWaiters: Array<() => void> = [];

  add(call: LiveCall): void {
    this.live.add(call);
  }

  remove(call: LiveCall): void {
    this.live.delete(call);
    if (this.live.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  get size(): number {
    return this.live.size;
  }

  /** Ends every open stream with UNAVAILABLE, so clients reconnect elsewhere. */
  endStreams(): void {
    for (const c of [...this.live]) if (c.stream) c.end();
  }

  /** Resolves when no call is live, or after timeoutMs; aborts whatever is still running then. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.live.size === 0) return;
    await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    for (const c of [...this.live]) c.abort(new Error('server shutting down'));
  }
}

/**
 * A unary call's context and registry entry in one object. Unary handlers rarely read their signal, so
 * its AbortController (and the 'cancelled' listener behind it) is only made when one does; an abort before
 * that is remembered and applied then.
 */
export class UnaryCall<G extends GrpcCall = GrpcCall> implements RpcCall {
  readonly stream = false;
  readonly answers = true;
  readonly ended = undefined;
  readonly finished = false;
  principal: Principal | undefined = undefined;
  private controller: AbortController | undefined;
  private abortReason: Error | undefined;

  constructor(
    readonly method: string,
    readonly grpc: G,
  ) {}

  get metadata(): Metadata {
    return this.grpc.metadata;
  }

  get peer(): string {
    return this.grpc.getPeer();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const c = (this.controller = new AbortController());
      if (this.abortReason) c.abort(this.abortReason);
      else if (this.grpc.cancelled) c.abort(this.clientGone());
      else this.grpc.once('cancelled', () => c.abort(this.clientGone()));
    }
    return this.controller.signal;
  }

  /** AbortState without making the signal: read on the error path only. */
  get aborted(): boolean {
    return this.controller ? this.controller.signal.aborted : this.abortReason !== undefined || this.grpc.cancelled;
  }

  get reason(): unknown {
    if (this.controller) return this.controller.signal.reason;
    return this.abortReason ?? (this.grpc.cancelled ? this.clientGone() : undefined);
  }

  /** grpc-js cancels a unary call both when the client does and when its deadline passes. */
  private clientGone(): Error {
    return +this.grpc.getDeadline() <= Date.now() ? new DeadlineExceeded() : new CallCancelled();
  }

  abort(reason: Error): void {
    if (this.controller) this.controller.abort(reason);
    else this.abortReason ??= reason;
  }

  // A unary call ends with its handler: there is nothing to end early, hold or expire.
  end(): void {}
  cancel(): void {}
  expireAt(): void {}
  hold(lease: StreamLease): void {
    lease.release();
  }
  finish(): void {}
}

/** The longest delay setTimeout takes; a deadline further away than this (24.8 days) is left to grpc-js. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A streaming call's state and registry entry in one object. A class rather than closures: the server runs
 * under tsx, whose esbuild keepNames gives every named closure a `name` property (a properties store
 * each), and an idle watcher holds all of this for its whole life.
 */
export class StreamCall<G extends GrpcCall = GrpcCall> implements RpcCall {
  readonly stream = true;
  principal: Principal | undefined = undefined;
  /** The handler's signal: the client's cancellation, the deadline and shutdown abort it. */
  private readonly controller = new AbortController();
  readonly ended: Promise<never>;
  private endWith!: (reason: Error) => void;
  /** Ended by the client or the deadline: nothing is sent (grpc-js sends DEADLINE_EXCEEDED itself). */
  private quiet = false;
  finished = false;
  /** The account's stream slot, released when the call finishes, however it finishes. */
  private lease: StreamLease | undefined;
  /** Ends the call at its deadline (see expireAt); cleared when it finishes. */
  private deadlineTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly method: string,
    readonly grpc: G,
  ) {
    this.ended = new Promise<never>((_, reject) => (this.endWith = reject));
    // Settled before anything races it when the call is cancelled at once.
    this.ended.catch(() => {});
  }

  get metadata(): Metadata {
    return this.grpc.metadata;
  }

  get peer(): string {
    return this.grpc.getPeer();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  get reason(): unknown {
    return this.controller.signal.reason;
  }

  get answers(): boolean {
    return !this.quiet;
  }

  abort(reason: Error): void {
    this.controller.abort(reason);
  }

  end(): void {
    this.controller.abort(new Error('server shutting down'));
    this.endEarly(unavailable('server shutting down', SERVER_SHUTTING_DOWN));
  }

  /**
   * The client cancelled (or its stream closed under the call). Nothing can reach it any more, so the call
   * is over now: its slot is given back and shutdown stops waiting for it, even while the handler is still
   * parked on a read the signal cannot interrupt (a Postgres query); the aborted signal winds the handler
   * down — its bus subscription and timers — as soon as that read returns. Idempotent.
   */
  cancel(): void {
    const reason = new CallCancelled();
    this.controller.abort(reason);
    if (!this.finished) this.quiet = true;
    this.endEarly(reason);
  }

  /**
   * Ends the call at its deadline on our side too. grpc-js answers a passed deadline itself, but it tells the
   * handler (the 'cancelled' event) only once that status has gone out, and the status waits behind every
   * message already buffered for the client: a client that stopped reading and never reset the stream (its
   * flow-control window full) would hold the call, its stream slot and the handler's watch for as long as
   * the connection lives. At the deadline the handler's signal aborts and the slot is given back; grpc-js
   * still sends DEADLINE_EXCEEDED when it can.
   */
  expireAt(deadline: Date | number): void {
    const ms = +deadline - Date.now();
    if (this.finished || !Number.isFinite(ms) || ms > MAX_TIMER_MS) return;
    this.deadlineTimer = setTimeout(() => this.expire(), Math.max(0, ms)).unref();
  }

  private expire(): void {
    const reason = new DeadlineExceeded();
    this.controller.abort(reason);
    if (!this.finished) this.quiet = true;
    this.endEarly(reason);
  }

  /** Takes the stream slot; a call that already finished (ended by shutdown meanwhile) gives it back at once. */
  hold(lease: StreamLease): void {
    if (this.finished) lease.release();
    else this.lease = lease;
  }

  private endEarly(reason: Error): void {
    if (this.finished) return;
    this.finish();
    this.endWith(reason);
  }

  finish(): void {
    this.finished = true;
    clearTimeout(this.deadlineTimer);
    this.lease?.release();
    this.lease = undefined;
  }
}
