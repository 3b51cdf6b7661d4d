import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parleyBin } from '../helpers/build.js';
import { eventually } from '../helpers/eventually.js';
import { freePort } from '../helpers/processes.js';

/** Binds `port` on 127.0.0.1 and lets it go: resolves true if nothing else holds it. */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

test('npm start serves, and SIGTERM to the npm process stops parley gracefully and frees the port', async (t) => {
  t.timeout(180_000); // prestart's build and a cold PGlite start on a loaded machine
  parleyBin(); // built once under the tests' lock; prestart's build then finds dist/ current
  const dataDir = mkdtempSync(path.join(tmpdir(), 'parley-npm-start-'));
  const port = await freePort();
  // As an operator or a process manager runs it: npm, whose script runs parley through `sh -c`.
  const npm = spawn('npm', ['start'], {
    env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', PARLEY_LISTEN: `127.0.0.1:${port}`, PARLEY_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so that whatever it leaves behind can be killed afterwards
  });
  let logs = '';
  npm.stdout.on('data', (d: Buffer) => (logs += d.toString()));
  npm.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<number | null>((resolve) => npm.on('exit', (code) => resolve(code)));
  try {
    await eventually(() => logs.includes('"listening"') || npm.exitCode !== null, 'parley to report listening', 150_000);
    t.true(logs.includes('"listening"'), `npm start did not serve:\n${logs}`);
    t.false(await portIsFree(port), 'parley holds its port while serving');

    npm.kill('SIGTERM');
    t.is(await exited, 0, logs);
    t.true(logs.includes('"shutting down"') && logs.includes('"stopped"'), `parley did not stop gracefully:\n${logs}`);
    t.true(await portIsFree(port), `the port is still held after npm exited:\n${logs}`);
  } finally {
    try {
      process.kill(-npm.pid!, 'SIGKILL');
    } catch {
      // the group is gone: nothing was left behind
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('node dist/main.js serves and stops on SIGTERM; it and bin/parley.js answer --version, with plain node', async (t) => {
  t.timeout(120_000);
  const bin = parleyBin();
  const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  // No loader of any kind: a TypeScript file anywhere on the way would fail to load.
  const env = { ...process.env, NODE_OPTIONS: '' };
  for (const entry of [path.resolve('dist/main.js'), bin]) {
    const r = spawnSync(process.execPath, [entry, '--version'], { encoding: 'utf8', env });
    t.is(r.status, 0, r.stderr);
    t.is(r.stdout, `${version}\n`);
  }
  const port = await freePort();
  const child = spawn(process.execPath, [path.resolve('dist/main.js'), 'serve'], {
    env: { ...env, DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: 'memory', PARLEY_LISTEN: `127.0.0.1:${port}` },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await eventually(() => logs.includes('"listening"') || child.exitCode !== null, 'parley to report listening', 100_000);
    t.true(logs.includes('"listening"'), logs);
    child.kill('SIGTERM');
    t.is(await exited, 0, logs);
    t.true(logs.includes('"stopped"'), logs);
    t.true(await portIsFree(port));
  } finally {
    child.kill('SIGKILL');
  }
});

test('a SIGTERM while parley is still starting stops it gracefully once it serves: the signal is never the default kill', async (t) => {
  t.timeout(120_000);
  const bin = parleyBin();
  const [port, metricsPort] = [await freePort(), await freePort()];
  // The metrics endpoint binds (and says so) at the very start of start-up, long before the database is open
  // and the gRPC port listens: a signal sent on that line reaches a process that is still starting.
  const child = spawn(process.execPath, [bin, 'serve'], {
    env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: 'memory', PARLEY_LISTEN: `127.0.0.1:${port}`, PARLEY_METRICS_LISTEN: `127.0.0.1:${metricsPort}` },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
  try {
    await eventually(() => logs.includes('"metrics endpoint listening"') || child.exitCode !== null, 'start-up to begin', 100_000);
    child.kill('SIGTERM');
    t.deepEqual(await exited, [0, null], logs);
    const order = ['"metrics endpoint listening"', '"msg":"listening"', '"shutting down"', '"stopped"'].map((m) => logs.indexOf(m));
    t.true(order.every((at, i) => at >= 0 && (i === 0 || at > order[i - 1]!)), `start-up finished, then a graceful stop:\n${logs}`);
    t.true(await portIsFree(port));
  } finally {
    child.kill('SIGKILL');
  }
});
