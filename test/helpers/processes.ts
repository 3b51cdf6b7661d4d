import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { parleyBin } from './build.js';

export const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** `parley serve` as a separate process; resolves once it reports listening. */
export async function startParleyProcess(env: Record<string, string>): Promise<{ child: ChildProcess; logs: () => string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [parleyBin(), 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let logs = '';
  child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  for (let i = 0; i < 600 && !logs.includes('"listening"'); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!logs.includes('"listening"')) {
    child.kill('SIGKILL');
    throw new Error(`parley serve did not start:\n${logs}`);
  }
  return {
    child,
    logs: () => logs,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
