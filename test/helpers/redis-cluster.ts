import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { type Redis } from 'ioredis';
import { eventually } from './eventually.js';
import { onRedis } from './faults.js';
import { freePort } from './processes.js';

const run = promisify(execFile);

/** Whether `port` can be bound on 127.0.0.1 right now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (port + 10000) is free too. */
async function freeClusterPort(taken: number[]): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 <= 65_535 && !taken.includes(port) && (await bindable(port + 10_000))) return port;
  }
}

/** Runs commands on a short-lived plain connection to one node. */
export function onNode<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  return onRedis(`redis://127.0.0.1:${port}`, fn);
}

/** The ports of the cluster's masters (those owning slots). */
export async function masterPorts(seedPort: number): Promise<number[]> {
  const ranges = await onNode(seedPort, (r) => r.call('CLUSTER', 'SLOTS') as Promise<Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>>);
  return [...new Set(ranges.map((range) => Number(range[2][1])))].sort();
}

/** The port of the master owning `key`'s slot, as the cluster itself computes and maps it. */
export async function ownerOf(seedPort: number, key: string): Promise<number> {
  return onNode(seedPort, async (r) => {
    const slot = Number(await r.call('CLUSTER', 'KEYSLOT', key));
    const ranges = (await r.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;
    const range = ranges.find(([from, to]) => slot >= from && slot <= to);
    if (!range) throw new Error(`slot ${slot} has no master`);
    return Number(range[2][1]);
  });
}

/**
 * A private three-master Redis Cluster on free ports, made by scripts/redis-cluster.sh (the script CI runs), so a
 * test may restart one of its masters; never the cluster the other tests share. Torn down when the test ends.
 */
export class PrivateRedisCluster {
  private constructor(
    readonly ports: number[],
    private readonly dir: string,
  ) {}

  static async start(t: ExecutionContext): Promise<PrivateRedisCluster> {
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) ports.push(await freeClusterPort(ports));
    const c = new PrivateRedisCluster(ports, mkdtempSync(path.join(os.tmpdir(), 'parley-cluster-')));
    t.teardown(() => c.destroy());
    await c.script('start');
    return c;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.ports[0]}`;
  }

  private async script(command: 'start' | 'stop'): Promise<void> {
    await run('scripts/redis-cluster.sh', [command], {
      env: { ...process.env, PARLEY_REDIS_CLUSTER_PORTS: this.ports.join(' '), PARLEY_REDIS_CLUSTER_DIR: this.dir },
    });
  }

  /** kill -9 the node on `port` (no chance to save or to close connections politely). */
  async kill(port: number): Promise<void> {
    const pid = await onNode(port, async (r) => Number(/process_id:(\d+)/.exec(await r.info('server'))?.[1]));
    process.kill(pid, 'SIGKILL');
    await eventually(() => onNode(port, (r) => r.ping()).then(() => false, () => true), `the node on ${port} to be gone`);
  }

  /** Starts the nodes that are down: each rejoins the cluster (its nodes.conf) with no data. */
  async startStopped(): Promise<void> {
    await this.script('start');
    for (const port of this.ports) {
      await eventually(
        () => onNode(port, async (r) => String(await r.call('CLUSTER', 'INFO')).includes('cluster_state:ok')),
        `the node on ${port} in a healthy cluster`,
      );
    }
  }

  /** kill -9 the node on `port`, then start it again: it rejoins the cluster with no data. */
  async restartEmpty(port: number): Promise<void> {
    await this.kill(port);
    await this.startStopped();
  }

  async destroy(): Promise<void> {
    await this.script('stop').catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}
