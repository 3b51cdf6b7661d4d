import { status as Status, type Metadata } from '@grpc/grpc-js';
import { context, isSpanContextValid, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Principal } from '../principal.js';
import { SERVER_SHUTTING_DOWN, type CallRegistry, type RpcCall } from './call.js';
import type { Limits } from './limits.js';
import { failureOf, statusCodeOf } from './status.js';
import { incomingContext } from './trace-context.js';

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
// Observing: one span, one log line and the call metrics per call, all from the call's final status.

/** How a stream ended, for its log line. */
type StreamEnd = 'ok' | 'client_cancel' | 'deadline' | 'shutdown' | 'error';

function streamEnd(code: Status, reason: string | undefined): StreamEnd {
  if (code === Status.OK) return 'ok';
  if (code === Status.CANCELLED) return 'client_cancel';
  if (code === Status.DEADLINE_EXCEEDED) return 'deadline';
  return reason === SERVER_SHUTTING_DOWN ? 'shutdown' : 'error';
}

/** What a span says of its method, computed once per method (method paths come from service definitions). */
interface MethodSpan {
  name: string;
  attributes: Attributes;
}

function methodSpan(method: string): MethodSpan {
  // `/package.Service/Method`: the span is named without the leading slash (OpenTelemetry's RPC conventions).
  const name = method.replace(/^\//, '');
  const slash = name.lastIndexOf('/');
  return { name, attributes: { 'rpc.system': 'grpc', 'rpc.service': name.slice(0, slash), 'rpc.method': name.slice(slash + 1) } };
}

export interface ObserveOptions {
  logger: Logger;
  metrics?: Pick<Metrics, 'callFinished' | 'streamOpened' | 'streamClosed'>;
  /** Defaults to the global tracer: a no-op until a deployer registers an OpenTelemetry SDK. */
  tracer?: Tracer;
}

/**
 * Outermost, so it sees the call's final status: the handler's, or CANCELLED, DEADLINE_EXCEEDED or
 * UNAVAILABLE when a stream ended before its handler (see endEarly). Per call:
 * - a SERVER span named after the method, child of the caller's `traceparent` (see trace-context.ts), ended
 *   when the call settles, with the status code (and status ERROR when it failed); the handler runs in its
 *   context, so spans an SDK's instrumentations make (Postgres, Redis) are its children;
 * - the call counted by method and code, its duration observed, an open stream counted while it lasts;
 * - one log line at info (the stack, at error, only for INTERNAL): method, status, duration, the trace id,
 *   for a failure its ErrorInfo reason and first violated field (never a value), for a stream how it ended.
 *   At warn and above (as in production under load) only INTERNAL failures build a line.
 */
export function observeCalls(o: ObserveOptions): Middleware {
  const { logger, metrics } = o;
  const tracer = o.tracer ?? trace.getTracer('parley');
  const infoEnabled = logger.enabled?.('info') ?? true;
  const spans = new Map<string, MethodSpan>();
  const settle = (call: RpcCall, span: Span, started: bigint, code: Status, err?: unknown) => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    span.setAttribute('rpc.grpc.status_code', code);
    if (code !== Status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: Status[code] });
    span.end();
    if (metrics) {
      metrics.callFinished(call.method, Status[code] ?? 'UNKNOWN', seconds);
      if (call.stream) metrics.streamClosed(call.method);
    }
    if (code !== Status.INTERNAL && !infoEnabled) return;
    const fields: Record<string, unknown> = { method: call.method, status: Status[code], durationMs: Math.round(seconds * 1e6) / 1000 };
    const sc = span.spanContext();
    if (isSpanContextValid(sc)) fields.traceId = sc.traceId;
    let reason: string | undefined;
    if (code !== Status.OK) {
      const failure = failureOf(err, call);
      reason = fields.reason = failure.reason;
      if (failure.field !== undefined) fields.field = failure.field;
    }
    if (call.stream) fields.end = streamEnd(code, reason);
    if (code === Status.INTERNAL && err) fields.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    (code === Status.INTERNAL ? logger.error : logger.info)('call', fields);
  };
  return (call, next) => {
    const started = process.hrtime.bigint();
    let m = spans.get(call.method);
    if (!m) spans.set(call.method, (m = methodSpan(call.method)));
    const parent = incomingContext(call.metadata);
    const span = tracer.startSpan(m.name, { kind: SpanKind.SERVER, attributes: m.attributes }, parent);
    if (call.stream) metrics?.streamOpened(call.method);
    let outcome: Promise<unknown>;
    try {
      outcome = context.with(trace.setSpan(parent, span), next, undefined, call);
    } catch (err) {
      outcome = Promise.reject(err);
    }
    return outcome.then(
      (res) => {
        settle(call, span, started, Status.OK);
        return res;
      },
      (err: unknown) => {
        settle(call, span, started, statusCodeOf(err, call), err);
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
export function callChain(
  env: { logger: Logger; calls: CallRegistry; limits?: Limits; metrics?: ObserveOptions['metrics']; tracer?: Tracer },
  authenticate: Authenticate | undefined,
): Middleware[] {
  return [observeCalls(env), register(env.calls), endEarly, cancellation, deadline, authentication(authenticate), limiting(env.limits)];
}
