import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DataDirLockedError, LOCK_FILE, lockDataDir } from '../../src/storage/dir-lock.js';
import { openDb } from '../../src/storage/db.js';
import { parleyBin } from '../helpers/build.js';

const tempDir = () => mkdtempSync(path.join(tmpdir(), 'parley-lock-'));

test('a second lock of one data dir is refused, naming the dir and the holder, until the first is released', (t) => {
  const dir = tempDir();
  try {
    const release = lockDataDir(dir);
    t.is(readFileSync(path.join(dir, LOCK_FILE), 'utf8').trim(), String(process.pid));
    const err = t.throws(() => lockDataDir(dir), { instanceOf: DataDirLockedError });
    t.true(err!.message.includes(dir));
    t.true(err!.message.includes(`process ${process.pid}`));
    t.regex(err!.message, /parley purge --address/);
    release();
    lockDataDir(dir)();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock left by a dead process is taken over', (t) => {
  const dir = tempDir();
  try {
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(path.join(dir, LOCK_FILE), `${dead.stdout}\n`);
    const release = lockDataDir(dir);
    t.is(readFileSync(path.join(dir, LOCK_FILE), 'utf8').trim(), String(process.pid));
    release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('openDb locks an embedded on-disk dir until destroyed; memory needs no lock', async (t) => {
  const dir = tempDir();
  try {
    const db = openDb({ databaseUrl: undefined, dataDir: dir });
    t.throws(() => openDb({ databaseUrl: undefined, dataDir: dir }), { instanceOf: DataDirLockedError });
    await db.raw('select 1');
    await db.destroy();
    const again = openDb({ databaseUrl: undefined, dataDir: dir });
    await again.raw('select 1');
    await again.destroy();
    const a = openDb({ databaseUrl: undefined, dataDir: 'memory' });
    const b = openDb({ databaseUrl: undefined, dataDir: 'memory' });
    t.deepEqual(
      (await Promise.all([a.raw('select 1 as n'), b.raw('select 1 as n')])).map((r) => r.rows[0].n),
      [1, 1],
      'two memory databases open side by side',
    );
    await Promise.all([a.destroy(), b.destroy()]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI refuses a locked data dir with the message and exit code 1', (t) => {
  const dir = tempDir();
  const release = lockDataDir(dir);
  try {
    const r = spawnSync(process.execPath, [parleyBin(), 'purge', '--older-than', '30d'], {
      env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: dir, PARLEY_LOG_LEVEL: 'silent' },
      encoding: 'utf8',
    });
    t.is(r.status, 1, r.stderr);
    t.true(r.stderr.includes(dir));
    t.true(r.stderr.includes(`process ${process.pid}`));
    t.notRegex(r.stderr, /\bat .*\.ts:\d+/, 'no stack trace');
    t.notRegex(r.stdout, /purged/);
  } finally {
    release();
    rmSync(dir, { recursive: true, force: true });
  }
});
