import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { credentials, type Metadata } from '@grpc/grpc-js';
import { AdminServiceClient } from '../../src/gen/parley/admin/v1/admin.js';
import { createScratchDatabase, env, uniqueName } from '../helpers/backends.js';
import { parleyBin } from '../helpers/build.js';
import { freePort } from '../helpers/processes.js';
import { bearer, rpc } from '../helpers/harness.js';
import { eventually } from '../helpers/eventually.js';

const run = promisify(execFile);

// The commands of the README's "Metrics, traces and logs", run as shown (ports swapped for free ones).
const START = 'PARLEY_METRICS_LISTEN=127.0.0.1:9464 node --import ./examples/otel-setup.mjs bin/parley.js serve';
const SCRAPE = "curl -s http://127.0.0.1:9464/metrics | grep '^parley_calls_total'";
const TOKEN = 'readme-metrics-token-0123456789';
const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';

test('README metrics: the server started as shown serves /metrics, and the OpenTelemetry example prints a span per call', async (t) => {
  const readme = readFileSync('README.md', 'utf8');
  const section = readme.slice(readme.indexOf('## Metrics, traces and logs'), readme.indexOf('## How the code is laid out'));
  t.true(section.includes(START) && section.includes(SCRAPE), 'the README shows the commands this test runs');

  parleyBin(); // bin/parley.js runs dist/: build it first when run with npx ava
  const [grpcPort, metricsPort] = [await freePort(), await freePort()];
  const scratch = env.databaseUrl ? await createScratchDatabase(env.databaseUrl) : undefined;
  t.teardown(() => scratch?.drop());
  // `VAR=… exec node …`: the command as shown, with node in place of the shell, so SIGTERM reaches it.
  const child = spawn('bash', ['-c', START.replace('9464', String(metricsPort)).replace(' node ', ' exec node ')], {
    env: {
      ...process.env,
      PARLEY_LISTEN: `127.0.0.1:${grpcPort}`,
      PARLEY_ADMIN_TOKEN: TOKEN,
      PARLEY_DATA_DIR: 'memory',
      PARLEY_REDIS_PREFIX: `${uniqueName('parley_readme')}:`,
      ...(scratch ? { DATABASE_URL: scratch.url } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let logs = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  });
  await eventually(() => {
    if (child.exitCode !== null) throw new Error(`parley exited:\n${logs}`);
    // The metrics endpoint binds first; the gRPC port last.
    return logs.includes('"metrics endpoint listening"') && logs.includes('"msg":"listening"');
  }, 'the server and its metrics endpoint to listen', 60_000);

  const admin = new AdminServiceClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure());
  t.teardown(() => admin.close());
  const md: Metadata = bearer(TOKEN);
  md.set('traceparent', `00-${TRACE}-${PARENT}-01`);
  await rpc(admin, admin.listAccounts, { pageSize: 1, pageToken: '' }, md);

  const scraped = await run('bash', ['-c', SCRAPE.replace('9464', String(metricsPort))], { encoding: 'utf8' });
  t.regex(scraped.stdout, /^parley_calls_total\{method="\/parley\.admin\.v1\.AdminService\/ListAccounts",code="OK"\} 1$/m);

  await eventually(() => out.includes('"span"'), 'the example to print the span');
  const span = JSON.parse(out.split('\n').find((l) => l.includes('ListAccounts'))!).span;
  t.like(span, { name: 'parley.admin.v1.AdminService/ListAccounts', traceId: TRACE, parentSpanId: PARENT });
  t.like(span.attributes, { 'rpc.system': 'grpc', 'rpc.method': 'ListAccounts', 'rpc.grpc.status_code': 0 });
  t.true(logs.includes(`"traceId":"${TRACE}"`), 'the call line carries the trace id');

  child.kill('SIGTERM');
  t.is(await exited, 0);
});
