import { status as Status, type Metadata } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { Principal } from '../principal.js';
import type { CallRegistry, RpcCall } from './call.js';
import type { Limits } from './limits.js';
import { statusCodeOf } from './status.js';

/** The rest of the chain: the middleware after this one, and the handler at its end. */
export type Next<C extends RpcCall = RpcCall> = (call: C) => Promise<unknown>;

/**
 * One concern of every call, wrapped around the rest of the chain. Generic in the call, so the handler at
 * the end gets the call as implement() made it (with its grpc-js call of the method's kind).
 */
export type Middleware = <C extends RpcCall>(call: C, next: Next<C>) => Promise<unknown>;

/**
 * `middleware` around `handler`, the first outermost. Composed once per method, so a call allocates no
 * chain of its own.
 */
export function compose<C extends RpcCall>(middleware: readonly Middleware[], handler: Next<C>): Next<C> {
  return middleware.reduceRight<Next<C>>((next, m) => (call) => {
    // A step that throws rather than rejects still settles the call (and unwinds the steps around it).
    try {
      return m(call, next);
    } catch (err) {
      return Promise.reject(err);
    }
  }, handler);
}

// ---------------------------------------------------------------------------------------------------------
// Logging: one line per call — method, status, duration — at info; the stack only for INTERNAL.

/**
 * Outermost, so it sees the call's final status: the handler's, or CANCELLED, DEADLINE_EXCEEDED or
 * UNAVAILABLE when a stream ended before its handler (see endEarly). Per-call lines are at info; at warn
 * and above (as in production under load) only failures cost anything.
 */
export function logCalls(logger: Logger): Middleware {
  const infoEnabled = logger.enabled?.('info') ?? true;
  const log = (call: RpcCall, started: bigint, code: Status, err?: unknown) => {
    if (code !== Status.INTERNAL && !infoEnabled) return;
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    const fields: Record<string, unknown> = { method: call.method, status: Status[code], durationMs: Math.round(durationMs * 1000) / 1000 };
    if (code === Status.INTERNAL && err) fields.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    (code === Status.INTERNAL ? logger.error : logger.info)('call', fields);
  };
  return (call, next) => {
    const started = process.hrtime.bigint();
    return next(call).then(
      (res) => {
        log(call, started, Status.OK);
        return res;
      },
      (err: unknown) => {
        log(call, started, statusCodeOf(err, call), err);
        throw err;
      },
    );
  };
}

// ---------------------------------------------------------------------------------------------------------
// Registration: every live call is known to the registry, so graceful shutdown can wait for it or end it.

export function register(calls: CallRegistry): Middleware {
  return (call, next) => {
    calls.add(call);
    return next(call).finally(() => calls.remove(call));
  };
}

// ---------------------------------------------------------------------------------------------------------
// Cancellation: the call's signal aborts when the client cancels.

/**
 * A unary call makes its signal (and listens for 'cancelled') only when its handler reads it: nothing to do
 * here. A stream is cancelled at once — grpc-js emits 'cancelled' once, to the listeners present then, and
 * `cancelled` tells of one before; a stream destroyed under the call without it is as gone for us.
 */
export const cancellation: Middleware = (call, next) => {
  if (call.stream) {
    if (call.grpc.cancelled) call.cancel();
    else {
      call.grpc.once('cancelled', () => call.cancel());
      call.grpc.once('close', () => call.cancel());
    }
  }
  return next(call);
};

// ---------------------------------------------------------------------------------------------------------
// Deadline: a stream ends on our side at its deadline (see StreamCall.expireAt); grpc-js ends unary calls.

export const deadline: Middleware = (call, next) => {
  if (call.stream && !call.finished) call.expireAt(call.grpc.getDeadline());
  return next(call);
};

// ---------------------------------------------------------------------------------------------------------
// Ending early: a stream is over when its client cancels, its deadline passes or shutdown ends it.

/**
 * The call settles then, with why, not when its handler returns: the middleware outside this one (the
 * registry, the log line) and the response see that at once, and the handler winds down on its aborted
 * signal; what settles later is dropped. What the call held (its slot, its deadline timer) goes back when
 * it settles, however it settles.
 */
export const endEarly: Middleware = (call, next) => {
  if (!call.ended) return next(call);
  return Promise.race([next(call), call.ended]).finally(() => call.finish());
};

// ---------------------------------------------------------------------------------------------------------
// Authentication: before anything else looks at the request, so an unauthenticated caller learns nothing.

export type Authenticate = (metadata: Metadata) => Promise<Principal | undefined>;

export function authentication(authenticate: Authenticate | undefined): Middleware {
  if (!authenticate) return (call, next) => next(call);
  return async (call, next) => {
    call.principal = await authenticate(call.metadata);
    // Cancelled while authenticating: take no slot and read nothing for a client that is gone.
    if (call.finished) return undefined;
    return next(call);
  };
}

// ---------------------------------------------------------------------------------------------------------
// Limits: an authenticated call takes a token of its account's request rate; a stream, one of its slots.

export function limiting(limits: Limits | undefined): Middleware {
  if (!limits) return (call, next) => next(call);
  return (call, next) => {
    if (call.principal) {
      limits.admit(call.principal.accountId, call.method);
      if (call.stream) call.hold(limits.openStream(call.principal.accountId, call.method));
    }
    return next(call);
  };
}

/** Every call's chain, outermost first; the handler (after the request checks) is at its end. */
export function callChain(env: { logger: Logger; calls: CallRegistry; limits?: Limits }, authenticate: Authenticate | undefined): Middleware[] {
  return [logCalls(env.logger), register(env.calls), endEarly, cancellation, deadline, authentication(authenticate), limiting(env.limits)];
}
