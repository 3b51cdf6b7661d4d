import type {
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedServiceImplementation,
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  sendUnaryData,
} from '@grpc/grpc-js';
import type { Readable } from 'node:stream';
import type { DescMessage } from '@bufbuild/protobuf';
import type { Logger } from '../log.js';
import { AppError, invalidArgument } from '../errors.js';
import { StreamCall, UnaryCall, type CallContext, type CallRegistry, type RpcCall } from './call.js';
import type { Limits } from './limits.js';
import type { Metrics } from '../metrics.js';
import { callChain, compose, type Authenticate } from './middleware.js';
import { toServiceError } from './status.js';
import { requestViolations, undecodableViolation, wireViolations } from './request-check.js';
import { CallSink, readMessages, type Sink } from './streams.js';

export type { CallContext } from './call.js';
export { CallRegistry } from './call.js';
export type { Authenticate } from './middleware.js';
export type { Sink } from './streams.js';

export interface RpcEnv {
  logger: Logger;
  /** Tracks live calls so shutdown can wait for them and end streams. */
  calls: CallRegistry;
  /** Per-account limits on authenticated calls: a request rate for every call, a number of open streams. */
  limits?: Limits;
  /** Calls counted by method and code, their durations, open streams (see observeCalls). */
  metrics?: Metrics;
}

// The four shapes of a handler. Requests arrive decoded and past the request checks (see guardRequests);
// every handler still parses its input with zod before using it.
export type UnaryHandler<Req, Res> = (req: Req, ctx: CallContext) => Promise<Res>;
export type ServerStreamHandler<Req, Res> = (req: Req, out: Sink<Res>, ctx: CallContext) => Promise<void>;
export type ClientStreamHandler<Req, Res> = (requests: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>;
export type DuplexHandler<Req, Res> = (requests: AsyncIterable<Req>, out: Sink<Res>, ctx: CallContext) => Promise<void>;

/** Our handler for a method of a generated server interface (ts-proto's `handleUnaryCall<Req, Res>`…). */
export type HandlerOf<M> =
  M extends handleUnaryCall<infer Req, infer Res>
    ? UnaryHandler<Req, Res>
    : M extends handleClientStreamingCall<infer Req, infer Res>
      ? ClientStreamHandler<Req, Res>
      : M extends handleServerStreamingCall<infer Req, infer Res>
        ? ServerStreamHandler<Req, Res>
        : M extends handleBidiStreamingCall<infer Req, infer Res>
          ? DuplexHandler<Req, Res>
          : never;

/**
 * The handlers of a service, from its generated server interface, e.g. `ServiceHandlers<PromptServiceServer>`:
 * one per method, by name (the interface's string index signature is left out).
 */
export type ServiceHandlers<S> = { [K in keyof S as K extends string ? (string extends K ? never : K) : never]: HandlerOf<S[K]> };

/** A handler as the runtime calls it; which of the four shapes it has, the method definition says. */
type RuntimeHandler = (first: unknown, second: unknown, third?: unknown) => Promise<unknown>;

/** A service to serve: its definition, its handlers (checked against S by `bindService`) and who may call it. */
export interface ServiceBinding {
  /** Fully-qualified name, e.g. parley.prompt.v1.PromptService. */
  name: string;
  definition: ServiceDefinition;
  handlers: Readonly<Record<string, RuntimeHandler | undefined>>;
  authenticate: Authenticate | undefined;
}

/** A service binding whose handlers are checked against the generated server interface S. */
export function bindService<S>(b: { name: string; definition: ServiceDefinition; handlers: ServiceHandlers<S>; authenticate: Authenticate | undefined }): ServiceBinding {
  // The single cast at the grpc-js boundary: S types each handler's request and response; grpc-js hands the
  // runtime decoded requests as unknown, and the definition (generated from the same proto as S) tells
  // which of the four shapes each handler has, so the runtime calls it only that way.
  const handlers = b.handlers as Readonly<Record<string, RuntimeHandler | undefined>>;
  return { ...b, handlers };
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
 * A request stream, read with readMessages — never Node's stream iterator, which destroys the call when it
 * emits 'error' while a read waits, and so loses the status the call was ending with; stopping early leaves
 * the call open for the response. A refused message throws a RejectedMessage; uncaught, that ends the call.
 */
class RequestStream implements AsyncIterable<unknown> {
  constructor(private readonly call: Readable) {}

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    const it = readMessages(this.call);
    return {
      next: async () => {
        const r = await it.next();
        if (!r.done && r.value instanceof RejectedRequest) throw new RejectedMessage(r.value);
        return r;
      },
      return: () => it.return!(),
    };
  }
}

/** A call answered with one message (unary, client stream): the response, or the error's status. */
function answer(outcome: Promise<unknown>, call: RpcCall, callback: sendUnaryData<unknown>): void {
  outcome.then(
    (res) => callback(null, res),
    (err: unknown) => call.answers && callback(toServiceError(err, call)),
  );
}

/** A call answering with a stream (server stream, duplex): its end, or the error's status. */
function endStream(outcome: Promise<unknown>, call: RpcCall, grpc: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>): void {
  outcome.then(
    () => grpc.end(),
    (err: unknown) => call.answers && grpc.emit('error', toServiceError(err, call)),
  );
}

/**
 * Adapts our handlers to grpc-js: each call runs through the middleware chain (see middleware.ts) —
 * logging, registration for graceful shutdown, ending streams early, cancellation, deadline,
 * authentication, limits — and then the handler, with its request checked (after authentication, so an
 * unauthenticated caller learns nothing about validation). Errors go out with precise statuses (status.ts).
 */
export function implement(definition: ServiceDefinition, handlers: ServiceBinding['handlers'], env: RpcEnv, authenticate: Authenticate | undefined): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  const chain = callChain(env, authenticate);
  for (const [name, def] of Object.entries(definition)) {
    const fn = handlers[name];
    if (!fn) throw new Error(`no handler for ${def.path}`);
    const method = def.path;

    if (!def.requestStream && !def.responseStream) {
      const run = compose(chain, async (call: UnaryCall<ServerUnaryCall<unknown, unknown>>) => fn(accepted(call.grpc.request), call));
      impl[name] = (grpc: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        const call = new UnaryCall(method, grpc);
        answer(run(call), call, callback);
      };
    } else if (!def.requestStream) {
      const run = compose(chain, async (call: StreamCall<ServerWritableStream<unknown, unknown>>) =>
        fn(accepted(call.grpc.request), new CallSink(call.grpc, call.signal), call),
      );
      impl[name] = (grpc: ServerWritableStream<unknown, unknown>) => {
        const call = new StreamCall(method, grpc);
        endStream(run(call), call, grpc);
      };
    } else if (!def.responseStream) {
      const run = compose(chain, async (call: StreamCall<ServerReadableStream<unknown, unknown>>) => fn(new RequestStream(call.grpc), call));
      impl[name] = (grpc: ServerReadableStream<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        const call = new StreamCall(method, grpc);
        answer(run(call), call, callback);
      };
    } else {
      const run = compose(chain, async (call: StreamCall<ServerDuplexStream<unknown, unknown>>) =>
        fn(new RequestStream(call.grpc), new CallSink(call.grpc, call.signal), call),
      );
      impl[name] = (grpc: ServerDuplexStream<unknown, unknown>) => {
        const call = new StreamCall(method, grpc);
        endStream(run(call), call, grpc);
      };
    }
  }
  return impl;
}
