import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createTenant, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { env } from '../helpers/backends.js';
import { genie, modelType } from '../genie/fixtures.js';
import { bufCurl } from '../helpers/buf-curl.js';

const run = promisify(execFile);
// Debian's interpreter, where python3-grpcio and python3-grpc-tools install (a pyenv `python3` may shadow it).
const PYTHON = '/usr/bin/python3';

let s: TestServer;
let tenant: Tenant;
let sessionId: string;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType({ jsonSchema: undefined }));
  sessionId = (await g.create('qa', { topic: 'tax' })).sessionId;
});
test.after.always(async () => {
  await s?.stop();
});

/** A buf curl call with a JSON body; resolves to the parsed error body (or response) whatever the exit code. */
async function curl(method: string, body: unknown): Promise<{ code?: string; message?: string }> {
  return bufCurl(s.address, method, body, tenant.md.get('authorization')[0] as string);
}

const G = 'parley.genie.v1.GenieService';

test('hostile JSON through buf curl: __proto__ keys, NUL, deep nesting and floods are precise INVALID_ARGUMENTs', async (t) => {
  const proto = await curl(`${G}/CreateSession`, '{"model_type":"qa","fields":{"__proto__":{"isAdmin":true}}}');
  t.is(proto.code, 'invalid_argument');
  t.regex(proto.message ?? '', /^fields\.__proto__: the key __proto__ is reserved/);

  // (A mask path with underscores cannot be sent as JSON at all: proto-JSON refuses it client-side.)

  const nul = await curl(`${G}/SendEvent`, { session_id: sessionId, event_name: 'user_input', actor_input: 'a\u0000b' });
  t.is(nul.code, 'invalid_argument');
  t.is(nul.message, 'actor_input: must not contain NUL characters');

  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = { a: deep };
  const nested = await curl(`${G}/CreateSession`, { model_type: 'qa', fields: deep });
  t.is(nested.code, 'invalid_argument');
  t.regex(nested.message ?? '', /^fields\.a(\.a)*: nests deeper than 32 levels/);

  const flood = await curl('parley.prompt.v1.PromptService/UpdatePrompt', {
    prompt: { id: '00000000-0000-4000-8000-000000000000' },
    update_mask: Array.from({ length: 1000 }, (_, i) => `f${i}${'x'.repeat(90)}`).join(','),
  });
  t.is(flood.code, 'invalid_argument');
  t.true((flood.message ?? '').length < 1024);

  const read = await curl(`${G}/GetSession`, { session_id: sessionId });
  t.is(Number((read as { session?: { revision?: string } }).session?.revision), 1, 'nothing was written');
});

test('hostile JSON through buf curl: forged page tokens, int64 past 2^53 and an empty event name are INVALID_ARGUMENTs naming the field', async (t) => {
  const g = genie(s, tenant);
  await g.create('qa', { topic: 'second' });
  const first = await g.list('', '', 1);
  const doc = JSON.parse(Buffer.from(first.nextPageToken, 'base64url').toString('utf8')) as object;
  for (const c of [1e308, 'a\u0000', -1, 2 ** 53, { after: 1 }]) {
    const forged = Buffer.from(JSON.stringify({ ...doc, c })).toString('base64url');
    const r = await curl(`${G}/ListSessions`, { page_size: 1, page_token: forged });
    t.is(r.code, 'invalid_argument', JSON.stringify(c));
    t.regex(r.message ?? '', /^page_token: /);
  }
  const big = await curl(`${G}/SendEvent`, { session_id: sessionId, event_name: 'user_input', actor_input: 'x', expected_revision: '9007199254740993' });
  t.is(big.code, 'invalid_argument');
  t.regex(big.message ?? '', /^expected_revision: /);
  const empty = await curl(`${G}/SendEvent`, { session_id: sessionId, event_name: '', actor_input: 'x' });
  t.is(empty.code, 'invalid_argument');
  t.regex(empty.message ?? '', /^event_name: /);
  const read = await curl(`${G}/GetSession`, { session_id: sessionId });
  t.is(Number((read as { session?: { revision?: string } }).session?.revision), 1, 'nothing was written');
});

const pythonReady = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools']).status === 0;
if (!pythonReady && env.ci) throw new Error('CI needs python3-grpcio and python3-grpc-tools (Debian packages) for the Python client tests');

(pythonReady ? test : test.skip)('hostile input from a Python client (python3-grpcio): every case a precise INVALID_ARGUMENT', async (t) => {
  const out = mkdtempSync(path.join(tmpdir(), 'parley-py-'));
  try {
    // As the Python client test does: Debian's protoc (3.5.1) cannot parse proto3 `optional`; see the script.
    await run('scripts/gen-python.sh', [out], { timeout: 120_000 });
    const key = (tenant.md.get('authorization')[0] as string).replace(/^Bearer /, '');
    const { stdout } = await run(PYTHON, ['test/python/hostile_probe.py', out, s.address, key, sessionId], { encoding: 'utf8', timeout: 120_000 });
    type Case = { case: string; code: string; fields: string[]; message?: string };
    const cases = new Map(stdout.trim().split('\n').map((l) => JSON.parse(l) as Case).map((c) => [c.case, c]));
    const expect = (name: string, fields: RegExp) => {
      const c = cases.get(name)!;
      t.is(c?.code, 'INVALID_ARGUMENT', `${name}: ${JSON.stringify(c)}`);
      t.true(c.fields.length > 0 && c.fields.every((f) => fields.test(f)), `${name}: ${c.fields.join(', ')}`);
    };
    expect('proto_key', /^fields\.__proto__$/);
    expect('proto_mask', /^update_mask$/);
    expect('nul', /^actor_input$/);
    expect('nan', /^fields\.n$/);
    expect('deep', /^fields(\.a)+$/);
    expect('timestamp', /^created_after$/);
    expect('timestamp_nanos', /^created_after$/);
    expect('int64_past_2_53', /^expected_revision$/);
    expect('mask_flood', /^update_mask$/);
    t.true((cases.get('mask_flood')?.message ?? '').length < 1024);
    t.is(cases.get('still_served')?.code, 'OK');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
