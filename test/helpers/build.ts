import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * bin/parley.js runs the compiled dist/, so a test that spawns it needs dist/ current with src/. `npm test`
 * builds first (pretest); `npx ava <files>` after an edit does not, hence: the first call in each test process
 * runs `npm run build` (`tsc -b`: about a second when nothing changed), one process at a time — test files run
 * in parallel processes, and two builds writing the same files would let a third process read half a file.
 */
let built = false;

export function parleyBin(): string {
  if (!built) {
    withBuildLock(() => {
      const r = spawnSync('npm', ['run', '--silent', 'build'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`npm run build failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
    });
    built = true;
  }
  return path.resolve('bin/parley.js');
}

const LOCK_WAIT_MS = 300_000;

/** A directory made exclusively, holding its owner's pid; an owner that died without removing it is replaced. */
function withBuildLock(fn: () => void): void {
  const lock = path.join(tmpdir(), `parley-build-${createHash('sha256').update(process.cwd()).digest('hex').slice(0, 12)}.lock`);
  const until = Date.now() + LOCK_WAIT_MS;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!ownerAlive(lock)) rmSync(lock, { recursive: true, force: true });
      else if (Date.now() > until) throw new Error(`waited ${LOCK_WAIT_MS} ms for another test process to build dist/ (${lock})`);
      // Synchronous on purpose: the build gates this process's first spawn of the CLI, and nothing else runs yet.
      else Atomics.wait(pause, 0, 0, 100);
    }
  }
  try {
    fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function ownerAlive(lock: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(lock, 'pid'), 'utf8'));
  } catch {
    return true; // made a moment ago, its pid not written yet
  }
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
