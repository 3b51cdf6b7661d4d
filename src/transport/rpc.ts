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
import type { Logger } from '../log.js';
import type { Principal } from '../auth.js';
import { toServiceError } from './status.js';

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

const noop = () => {};

function kindOf(def: { requestStream: boolean; responseStream: boolean }): Handler['kind'] {
  if (def.requestStream) return def.responseStream ? 'duplex' : 'clientStream';
  return def.responseStream ? 'serverStream' : 'unary';
}

/** Every live call, so graceful shutdown can let unary calls finish and end streams with UNAVAILABLE. */
export class CallRegistry {
  private readonly live = new Map<object, { stream: boolean; abort: AbortController; end: () => void }>();
  private idleWaiters: Array<() => void> = [];

  add(key: object, stream: boolean, abort: AbortController, end: () => void): void {
    this.live.set(key, { stream, abort, end });
  }

  remove(key: object): void {
    this.live.delete(key);
    if (this.live.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  get size(): number {
    return this.live.size;
  }

  /** Ends every open stream with UNAVAILABLE, so clients reconnect elsewhere. */
  endStreams(): void {
    for (const c of this.live.values()) if (c.stream) c.end();
  }

  /** Resolves when no call is live, or after timeoutMs; aborts whatever is still running then. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.live.size === 0) return;
    await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    for (const c of this.live.values()) c.abort.abort(new Error('server shutting down'));
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

    const begin = async (call: { metadata: Metadata; getPeer(): string; on(ev: string, fn: () => void): unknown }) => {
      const abort = new AbortController();
      call.on('cancelled', () => abort.abort(new Error('cancelled by client')));
      const principal = authenticate ? await authenticate(call.metadata) : undefined;
      const ctx: CallContext = { method, metadata: call.metadata, peer: call.getPeer(), principal, signal: abort.signal };
      return { ctx, abort };
    };
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
      const run = async (call: ServerUnaryCall<any, any>, abort: AbortController) => {
        call.on('cancelled', () => abort.abort(new Error('cancelled by client')));
        const principal = authenticate ? await authenticate(call.metadata) : undefined;
        return fn(call.request, { method, metadata: call.metadata, peer: call.getPeer(), principal, signal: abort.signal });
      };
      impl[name] = (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>) => {
        const started = process.hrtime.bigint();
        // One controller per call: the handler's signal, and what shutdown aborts once its grace has passed.
        const abort = new AbortController();
        env.calls.add(abort, false, abort, noop);
        run(call, abort).then(
          (res) => {
            env.calls.remove(abort);
            log(started, Status.OK);
            callback(null, res);
          },
          (err) => {
            env.calls.remove(abort);
            const se = toServiceError(err);
            log(started, se.code ?? Status.UNKNOWN, err);
            callback(se);
          },
        );
      };
      continue;
    }

    const streaming = (call: any, run: (ctx: CallContext) => Promise<unknown>, respond: (res: unknown) => void) => {
      const started = process.hrtime.bigint();
      const key = {};
      let finished = false;
      const finish = (code: Status, err?: unknown) => {
        if (finished) return;
        finished = true;
        env.calls.remove(key);
        log(started, code, err);
      };
      const fail = (err: unknown) => {
        const se = toServiceError(err);
        finish(se.code ?? Status.UNKNOWN, err);
        if (def.responseStream) call.emit("error", se);
        else respond(se);
      };
      let abortRef: AbortController | undefined;
      env.calls.add(key, stream, new AbortController(), () => {
        abortRef?.abort(new Error('server shutting down'));
        fail(Object.assign(new Error('server shutting down'), { code: Status.UNAVAILABLE, details: 'server shutting down', metadata: call.metadata }));
      });
      (async () => {
        const { ctx, abort } = await begin(call);
        abortRef = abort;
        return run(ctx);
      })().then(
        (res) => {
          if (finished) return;
          finish(Status.OK);
          if (def.responseStream) call.end();
          else respond(res);
        },
        (err) => {
          if (!finished) fail(err);
        },
      );
    };

    if (handler.kind === 'serverStream') {
      const fn = handler.fn;
      impl[name] = (call: ServerWritableStream<any, any>) => streaming(call, (ctx) => fn(call.request, call, ctx), () => {});
    } else if (handler.kind === 'clientStream') {
      const fn = handler.fn;
      impl[name] = (call: ServerReadableStream<any, any>, callback: sendUnaryData<any>) =>
        streaming(call, (ctx) => fn(call, ctx), (res) => (res instanceof Error ? callback(res as any) : callback(null, res)));
    } else {
      const fn = handler.fn;
      impl[name] = (call: ServerDuplexStream<any, any>) => streaming(call, (ctx) => fn(call, ctx), () => {});
    }
  }
  return impl;
}
