import test, { type ExecutionContext } from 'ava';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { status, type ServiceError } from '@grpc/grpc-js';
import { createLogger, silentLogger } from '../../src/log.js';
import { startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { StartupError } from '../../src/startup-errors.js';
import type { WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { hasRedisServer, PrivateRedis } from '../helpers/faults.js';
import { eventually } from '../helpers/eventually.js';
import { testWhen } from '../helpers/backends.js';

// One server with the endpoint on, on whichever backends the environment selects; serial, as the tests
// count its calls. At most one open stream
// per account, so the second watch is a refusal that the metrics must show.
let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer({ metricsListen: '127.0.0.1:0', accountMaxStreams: 1 });
  tenant = await createTenant(s);
});
test.after.always(async () => {
  await s?.stop();
});

const OPEN = '/parley.prompt.v1.PromptService/OpenPrompt';
const GET = '/parley.prompt.v1.PromptService/GetPrompt';
const WATCH = '/parley.prompt.v1.PromptService/WatchPrompt';
const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };

/** One HTTP/1.1 request as a scraper makes it: the status and the body. */
function http(port: number, path: string, method = 'GET', body?: string): Promise<{ status: number; type: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** The value of one sample line of the exposition text (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(): Promise<string> {
  const r = await http(s.app.metricsPort!, '/metrics');
  if (r.status !== 200) throw new Error(`scrape answered ${r.status}`);
  return r.text;
}

test.serial('metrics endpoint: calls by method and code, latency buckets, cache hits after a repeated read, pool gauges', async (t) => {
  const prompt = (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md)).prompt!;
  for (let i = 0; i < 3; i++) await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, sessionKey: prompt.sessionKey }, tenant.md);
  await rpc(s.prompt, s.prompt.appendHistory, { promptId: prompt.id, request: { q: 1 }, response: undefined, messages: [], requestId: '' }, tenant.md);
  const missing = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.getPrompt, { id: '00000000-0000-4000-8000-000000000000' }, tenant.md));
  t.is(missing.code, status.NOT_FOUND);

  const r = await http(s.app.metricsPort!, '/metrics');
  t.is(r.status, 200);
  t.regex(r.type ?? '', /^text\/plain; version=0\.0\.4/);
  const text = r.text;
  t.is(sample(text, `parley_calls_total{method="${OPEN}",code="OK"}`), 4);
  t.is(sample(text, `parley_calls_total{method="${GET}",code="NOT_FOUND"}`), 1);
  t.is(sample(text, `parley_call_duration_seconds_count{method="${OPEN}"}`), 4);
  t.is(sample(text, `parley_call_duration_seconds_bucket{le="+Inf",method="${OPEN}"}`), 4);
  t.true((sample(text, `parley_call_duration_seconds_bucket{le="10",method="${OPEN}"}`) ?? 0) >= 1);
  // The three reads by session key after the first fill: the cache answers at least the last ones.
  t.true((sample(text, 'parley_cache_reads_total{cache="prompt",result="hit"}') ?? 0) >= 2, 'prompt cache hits');
  t.true((sample(text, 'parley_cache_reads_total{cache="prompt",result="miss"}') ?? 0) >= 1, 'prompt cache misses');
  t.true((sample(text, 'parley_cache_reads_total{cache="principal",result="hit"}') ?? 0) >= 1, 'api key cache hits');
  t.is(typeof sample(text, 'parley_db_pool_connections_in_use'), 'number');
  t.is(typeof sample(text, 'parley_db_pool_acquires_pending'), 'number');
  t.true((sample(text, 'parley_bus_messages_published_total') ?? 0) >= 1, 'the history entry was announced');
  t.is(sample(text, 'parley_redis_errors_total{connection="main"}'), 0);
  t.is(typeof sample(text, 'process_cpu_user_seconds_total'), 'number', 'default process metrics');
});

test.serial('metrics endpoint: a watch stream and its watcher go up and down; a refused second stream is counted', async (t) => {
  const prompt = (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md)).prompt!;
  const call = s.prompt.watchPrompt({ promptId: prompt.id, afterRevision: 0 }, tenant.md);
  let caughtUp = false;
  call.on('data', (r: WatchPromptResponse) => (caughtUp ||= r.update?.caughtUp !== undefined));
  const ended = new Promise<ServiceError>((resolve) => call.on('error', resolve));
  await eventually(() => caughtUp, 'the watch to catch up');
  let text = await scrape();
  t.is(sample(text, `parley_streams_open{method="${WATCH}"}`), 1);
  t.is(sample(text, 'parley_watchers_open{watcher="prompt"}'), 1);

  const second = s.prompt.watchPrompt({ promptId: prompt.id, afterRevision: 0 }, tenant.md);
  second.on('data', () => {});
  const refused = await new Promise<ServiceError>((resolve) => second.on('error', resolve));
  t.is(refused.code, status.RESOURCE_EXHAUSTED);
  t.is(sample(await scrape(), 'parley_limit_refusals_total{reason="STREAM_LIMIT"}'), 1);

  call.cancel();
  t.is((await ended).code, status.CANCELLED);
  await eventually(async () => sample(await scrape(), `parley_streams_open{method="${WATCH}"}`) === 0, 'the stream gauge to go down');
  await eventually(async () => sample(await scrape(), 'parley_watchers_open{watcher="prompt"}') === 0, 'the watcher gauge to go down');
  text = await scrape();
  t.is(sample(text, `parley_calls_total{method="${WATCH}",code="CANCELLED"}`), 1);
  t.is(sample(text, `parley_calls_total{method="${WATCH}",code="RESOURCE_EXHAUSTED"}`), 1);
});

test.serial('metrics endpoint: only GET /metrics is served; /metrics is not on the gRPC port', async (t) => {
  const port = s.app.metricsPort!;
  t.is((await http(port, '/')).status, 404);
  t.is((await http(port, '/metrics/../admin')).status, 404);
  t.is((await http(port, '/metricsx')).status, 404);
  t.is((await http(port, '/metrics', 'POST', 'x'.repeat(100_000))).status, 404);
  t.is((await http(port, '/metrics?name[]=x')).status, 200);
  const head = await http(port, '/metrics', 'HEAD');
  t.is(head.status, 200);
  t.is(head.text, '');
  // The gRPC port speaks HTTP/2 only: an HTTP/1.1 scrape gets no metrics there.
  const onGrpc = await http(s.app.port, '/metrics').catch((err: Error) => ({ status: -1, text: err.message }));
  t.not(onGrpc.status, 200);
  t.false(onGrpc.text.includes('parley_calls_total'));
});

test.serial('metrics endpoint: off by default; with no OpenTelemetry SDK, the trace id of a traceparent still reaches the log line', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const plain = await startTestServer({}, createLogger('info', (l) => lines.push(JSON.parse(l))));
  t.teardown(() => plain.stop());
  t.is(plain.app.config.metricsListen, undefined);
  t.is(plain.app.metricsPort, undefined);
  t.false(lines.some((l) => l.msg === 'metrics endpoint listening'));
  // Still recorded in process (the App exposes them), only not served.
  const md = plain.adminMd.clone();
  md.set('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  await rpc(plain.admin, plain.admin.listAccounts, { pageSize: 1, pageToken: '' }, md);
  t.is(await plain.app.metrics.value('parley_calls_total', { method: '/parley.admin.v1.AdminService/ListAccounts', code: 'OK' }), 1);
  t.like(lines.find((l) => l.msg === 'call' && l.method === '/parley.admin.v1.AdminService/ListAccounts'), { status: 'OK', traceId: '0af7651916cd43dd8448eb211c80319c' });
});

test.serial('metrics endpoint: an address in use stops start-up with one line naming it', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const { port } = taken.address() as AddressInfo;
  // Bound first, so nothing else (storage, the gRPC port) was opened when it fails.
  await t.throwsAsync(startApp({ ...loadConfig({}), listen: '127.0.0.1:0', dataDir: 'memory', metricsListen: `127.0.0.1:${port}` }, silentLogger), {
    instanceOf: StartupError,
    message: `cannot listen on 127.0.0.1:${port} (metrics endpoint): address already in use`,
  });
});

// A Redis of its own that the test stops, whatever REDIS_URL says; Postgres is the environment's.
const withRedis = testWhen(hasRedisServer, 'redis-server is not installed', false, true);

withRedis('a cache or bus failure is counted every time and logged once; Redis errors and the bus reconnection are counted', async (t: ExecutionContext) => {
  const redis = await PrivateRedis.start(t);
  const lines: Array<Record<string, unknown>> = [];
  const f = await startTestServer({ redisUrl: redis.url }, createLogger('warn', (l) => lines.push(JSON.parse(l))));
  t.teardown(() => f.stop());
  const who = await createTenant(f);
  const prompt = (await rpc(f.prompt, f.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: who.llmClientId }, who.md)).prompt!;
  await redis.stop();
  // Each write commits in Postgres and then cannot fence its cached copy nor announce itself: both contained.
  for (let i = 0; i < 3; i++) {
    await rpc(f.prompt, f.prompt.updatePrompt, { prompt: { ...prompt, description: `d${i}` }, updateMask: ['description'], requestId: '' }, who.md);
  }
  t.true((await f.app.metrics.value('parley_contained_failures_total', { what: 'after_commit' })) >= 3);
  const contained = lines.filter((l) => l.msg === 'cache or bus failure contained; the call went on without it');
  t.deepEqual(
    contained.map((l) => [l.level, l.what]),
    [['warn', 'after_commit']],
    'one line however many failures',
  );
  await eventually(async () => (await f.app.metrics.value('parley_redis_errors_total', { connection: 'sub' })) > 0, 'a Redis connection error to be counted');
  t.is(await f.app.metrics.value('parley_bus_reconnects_total'), 0);
  await redis.start();
  await eventually(async () => (await f.app.metrics.value('parley_bus_reconnects_total')) >= 1, 'the bus reconnection to be counted');
});
