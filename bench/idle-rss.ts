/**
 * Idle memory of the compiled server (`node dist/main.js serve`, what `npm start` and `parley serve` run):
 * one on the embedded default (PGlite + in-process store) and one on Postgres and Redis, started side by
 * side. Their RSS (VmRSS of /proc/<pid>/status) is read once serving, after a short warm-up of real calls,
 * and after a quiet spell in which V8 gives back the heap it grew while loading modules (its memory reducer
 * runs once a process has stopped allocating for a while).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rssKbOf, sleep } from './lib.js';

export interface IdleRss {
  server: 'embedded' | 'postgres+redis';
  startupMiB: number | null;
  warmMiB: number | null;
  settledMiB: number | null;
  /** What the same server measured when it ran under tsx (before the compiled build), for comparison. */
  before: string;
}

/** The figures measured before the compiled build: `npm start` through tsx, and the real backends under load. */
const BEFORE = { embedded: '400–820 (idle, npm start via tsx)', real: '190–250 (under the bench, via tsx)' } as const;

export interface IdleRssDeps {
  root: string;
  databaseUrl: string;
  redisUrl: string;
  settleMs: number;
  /** Starts the server (killed with the bench's other children). */
  spawnServer: (args: string[], env: NodeJS.ProcessEnv, name: string) => ChildProcess;
  freePort: () => Promise<number>;
  waitServing: (address: string, timeoutMs: number) => Promise<void>;
  /** A few real calls through the server (admin, prompt and genie). */
  warmUp: (address: string, databaseUrl: string | undefined) => Promise<void>;
  scratchDatabase: () => Promise<{ url: string; drop: () => Promise<void> }>;
  adminToken: string;
  redisPrefix: string;
  log: (msg: string) => void;
}

const mib = (pid: number | undefined) => {
  const kb = pid ? rssKbOf(pid) : undefined;
  return kb === undefined ? null : Math.round((kb / 1024) * 10) / 10;
};

export async function measureIdleRss(deps: IdleRssDeps): Promise<IdleRss[]> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'parley-bench-idle-'));
  const scratch = await deps.scratchDatabase();
  try {
    const one = async (server: IdleRss['server']): Promise<IdleRss> => {
      const address = `127.0.0.1:${await deps.freePort()}`;
      const backend = server === 'embedded' ? { DATABASE_URL: '', REDIS_URL: '', PARLEY_DATA_DIR: dataDir } : { DATABASE_URL: scratch.url, REDIS_URL: deps.redisUrl, PARLEY_REDIS_PREFIX: deps.redisPrefix };
      const env = { ...process.env, ...backend, PARLEY_LISTEN: address, PARLEY_ADMIN_TOKEN: deps.adminToken, PARLEY_LOG_LEVEL: 'warn' };
      const child = deps.spawnServer([path.join(deps.root, 'dist', 'main.js'), 'serve'], env, `idle ${server}`);
      try {
        await Promise.race([
          deps.waitServing(address, 120_000),
          new Promise<never>((_, reject) => child.once('exit', (c) => reject(new Error(`the ${server} server exited with ${c} before serving`)))),
        ]);
        const startupMiB = mib(child.pid);
        await deps.warmUp(address, server === 'embedded' ? undefined : scratch.url);
        const warmMiB = mib(child.pid);
        await sleep(deps.settleMs);
        const settledMiB = mib(child.pid);
        deps.log(`idle RSS, ${server}: ${startupMiB} MiB serving, ${warmMiB} after warm-up, ${settledMiB} after ${deps.settleMs / 1000} s idle`);
        return { server, startupMiB, warmMiB, settledMiB, before: server === 'embedded' ? BEFORE.embedded : BEFORE.real };
      } finally {
        child.kill('SIGTERM');
        await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
      }
    };
    return await Promise.all([one('embedded'), one('postgres+redis')]);
  } finally {
    await scratch.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export function idleRssTable(rows: IdleRss[], settleMs: number): string {
  const f = (n: number | null) => (n === null ? '—' : n.toFixed(1));
  const head = ['compiled server', 'serving MiB', 'after warm-up MiB', `after ${settleMs / 1000} s idle MiB`, 'before: tsx MiB'];
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) out.push(`| ${[r.server, f(r.startupMiB), f(r.warmMiB), f(r.settledMiB), r.before].join(' | ')} |`);
  return out.join('\n');
}
