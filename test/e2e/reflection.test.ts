import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { describe } from '../../src/transport/describe.js';
import { createTenant, startTestServer, type TestServer } from '../helpers/harness.js';

const run = promisify(execFile);
const buf = path.resolve('node_modules/.bin/buf');

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const curl = (args: string[]) =>
  run(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args], { encoding: 'utf8', timeout: 30_000 });

test('reflection lists every service', async (t) => {
  const listed = (await describe(s.address, undefined)).split('\n');
  for (const name of ['parley.admin.v1.AdminService', 'parley.prompt.v1.PromptService', 'parley.genie.v1.GenieService', 'parley.enduser.v1.EndUserService', 'grpc.health.v1.Health']) {
    t.true(listed.includes(name), `${name} missing from ${listed.join(', ')}`);
  }
});

test('reflection serves complete descriptors: a service resolves with its imports (Timestamp, Struct)', async (t) => {
  const service = await describe(s.address, 'parley.prompt.v1.PromptService');
  t.regex(service, /rpc OpenPrompt \( \.parley\.prompt\.v1\.OpenPromptRequest \) returns \( \.parley\.prompt\.v1\.OpenPromptResponse \);/);
  const message = await describe(s.address, 'parley.prompt.v1.Prompt');
  t.regex(message, /\.google\.protobuf\.Timestamp create_time = 11\b/);
  await t.throwsAsync(describe(s.address, 'no.such.Symbol'), { message: /not found/ });
});

test('buf curl lists, and invokes OpenPrompt with JSON, through reflection alone', async (t) => {
  const base = `http://${s.address}`;
  const services = await curl(['--list-services', base]);
  t.regex(services.stdout, /parley\.prompt\.v1\.PromptService/);
  const methods = await curl(['--list-methods', base]);
  t.regex(methods.stdout, /parley\.prompt\.v1\.PromptService\/OpenPrompt/);

  const tenant = await createTenant(s, 'hr');
  const auth = tenant.md.get('authorization')[0] as string;
  const opened = await curl([
    '-H', `authorization: ${auth}`,
    '-d', JSON.stringify({ llm_client_id: tenant.llmClientId, user_agent: 'buf-curl' }),
    `${base}/parley.prompt.v1.PromptService/OpenPrompt`,
  ]);
  const body = JSON.parse(opened.stdout) as { prompt: { sessionKey: string; userAgent: string; createTime: string }; created: boolean };
  t.true(body.created);
  t.regex(body.prompt.sessionKey, /^[0-9a-f]{64}$/);
  t.is(body.prompt.userAgent, 'buf-curl');
  t.regex(body.prompt.createTime, /^\d{4}-\d\d-\d\dT/, 'timestamps render as RFC 3339 through the resolved Timestamp import');
});
