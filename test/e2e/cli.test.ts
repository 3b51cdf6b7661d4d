import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { HealthClient, HealthCheckResponse_ServingStatus as Serving } from '../../src/gen/grpc/health/v1/health.js';
import { rpc } from '../helpers/harness.js';
import { realPostgresUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { parleyBin } from '../helpers/build.js';

const bin = parleyBin();

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

test('parley serve starts on the embedded default, answers health, and stops cleanly on SIGTERM', async (t) => {
  t.timeout(120_000); // a cold start under a loaded CI machine can take tens of seconds
  const dataDir = mkdtempSync(path.join(tmpdir(), 'parley-cli-'));
  const port = await freePort();
  const child = spawn(process.execPath, [bin, 'serve'], {
    env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', PARLEY_LISTEN: `127.0.0.1:${port}`, PARLEY_DATA_DIR: dataDir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    for (let i = 0; i < 600 && !logs.includes('"listening"'); i++) await new Promise((r) => setTimeout(r, 100));
    t.true(logs.includes('"listening"'), `server did not report listening:\n${logs}`);
    const health = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure());
    t.is((await rpc(health, health.check, { service: '' })).status, Serving.SERVING);
    health.close();
    const lines = logs.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.true(lines.every((l) => typeof l.time === 'string' && typeof l.level === 'string'), 'every log line is structured JSON');

    child.kill('SIGTERM');
    t.is(await exited, 0);
    t.true(logs.includes('"stopped"'));
  } finally {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('an invalid environment stops parley with a message naming the variable', (t) => {
  const r = spawnSync(process.execPath, [bin, 'serve'], {
    env: { ...process.env, PARLEY_LISTEN: 'not-an-address' },
    encoding: 'utf8',
  });
  t.is(r.status, 2);
  t.regex(r.stderr, /PARLEY_LISTEN/);
});

test('parley migrate applies migrations to the data dir and reports when up to date', (t) => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'parley-migrate-'));
  try {
    const env = { ...process.env, DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: dataDir };
    const first = spawnSync(process.execPath, [bin, 'migrate'], { env, encoding: 'utf8' });
    t.is(first.status, 0, first.stderr);
    t.regex(first.stdout, /applied: 001_admin/);
    const second = spawnSync(process.execPath, [bin, 'migrate'], { env, encoding: 'utf8' });
    t.is(second.status, 0, second.stderr);
    t.regex(second.stdout, /up to date/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** Runs the CLI to its exit (no timer: the process itself must end); stdout, stderr and the exit code. */
function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The one non-empty line a failed start-up printed (fails the test if there are more or none). */
function oneLine(t: { is(a: unknown, b: unknown, m?: string): void }, stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  t.is(lines.length, 1, `expected exactly one line on stderr:\n${stderr}`);
  return lines[0] ?? '';
}

const embedded = { DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: 'memory', PARLEY_LOG_LEVEL: 'info' };

test('--version and -v print the package version and exit 0', async (t) => {
  const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  for (const flag of ['--version', '-v']) {
    const r = await run([flag], embedded);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `${version}\n`);
    t.is(r.stderr, '');
  }
});

test('parley serve --help (and --help, help, migrate -h) prints usage and exits 0 without listening', async (t) => {
  const port = await freePort();
  for (const args of [['serve', '--help'], ['--help'], ['help'], ['migrate', '-h'], ['purge', '--help']]) {
    const r = await run(args, { ...embedded, PARLEY_LISTEN: `127.0.0.1:${port}` });
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stdout, /^usage: parley <command>/);
    t.true(r.stdout.includes('--version'));
    t.false(r.stderr.includes('listening'), `${args.join(' ')} started a server:\n${r.stderr}`);
  }
});

test('a port in use stops serve with one line naming the address, exit 1', async (t) => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address() as { port: number };
  try {
    const r = await run(['serve'], { ...embedded, PARLEY_LISTEN: `127.0.0.1:${port}` });
    t.is(r.code, 1);
    t.is(oneLine(t, r.stderr), `parley: cannot listen on 127.0.0.1:${port}: address already in use`);
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
});

test('an unreachable Redis stops serve with one line naming its URL without the password, exit 1', async (t) => {
  const port = await freePort(); // free, then closed: nothing listens there
  const r = await run(['serve'], { ...embedded, REDIS_URL: `redis://:secret@127.0.0.1:${port}`, PARLEY_LISTEN: '127.0.0.1:0' });
  t.is(r.code, 1);
  t.is(oneLine(t, r.stderr), `parley: Redis at redis://:***@127.0.0.1:${port} is unreachable (connect ECONNREFUSED)`);
  t.false(r.stderr.includes('secret'));
});

test('an unreachable Redis Cluster stops serve with one line naming its URL without the password, exit 1', async (t) => {
  const port = await freePort(); // free, then closed: nothing listens there
  const r = await run(['serve'], { ...embedded, REDIS_URL: `redis://:secret@127.0.0.1:${port}`, PARLEY_REDIS_CLUSTER: 'true', PARLEY_LISTEN: '127.0.0.1:0' });
  t.is(r.code, 1);
  t.is(oneLine(t, r.stderr), `parley: Redis Cluster at redis://:***@127.0.0.1:${port} is unreachable (connect ECONNREFUSED)`);
  t.false(r.stderr.includes('secret'));
});

testWhen(Boolean(realPostgresUrl), 'no real Postgres configured (PARLEY_TEST_DATABASE_URL)', true)(
  'a Postgres database that does not exist stops serve and migrate with one line naming it, exit 1',
  async (t) => {
    const url = new URL(realPostgresUrl!);
    const name = uniqueName('parley_missing');
    url.pathname = `/${name}`;
    // The server takes this URL without a password (trust) or with its own: either way it must not be printed.
    if (!url.password) url.password = 'hunter2';
    const password = decodeURIComponent(url.password);
    for (const command of ['serve', 'migrate']) {
      const r = await run([command], { ...embedded, DATABASE_URL: url.toString(), PARLEY_LISTEN: '127.0.0.1:0' });
      t.is(r.code, 1, `${command}: ${r.stderr}`);
      const line = oneLine(t, r.stderr);
      t.true(line.startsWith(`parley: Postgres database "${name}" does not exist (`), line);
      t.false(r.stderr.includes(password));
      t.is(r.stdout, '');
    }
  },
);
