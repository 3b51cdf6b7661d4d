import {
  status as Status,
  type Metadata,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type sendUnaryData,
} from '@grpc/grpc-js';
import type { Readable } from 'node:stream';
import type { DescMessage } from '@bufbuild/protobuf';
import type { Logger } from '../log.js';
import type { Principal } from '../principal.js';
import { AppError, invalidArgument, unavailable } from '../errors.js';
import type { Limits, StreamLease } from './limits.js';
import { toServiceError } from './status.js';
import { requestViolations, undecodableViolation, wireViolations } from './request-check.js';
import { readMessages } from './streams.js';

export interface CallContext {
  method: string;
  metadata: Metadata;
  peer: string;
  /** Set for API-key services; admin and open services leave it undefined. */
  principal: Principal | undefined;
  /** Aborts when the client cancels, the deadline passes or the server shuts down. */
  signal: AbortSignal;
}

export type Authenticate = (metadata: Metadata) => Promise<Principal | undefined>;

export interface RpcEnv {
  logger: Logger;
  /** Tracks live calls so shutdown can wait for them and end streams. */
  calls: CallRegistry;
  /** Per-account limits on authenticated calls: a request rate for every call, a number of open streams. */
  limits?: Limits;
}

// Requests arrive as `unknown`: every handler validates its input with zod before using it.
type Unary = (req: unknown, ctx: CallContext) => Promise<unknown>;
type ServerStream = (req: unknown, call: ServerWritableStream<unknown, any>, ctx: CallContext) => Promise<void>;
type ClientStream = (call: ServerReadableStream<unknown, any>, ctx: CallContext) => Promise<unknown>;
type Duplex = (call: ServerDuplexStream<unknown, any>, ctx: CallContext) => Promise<void>;
export type Handler =
  | { kind: 'unary'; fn: Unary }
  | { kind: 'serverStream'; fn: ServerStream }
  | { kind: 'clientStream'; fn: ClientStream }
  | { kind: 'duplex'; fn: Duplex };

export const unary = (fn: Unary): Handler => ({ kind: 'unary', fn });
export const serverStream = (fn: ServerStream): Handler => ({ kind: 'serverStream', fn });
export const clientStream = (fn: ClientStream): Handler => ({ kind: 'clientStream', fn });
export const duplex = (fn: Duplex): Handler => ({ kind: 'duplex', fn });

function kindOf(def: { requestStream: boolean; responseStream: boolean }): Handler['kind'] {
  if (def.requestStream) return def.responseStream ? 'duplex' : 'clientStream';
  return def.responseStream ? 'serverStream' : 'unary';
}

/** What the registry needs of a live call. */
export interface LiveCall {
  readonly stream: boolean;
  /** Aborts the handler's signal (shutdown, once its grace period has passed). */
  abort(reason: Error): void;
  /** Ends a stream with UNAVAILABLE (shutdown, at once). */
  end(): void;
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
 * A request message refused while it was decoded (see request-check). grpc-js answers a deserializer that
 * throws with INTERNAL, so the deserializer returns this instead and the call fails with its error — after
 * authentication, so an unauthenticated caller learns nothing about validation. `request` is the decoded
 * message when the bytes decoded and only the checks failed; undefined when they were no valid message.
 */
export class RejectedRequest {
  constructor(
    readonly error: AppError,
    readonly request?: unknown,
  ) {}
}

/**
 * What a request stream's iterator throws at a refused message: the refusal's INVALID_ARGUMENT, carrying the
 * decoded message when there is one, so a handler that answers per message (Chat) can answer this one and
 * read on. A handler that does not catch it ends the call with INVALID_ARGUMENT.
 */
export class RejectedMessage extends AppError {
  constructor(readonly rejected: RejectedRequest) {
    const e = rejected.error;
    super(e.code, e.message, e.violations, { reason: e.reason, metadata: e.metadata, retryDelayMs: e.retryDelayMs });
  }
}

/** `definition` with each method's deserializer checking its requests against `types` (by method path). */
export function guardRequests(definition: ServiceDefinition, types: ReadonlyMap<string, DescMessage>): ServiceDefinition {
  const guarded: Record<string, ServiceDefinition[string]> = {};
  for (const [name, def] of Object.entries(definition)) {
    const desc = types.get(def.path);
    if (!desc) throw new Error(`no descriptor for ${def.path}`);
    const decode = def.requestDeserialize;
    guarded[name] = {
      ...def,
      requestDeserialize: (bytes: Buffer) => {
        let request: unknown;
        try {
          request = decode(bytes);
        } catch {
          return new RejectedRequest(invalidArgument([undecodableViolation(desc, bytes)]));
        }
        // The wire checks first: they see what decoding lost (a Timestamp's nanos) and say it more precisely.
        const violations = wireViolations(desc, bytes);
        for (const v of requestViolations(desc, request)) if (!violations.some((w) => w.field === v.field)) violations.push(v);
        return violations.length ? new RejectedRequest(invalidArgument(violations), request) : request;
      },
    };
  }
  return guarded;
}

function accepted(request: unknown): unknown {
  if (request instanceof RejectedRequest) throw request.error;
  return request;
}

/**
 * Gives a request stream an `iterator` that reads with readMessages — never Node's stream iterator, which
 * destroys the call when it emits 'error' while a read waits, and so loses the status the call was ending
 * with — and throws a RejectedMessage at a refused message; uncaught, that ends the call.
 */
function guardIterator(call: Readable): void {
  (call as unknown as { iterator: () => AsyncIterableIterator<unknown> }).iterator = () => {
    const it = readMessages(call);
    return {
      next: async () => {
        const r = await it.next();
        if (!r.done && r.value instanceof RejectedRequest) throw new RejectedMessage(r.value);
        return r;
      },
      return: (v?: unknown) => it.return!(v),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  };
}

type GrpcCall = { metadata: Metadata; cancelled: boolean; getPeer(): string; on(ev: string, fn: () => void): unknown };

/**
 * A unary call's context and registry entry in one object. Unary handlers rarely read their signal, so
 * its AbortController (and the 'cancelled' listener behind it) is only made when one does; an abort before
 * that is remembered and applied then.
 */
class UnaryCall implements CallContext, LiveCall {
  readonly stream = false;
  principal: Principal | undefined = undefined;
  private controller: AbortController | undefined;
  private reason: Error | undefined;

  constructor(
    readonly method: string,
    private readonly call: GrpcCall,
  ) {}

  get metadata(): Metadata {
    return this.call.metadata;
  }

  get peer(): string {
    return this.call.getPeer();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const c = (this.controller = new AbortController());
      if (this.reason) c.abort(this.reason);
      else if (this.call.cancelled) c.abort(new Error('cancelled by client'));
      else this.call.on('cancelled', () => c.abort(new Error('cancelled by client')));
    }
    return this.controller.signal;
  }

  abort(reason: Error): void {
    if (this.controller) this.controller.abort(reason);
    else this.reason ??= reason;
  }

  end(): void {}
}

/** The longest delay setTimeout takes; a deadline further away than this (24.8 days) is left to grpc-js. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type LogCall = (started: bigint, code: Status, err?: unknown) => void;

/**
 * A streaming call's state and registry entry in one object. A class rather than closures: the server runs
 * under tsx, whose esbuild keepNames gives every named closure a `name` property (a properties store
 * each), and an idle watcher holds all of this for its whole life. `respond` is set for client streams,
 * which answer with one message; server and duplex streams end with call.end() or an error.
 */
class StreamCall implements LiveCall {
  /** The handler's signal: the client's cancellation and shutdown abort it. */
  readonly controller = new AbortController();
  private readonly started = process.hrtime.bigint();
  private finished = false;
  /** The account's stream slot, released when the call finishes, however it finishes. */
  private lease: StreamLease | undefined;
  /** Ends the call at its deadline (see expireAt); cleared when it finishes. */
  private deadlineTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly stream: boolean,
    private readonly call: any,
    private readonly calls: CallRegistry,
    private readonly log: LogCall,
    private readonly respond: ((res: unknown) => void) | undefined,
  ) {}

  abort(reason: Error): void {
    this.controller.abort(reason);
  }

  end(): void {
    this.controller.abort(new Error('server shutting down'));
    this.fail(unavailable('server shutting down', 'SERVER_SHUTTING_DOWN'));
  }

  /**
   * The client cancelled (or its stream closed under the call). Nothing can reach it any more, so the call
   * is over now: its slot is given back and shutdown stops waiting for it, even while the handler is still
   * parked on a read the signal cannot interrupt (a Postgres query); the aborted signal winds the handler
   * down — its bus subscription and timers — as soon as that read returns. Idempotent.
   */
  cancel(): void {
    this.controller.abort(new Error('cancelled by client'));
    if (!this.finished) this.finish(Status.CANCELLED);
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
    this.controller.abort(new Error('deadline exceeded'));
    if (!this.finished) this.finish(Status.DEADLINE_EXCEEDED);
  }

  get cancelled(): boolean {
    return this.controller.signal.aborted;
  }

  /** Takes the stream slot; a call that already finished (ended by shutdown meanwhile) gives it back at once. */
  hold(lease: StreamLease): void {
    if (this.finished) lease.release();
    else this.lease = lease;
  }

  succeed(res: unknown): void {
    if (this.finished) return;
    this.finish(Status.OK);
    if (this.respond) this.respond(res);
    else this.call.end();
  }

  fail(err: unknown): void {
    if (this.finished) return;
    const se = toServiceError(err);
    this.finish(se.code ?? Status.UNKNOWN, err);
    if (this.respond) this.respond(se);
    else this.call.emit('error', se);
  }

  private finish(code: Status, err?: unknown): void {
    this.finished = true;
    clearTimeout(this.deadlineTimer);
    this.lease?.release();
    this.calls.remove(this);
    this.log(this.started, code, err);
  }
}

/**
 * Adapts our handlers to grpc-js: authentication, a cancellation signal, error mapping to precise statuses,
 * one log line per call (method, status, duration) and registration for graceful shutdown.
 */
export function implement(
  definition: ServiceDefinition,
  handlers: Record<string, Handler>,
  env: RpcEnv,
  authenticate: Authenticate | undefined,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(definition)) {
    const handler = handlers[name];
    if (!handler) throw new Error(`no handler for ${def.path}`);
    if (handler.kind !== kindOf(def)) throw new Error(`${def.path} is ${kindOf(def)}, handler is ${handler.kind}`);
    const method = def.path;
    const stream = def.requestStream || def.responseStream;

    // Per-call log lines are at info; at warn and above (as in production under load) only failures cost anything.
    const infoEnabled = env.logger.enabled?.('info') ?? true;
    const log = (started: bigint, code: Status, err?: unknown) => {
      if (code !== Status.INTERNAL && !infoEnabled) return;
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const fields: Record<string, unknown> = { method, status: Status[code], durationMs: Math.round(durationMs * 1000) / 1000 };
      if (code === Status.INTERNAL && err) fields.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      (code === Status.INTERNAL ? env.logger.error : env.logger.info)('call', fields);
    };

    if (handler.kind === 'unary') {
      const fn = handler.fn;
      const run = async (call: ServerUnaryCall<any, any>, ctx: UnaryCall) => {
        if (authenticate) ctx.principal = await authenticate(call.metadata);
        if (ctx.principal) env.limits?.admit(ctx.principal.accountId, method);
        return fn(accepted(call.request), ctx);
      };
      impl[name] = (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>) => {
        const started = process.hrtime.bigint();
        const ctx = new UnaryCall(method, call as unknown as GrpcCall);
        env.calls.add(ctx);
        run(call, ctx).then(
          (res) => {
            env.calls.remove(ctx);
            log(started, Status.OK);
            callback(null, res);
          },
          (err) => {
            env.calls.remove(ctx);
            const se = toServiceError(err);
            log(started, se.code ?? Status.UNKNOWN, err);
            callback(se);
          },
        );
      };
      continue;
    }

    const streaming = (call: any, run: (ctx: CallContext) => Promise<unknown>, respond?: (res: unknown) => void) => {
      const live = new StreamCall(stream, call, env.calls, log, respond);
      env.calls.add(live);
      // grpc-js emits 'cancelled' once, to the listeners present then; `cancelled` tells of one before. A
      // stream destroyed under the call without it is as gone for us.
      if (call.cancelled) live.cancel();
      else {
        call.once('cancelled', () => live.cancel());
        call.once('close', () => live.cancel());
        live.expireAt(call.getDeadline());
      }
      if (def.requestStream) guardIterator(call);
      (async () => {
        const principal = authenticate ? await authenticate(call.metadata) : undefined;
        // Cancelled while authenticating: take no slot and read nothing for a client that is gone.
        if (live.cancelled) return;
        if (principal && env.limits) {
          env.limits.admit(principal.accountId, method);
          live.hold(env.limits.openStream(principal.accountId, method));
        }
        if (!def.requestStream) accepted(call.request);
        return run({ method, metadata: call.metadata, peer: call.getPeer(), principal, signal: live.controller.signal });
      })().then(
        (res) => live.succeed(res),
        (err) => live.fail(err),
      );
    };

    if (handler.kind === 'serverStream') {
      const fn = handler.fn;
      impl[name] = (call: ServerWritableStream<any, any>) => streaming(call, (ctx) => fn(call.request, call, ctx));
    } else if (handler.kind === 'clientStream') {
      const fn = handler.fn;
      impl[name] = (call: ServerReadableStream<any, any>, callback: sendUnaryData<any>) =>
        streaming(call, (ctx) => fn(call, ctx), (res) => (res instanceof Error ? callback(res as any) : callback(null, res)));
    } else {
      const fn = handler.fn;
      impl[name] = (call: ServerDuplexStream<any, any>) => streaming(call, (ctx) => fn(call, ctx));
    }
  }
  return impl;
}
