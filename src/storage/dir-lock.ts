import { randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Another live process holds the data dir. */
export class DataDirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number | undefined,
  ) {
    super(
      `the data dir ${dir} is in use by ${pid ? `process ${pid}` : 'another process'}; two processes must not open ` +
        'one embedded database. Stop that process first, or run maintenance through it: ' +
        'parley purge --address host:port with PARLEY_ADMIN_TOKEN set',
    );
    this.name = 'DataDirLockedError';
  }
}

export const LOCK_FILE = 'parley.lock';

/**
 * Takes the exclusive lock of an embedded data dir: a file holding our pid, created with O_EXCL (`wx`) so
 * exactly one of two racing processes creates it. A lock whose pid is dead is stale (a crash or SIGKILL
 * left it) and is taken over. Returns the release function, which is also run on exit.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return holdLock(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = pidIn(file);
    if (holder !== undefined && alive(holder)) throw new DataDirLockedError(dir, holder);
    takeOverStale(file, holder);
  }
  throw new DataDirLockedError(dir, pidIn(file));
}

/**
 * Moves a stale lock aside. A rename is atomic, but another process may have replaced the stale file in
 * the meantime: when what was moved is not the stale lock that was read, it is put back (link fails
 * rather than overwrite a newer lock) and the caller tries again.
 */
function takeOverStale(file: string, stalePid: number | undefined): void {
  const aside = `${file}.${process.pid}.${randomUUID()}`;
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = pidIn(aside);
  if (moved !== stalePid && moved !== undefined && alive(moved)) {
    try {
      linkSync(aside, file);
    } catch {
      // Yet another lock is in place already; the retry meets it.
    }
  }
  unlinkSync(aside);
}

function holdLock(file: string): () => void {
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.removeListener('exit', release);
    // Only our own lock: never one another process took over after a stale-lock decision.
    if (pidIn(file) === process.pid) {
      try {
        unlinkSync(file);
      } catch {
        // Already gone.
      }
    }
  };
  process.on('exit', release);
  return release;
}

function pidIn(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Signal 0 tests for existence: ESRCH means gone, EPERM means alive under another user. */
function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
