import test from 'ava';
import { type Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { createLogger } from '../../src/log.js';
import type { WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { ADMIN_TOKEN, createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';
import { bufCurl } from '../helpers/buf-curl.js';
import { MemoryTracerProvider, type RecordedSpan } from '../helpers/tracing.js';

// As a deployer's OpenTelemetry SDK would: registered globally before the server starts (this file is its
// own process). parley itself depends on the API only.
const provider = new MemoryTracerProvider();
trace.setGlobalTracerProvider(provider);

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };

let s: TestServer;
let tenant: Tenant;
const lines: Array<Record<string, unknown>> = [];
test.before(async () => {
  s = await startTestServer({}, createLogger('info', (l) => lines.push(JSON.parse(l))));
  tenant = await createTenant(s);
});
test.after.always(async () => {
  await s?.stop();
});

/** The tenant's metadata with `traceparent` (and more) added, as an instrumented client sends it. */
function traced(headers: Record<string, string>): Metadata {
  const md = tenant.md.clone();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

const callLines = (method: string) => lines.filter((l) => l.msg === 'call' && l.method === method);
const spansOf = (name: string): RecordedSpan[] => provider.spans.filter((sp) => sp.name === name);

test.serial('a traceparent sent by a client is the parent of the call span, and its trace id is in the log line', async (t) => {
  const method = '/parley.prompt.v1.PromptService/OpenPrompt';
  await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, traced({ traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'vendor=abc' }));
  const line = callLines(method).at(-1)!;
  t.like(line, { status: 'OK', traceId: TRACE });
  const span = spansOf('parley.prompt.v1.PromptService/OpenPrompt').at(-1)!;
  t.like(span, { kind: SpanKind.SERVER, ended: true });
  t.like(span.parent, { traceId: TRACE, spanId: PARENT, isRemote: true });
  t.is(span.parent?.traceState?.get('vendor'), 'abc');
  t.is(span.context.traceId, TRACE);
  t.deepEqual(span.attributes, { 'rpc.system': 'grpc', 'rpc.service': 'parley.prompt.v1.PromptService', 'rpc.method': 'OpenPrompt', 'rpc.grpc.status_code': status.OK });
  t.is(span.status, undefined);
});

test.serial('an invalid traceparent is ignored: the call succeeds in a trace of its own', async (t) => {
  const method = '/parley.prompt.v1.PromptService/OpenPrompt';
  const before = provider.spans.length;
  await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, traced({ traceparent: `00-${'0'.repeat(32)}-${PARENT}-01` }));
  await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, traced({ traceparent: 'garbage' }));
  const spans = provider.spans.slice(before).filter((sp) => sp.name.endsWith('/OpenPrompt'));
  t.is(spans.length, 2);
  for (const sp of spans) {
    t.is(sp.parent, undefined);
    t.not(sp.context.traceId, TRACE);
  }
  const [a, b] = callLines(method).slice(-2);
  t.like(a, { status: 'OK', traceId: spans[0]!.context.traceId });
  t.like(b, { status: 'OK', traceId: spans[1]!.context.traceId });
});

test.serial('a failed call: the span has status ERROR and the code, the line its reason', async (t) => {
  const err = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.getPrompt, { id: 'not-a-uuid' }, traced({ traceparent: `00-${TRACE}-${PARENT}-00` })));
  t.is(err.code, status.INVALID_ARGUMENT);
  const span = spansOf('parley.prompt.v1.PromptService/GetPrompt').at(-1)!;
  t.is(span.attributes['rpc.grpc.status_code'], status.INVALID_ARGUMENT);
  t.deepEqual(span.status, { code: SpanStatusCode.ERROR, message: 'INVALID_ARGUMENT' });
  t.true(span.ended);
  const line = callLines('/parley.prompt.v1.PromptService/GetPrompt').at(-1)!;
  t.like(line, { status: 'INVALID_ARGUMENT', traceId: TRACE, field: 'id' });
  t.is(typeof line.reason, 'string');
  t.false(JSON.stringify(line).includes('not-a-uuid'), 'the value is never logged');
});

test.serial('a stream: its span ends when the client cancels, and its line says how it ended', async (t) => {
  const prompt = (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md)).prompt!;
  const call = s.prompt.watchPrompt({ promptId: prompt.id, afterRevision: 0 }, traced({ traceparent: `00-${TRACE}-${PARENT}-01` }));
  let caughtUp = false;
  call.on('data', (r: WatchPromptResponse) => (caughtUp ||= r.update?.caughtUp !== undefined));
  const ended = new Promise<ServiceError>((resolve) => call.on('error', resolve));
  await eventually(() => caughtUp, 'the watch to catch up');
  const span = spansOf('parley.prompt.v1.PromptService/WatchPrompt').at(-1)!;
  t.false(span.ended, 'open while the stream is');
  call.cancel();
  await ended;
  await eventually(() => span.ended, 'the span to end with the stream');
  t.is(span.attributes['rpc.grpc.status_code'], status.CANCELLED);
  t.is(span.parent?.traceId, TRACE);
  await eventually(() => callLines('/parley.prompt.v1.PromptService/WatchPrompt').length === 1, 'the stream to be logged');
  t.like(callLines('/parley.prompt.v1.PromptService/WatchPrompt')[0], { status: 'CANCELLED', end: 'client_cancel', traceId: TRACE });
});

test.serial('buf curl: a traceparent header parents the span and reaches the log line', async (t) => {
  const traceId = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
  const parent = '1122334455667788';
  const res = await bufCurl(s.address, 'parley.admin.v1.AdminService/ListAccounts', { pageSize: 1 }, `Bearer ${ADMIN_TOKEN}`, { traceparent: `00-${traceId}-${parent}-01` });
  t.true(Array.isArray(res.accounts), JSON.stringify(res).slice(0, 300));
  const span = spansOf('parley.admin.v1.AdminService/ListAccounts').at(-1)!;
  t.like(span.parent, { traceId, spanId: parent });
  t.like(callLines('/parley.admin.v1.AdminService/ListAccounts').at(-1), { status: 'OK', traceId });
});
