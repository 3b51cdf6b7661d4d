import test from 'ava';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { testWhen } from '../helpers/backends.js';
import { bufCurl } from '../helpers/buf-curl.js';
import { parleyBin } from '../helpers/build.js';
import { ADMIN_TOKEN, createTenant, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';

// ExportSession and ImportSession as their callers call them: the compiled CLI over JSON lines, buf curl,
// and a generated Python client.

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const pythonReady = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc']).status === 0;
const withPython = testWhen(pythonReady, 'python3-grpcio and python3-grpc-tools (Debian) are not installed');

let s: TestServer;
let other: TestServer;
test.before(async () => {
  [s, other] = await Promise.all([startTestServer(), startTestServer()]);
});
test.after.always(async () => {
  await Promise.all([s?.stop(), other?.stop()]);
});

/** A tenant's API key as the CLI takes it (PARLEY_API_KEY). */
const keyOf = (tenant: Tenant) => String(tenant.md.get('authorization')[0]).replace(/^Bearer /, '');

/** Runs the compiled CLI to its exit, `input` on stdin. */
function cli(args: string[], env: Record<string, string>, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [parleyBin(), ...args], { env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

async function twoSessions(g: ReturnType<typeof genie>) {
  const ids = [];
  for (const topic of ['one', 'two']) {
    const { sessionId } = await g.create('qa', { topic });
    await g.send(sessionId, 'user_input', `about ${topic}`);
    await g.put(sessionId, 'k', Buffer.from(topic));
    ids.push(sessionId);
  }
  return ids;
}

test('parley export then parley import (compiled): sessions move to another server as JSON lines, refused ones reported', async (t) => {
  t.timeout(180_000);
  const from = await createTenant(s);
  const g = genie(s, from);
  await g.register(modelType());
  const ids = await twoSessions(g);
  const exported = await cli(['export', '--address', s.address, '--all-revisions', ...ids], { PARLEY_API_KEY: keyOf(from) });
  t.is(exported.code, 0, exported.stderr);
  const lines = exported.stdout.trim().split('\n');
  t.true(lines.every((l) => JSON.parse(l) !== undefined), 'one JSON value per line');
  t.is(lines.filter((l) => 'header' in JSON.parse(l)).length, 2);
  t.is(lines.filter((l) => 'trailer' in JSON.parse(l)).length, 2);

  const to = await createTenant(other);
  const h = genie(other, to);
  await h.register(modelType());
  const dir = mkdtempSync(path.join(tmpdir(), 'parley-transfer-'));
  try {
    const file = path.join(dir, 'sessions.jsonl');
    writeFileSync(file, exported.stdout);
    const imported = await cli(['import', '--address', other.address, '--keep-ids', file], { PARLEY_API_KEY: keyOf(to) });
    t.is(imported.code, 0, imported.stderr);
    t.regex(imported.stdout, /imported: 2, refused: 0/);
    for (const id of ids) t.like(await h.get(id), { sessionId: id, revision: 3, dialogueLength: 1 });
    // Again from stdin: both ids are taken now.
    const again = await cli(['import', '--address', other.address, '--keep-ids'], { PARLEY_API_KEY: keyOf(to) }, exported.stdout);
    t.is(again.code, 1);
    t.regex(again.stdout, /imported: 0, refused: 2/);
    t.is(again.stdout.trim().split('\n').filter((l) => l.startsWith('refused ') && l.includes('already exists')).length, 2, again.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const noKey = await cli(['export', '--address', s.address, ids[0]!], { PARLEY_API_KEY: '' });
  t.is(noKey.code, 1);
  t.regex(noKey.stderr, /PARLEY_API_KEY/);
  const missing = await cli(['export', '--address', s.address, '00000000-0000-4000-8000-000000000000'], { PARLEY_API_KEY: keyOf(from) });
  t.is(missing.code, 1);
  t.regex(missing.stderr, /not found/);
});

test('buf curl: ExportSession prints the records as JSON; ImportSession takes them back', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const [id] = await twoSessions(g);
  const auth = String(tenant.md.get('authorization')[0]);
  const { execFile: ef } = await import('node:child_process');
  const buf = path.resolve('node_modules/.bin/buf');
  // A server stream prints one JSON object per response.
  const out = await promisify(ef)(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-H', `authorization: ${auth}`, '-d', JSON.stringify({ sessionId: id, allRevisions: true }), `http://${s.address}/parley.genie.v1.GenieService/ExportSession`], { encoding: 'utf8' });
  const responses = out.stdout.trim().split(/\n(?=\{)/).map((x) => JSON.parse(x) as { record: Record<string, unknown> });
  t.truthy(responses[0]!.record.header);
  t.truthy(responses.at(-1)!.record.trailer);
  t.deepEqual((responses[0]!.record.header as { sessionId: string }).sessionId, id);
  // A client stream takes concatenated JSON messages.
  const body = responses.map((r, i) => JSON.stringify(i === 0 ? { ...r, requestId: '' } : r)).join('\n');
  const res = await bufCurl(s.address, 'parley.genie.v1.GenieService/ImportSession', body, auth);
  t.truthy(res.session?.sessionId, JSON.stringify(res).slice(0, 500));
  t.not(res.session.sessionId, id);
  t.is(res.revisionCount, '3');
});

withPython('a Python client exports a session and imports it back', async (t) => {
  const stubs = mkdtempSync(path.join(tmpdir(), 'parley-py-'));
  try {
    await run('scripts/gen-python.sh', [stubs], { encoding: 'utf8', timeout: 120_000 });
    const r = await run(PYTHON, ['test/python/flow.py', stubs, s.address, ADMIN_TOKEN, 'admin_setup', 'session_transfer'], { encoding: 'utf8', timeout: 120_000 });
    const step = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).find((o) => o.step === 'session_transfer')!;
    t.like(step, { revision_count: 3, element_count: 1, secondary_count: 1, kinds: ['element', 'header', 'revision', 'secondary', 'trailer'] });
  } finally {
    rmSync(stubs, { recursive: true, force: true });
  }
});

