import test from 'ava';
import { EventEmitter } from 'node:events';
import { Metadata } from '@grpc/grpc-js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { invalidArgument, notFound, unauthenticated } from '../../src/errors.js';
import type { Principal } from '../../src/principal.js';
import { CallRegistry, StreamCall, UnaryCall, type RpcCall } from '../../src/transport/call.js';
import { Limits, type LimitsConfig } from '../../src/transport/limits.js';
import { callChain, compose, type Authenticate } from '../../src/transport/middleware.js';
import { CallCancelled } from '../../src/transport/status.js';
import { eventually } from '../helpers/eventually.js';

const config: LimitsConfig = {
  streamsPerAccount: 5,
  utteranceBytesPerAccount: 100,
  utteranceBytesPerUtterance: 60,
  clientStreamIdleMs: 1_000,
  requestsPerSecond: 1,
  requestBurst: 1,
};

/** The part of a grpc-js server call the runtime reads, without a server. */
class FakeGrpcCall extends EventEmitter {
  readonly metadata = new Metadata();
  cancelled = false;
  getPeer(): string {
    return 'ipv4:127.0.0.1:1';
  }
  getDeadline(): Date | number {
    return Infinity;
  }
  cancel(): void {
    this.cancelled = true;
    this.emit('cancelled');
  }
}

function setup() {
  const events: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger('info', (l) => lines.push(JSON.parse(l)));
  const metrics = new Metrics({ logger: createLogger('silent') });
  class RecordingLimits extends Limits {
    override admit(accountId: string, method: string): void {
      events.push('limits');
      super.admit(accountId, method);
    }
  }
  const limits = new RecordingLimits(config, { logger: createLogger('silent'), metrics });
  const calls = new CallRegistry();
  const principal = { accountId: 'acct-1' } as Principal;
  let refuse = false;
  const authenticate: Authenticate = async () => {
    events.push('auth');
    if (refuse) throw unauthenticated('no key');
    return principal;
  };
  const chain = callChain({ logger, calls, limits }, authenticate);
  return { events, lines, limits, calls, chain, refuseAuth: () => (refuse = true) };
}

const handlerRecording =
  (events: string[], result: () => Promise<unknown>) =>
  async (call: RpcCall): Promise<unknown> => {
    events.push(`handler:${call.principal?.accountId}`);
    return result();
  };

test('middleware runs authentication, then limits, then the handler, and logs one line with its status', async (t) => {
  const s = setup();
  const run = compose(s.chain, handlerRecording(s.events, async () => 'reply'));
  const call = new UnaryCall('/svc/Get', new FakeGrpcCall());
  t.is(await run(call), 'reply');
  t.deepEqual(s.events, ['auth', 'limits', 'handler:acct-1']);
  t.is(s.calls.size, 0);
  t.is(s.lines.length, 1);
  t.like(s.lines[0], { level: 'info', msg: 'call', method: '/svc/Get', status: 'OK' });
  t.is(typeof s.lines[0]!.durationMs, 'number');
});

test('middleware stops at a refused authentication, before limits and the handler; the log line says UNAUTHENTICATED', async (t) => {
  const s = setup();
  s.refuseAuth();
  const run = compose(s.chain, handlerRecording(s.events, async () => 'reply'));
  await t.throwsAsync(run(new UnaryCall('/svc/Get', new FakeGrpcCall())), { message: 'no key' });
  t.deepEqual(s.events, ['auth']);
  t.is(s.calls.size, 0);
  t.like(s.lines[0], { status: 'UNAUTHENTICATED' });
  t.false('error' in s.lines[0]!, 'no stack for an expected failure');
});

test('middleware refuses a call over its account rate before the handler runs; the log line says RESOURCE_EXHAUSTED', async (t) => {
  const s = setup();
  const run = compose(s.chain, handlerRecording(s.events, async () => 'reply'));
  await run(new UnaryCall('/svc/Get', new FakeGrpcCall()));
  await t.throwsAsync(run(new UnaryCall('/svc/Get', new FakeGrpcCall())));
  t.deepEqual(s.events, ['auth', 'limits', 'handler:acct-1', 'auth', 'limits']);
  t.deepEqual(
    s.lines.map((l) => l.status),
    ['OK', 'RESOURCE_EXHAUSTED'],
  );
});

test('middleware logs the handler status, and the stack only for INTERNAL', async (t) => {
  const s = setup();
  const missing = compose(s.chain, async () => {
    throw notFound('thing');
  });
  await t.throwsAsync(missing(new UnaryCall('/svc/Get', new FakeGrpcCall())));
  t.like(s.lines[0], { level: 'info', status: 'NOT_FOUND' });
  t.false('error' in s.lines[0]!);
  const other = setup(); // a fresh account rate
  const broken = compose(other.chain, async () => {
    throw new Error('boom');
  });
  await t.throwsAsync(broken(new UnaryCall('/svc/Get', new FakeGrpcCall())));
  t.like(other.lines[0], { level: 'error', status: 'INTERNAL' });
  t.regex(String(other.lines[0]!.error), /boom\n\s+at /);
});

test('middleware ends a cancelled stream at once, while its handler still runs: slot back, registry free, logged CANCELLED', async (t) => {
  const s = setup();
  let handlerSignal: AbortSignal | undefined;
  let finishHandler!: () => void;
  const handlerDone = new Promise<void>((r) => (finishHandler = r));
  const run = compose(s.chain, async (call: RpcCall) => {
    handlerSignal = call.signal;
    // Parked on something the signal cannot interrupt (a Postgres query).
    await handlerDone;
    throw new Error('late failure, after the call ended');
  });
  const grpc = new FakeGrpcCall();
  const call = new StreamCall('/svc/Watch', grpc);
  const outcome = run(call);
  // The handler runs once authentication has settled.
  await eventually(() => handlerSignal !== undefined, 'the handler to start');
  t.is(s.limits.streamsOf('acct-1'), 1);
  t.is(s.calls.size, 1);
  grpc.cancel();
  const err = await t.throwsAsync(outcome);
  t.true(err instanceof CallCancelled);
  t.true(handlerSignal?.aborted);
  t.is(s.limits.streamsOf('acct-1'), 0);
  t.is(s.calls.size, 0);
  t.false(call.answers, 'nothing is sent to a client that is gone');
  finishHandler();
  await handlerDone;
  await new Promise((r) => setImmediate(r)); // the late failure has settled, unheard
  t.deepEqual(
    s.lines.map((l) => l.status),
    ['CANCELLED'],
    'one line, with the status the call ended with',
  );
  t.like(s.lines[0], { end: 'client_cancel' });
});

test('middleware takes no slot for a stream cancelled while it authenticates', async (t) => {
  const s = setup();
  const grpc = new FakeGrpcCall();
  const run = compose(s.chain, handlerRecording(s.events, async () => undefined));
  const outcome = run(new StreamCall('/svc/Watch', grpc));
  grpc.cancel();
  await t.throwsAsync(outcome, { instanceOf: CallCancelled });
  await eventually(() => s.events.length > 0, 'authentication to run');
  await new Promise((r) => setImmediate(r)); // authentication has settled
  t.deepEqual(s.events, ['auth']);
  t.is(s.limits.streamsOf('acct-1'), 0);
});

test('middleware ends streams at shutdown with UNAVAILABLE, which is sent', async (t) => {
  const s = setup();
  const call = new StreamCall('/svc/Watch', new FakeGrpcCall());
  const run = compose(s.chain, (c: RpcCall) => new Promise((resolve) => c.signal.addEventListener('abort', resolve)));
  const outcome = run(call);
  await eventually(() => s.limits.streamsOf('acct-1') === 1, 'the stream to take its slot');
  s.calls.endStreams();
  await t.throwsAsync(outcome, { message: 'server shutting down' });
  t.true(call.answers);
  t.is(s.limits.streamsOf('acct-1'), 0);
  t.like(s.lines[0], { status: 'UNAVAILABLE', reason: 'SERVER_SHUTTING_DOWN', end: 'shutdown' });
});

test('middleware: the line of a failed call carries its ErrorInfo reason and first violated field, never the values', async (t) => {
  const s = setup();
  const run = compose(s.chain, async () => {
    throw invalidArgument(
      [
        { field: 'prompt.name', description: 'must be at most 64 characters, got "secret-value-of-the-caller"' },
        { field: 'prompt.text', description: 'is required' },
      ],
      'FIELD_TOO_LARGE',
    );
  });
  await t.throwsAsync(run(new UnaryCall('/svc/Create', new FakeGrpcCall())));
  t.like(s.lines[0], { status: 'INVALID_ARGUMENT', reason: 'FIELD_TOO_LARGE', field: 'prompt.name' });
  t.false(JSON.stringify(s.lines[0]).includes('secret-value'), 'no description, no value');
  t.false('end' in s.lines[0]!, 'a unary call has no end');
  const other = setup();
  await t.throwsAsync(compose(other.chain, async () => Promise.reject(notFound`session ${'s-1'}`))(new UnaryCall('/svc/Get', new FakeGrpcCall())));
  t.like(other.lines[0], { status: 'NOT_FOUND', reason: 'SESSION_NOT_FOUND' });
  t.false('field' in other.lines[0]!);
});

test('middleware: the line of a stream says how it ended: ok, error, deadline', async (t) => {
  const s = setup();
  await compose(s.chain, async () => undefined)(new StreamCall('/svc/Watch', new FakeGrpcCall()));
  const other = setup();
  await t.throwsAsync(compose(other.chain, async () => Promise.reject(new Error('boom')))(new StreamCall('/svc/Watch', new FakeGrpcCall())));
  const late = setup();
  const expired = new (class extends FakeGrpcCall {
    override getDeadline(): Date | number {
      return Date.now() - 1;
    }
  })();
  await t.throwsAsync(compose(late.chain, (c: RpcCall) => new Promise((resolve) => c.signal.addEventListener('abort', resolve)))(new StreamCall('/svc/Watch', expired)));
  t.like(s.lines[0], { status: 'OK', end: 'ok' });
  t.false('reason' in s.lines[0]!);
  t.like(other.lines[0], { status: 'INTERNAL', reason: 'INTERNAL', end: 'error' });
  t.like(late.lines[0], { status: 'DEADLINE_EXCEEDED', end: 'deadline' });
});

test('middleware: the trace id of an incoming traceparent is in the line; an invalid one is ignored', async (t) => {
  const s = setup();
  const run = compose(s.chain, async () => 'reply');
  const traced = new FakeGrpcCall();
  traced.metadata.set('traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
  await run(new UnaryCall('/svc/Get', traced));
  const bad = new FakeGrpcCall();
  bad.metadata.set('traceparent', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01');
  const again = setup();
  await compose(again.chain, async () => 'reply')(new UnaryCall('/svc/Get', bad));
  t.like(s.lines[0], { status: 'OK', traceId: '4bf92f3577b34da6a3ce929d0e0e4736' });
  t.like(again.lines[0], { status: 'OK' });
  t.false('traceId' in again.lines[0]!);
});
