import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { HealthClient, HealthCheckResponse_ServingStatus as Serving } from '../../src/gen/grpc/health/v1/health.js';
import { rpc } from '../helpers/harness.js';

const bin = path.resolve('bin/parley.js');

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
