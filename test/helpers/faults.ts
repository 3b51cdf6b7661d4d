import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { eventually } from './eventually.js';
import { freePort } from './processes.js';

/**
 * Fault injection for tests: a private redis-server (its own port and directory, never the shared one)
 * that a test may stop, kill -9, snapshot and restore, and a TCP proxy that can cut and refuse the
 * connections to whatever sits behind it (Postgres or Redis) without touching that server. Everything a
 * test starts here is torn down when the test ends.
 */

export { hasRedisServer } from './processes.js';

export class PrivateRedis {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly snapshotFile: string;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly cluster: boolean,
  ) {
    this.snapshotFile = path.join(dir, 'snapshot.rdb');
  }

  /**
   * Starts one and registers its teardown on `t`. `cluster`: a one-node Redis Cluster owning every slot,
   * which refuses (CROSSSLOT) any command or script touching keys of two slots, as a real cluster does.
   */
  static async start(t: ExecutionContext, opts: { cluster?: boolean } = {}): Promise<PrivateRedis> {
    const r = new PrivateRedis(await freePort(), mkdtempSync(path.join(os.tmpdir(), 'parley-redis-')), opts.cluster === true);
    t.teardown(() => r.destroy());
    await r.start();
    if (r.cluster) {
      await r.command((c) => c.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383'));
      await eventually(
        () => r.command(async (c) => String(await c.call('CLUSTER', 'INFO')).includes('cluster_state:ok')),
        'the one-node cluster to own every slot',
      );
    }
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** (Re)starts the server; it loads dump.rdb from its directory when there is one. */
  async start(): Promise<void> {
    // No automatic saves: the only dump is the one snapshot() or restore() puts there.
    const child = spawn(
      'redis-server',
      [
        ...['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'no', '--dbfilename', 'dump.rdb'],
        ...(this.cluster ? ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'] : []),
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('Ready to accept connections')) resolve();
      });
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out.slice(-500)}`)));
    });
  }

  /** A clean stop (SIGTERM; with saving off, nothing is written). */
  async stop(): Promise<void> {
    this.child?.kill('SIGTERM');
    await this.exited;
    this.child = undefined;
  }

  /** kill -9: no chance to flush or to close connections politely. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
    this.child = undefined;
  }

  /** SIGSTOP: connections stay open but nothing answers (a hung server). */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Saves the current data set aside (SAVE, then a copy of the dump). */
  async snapshot(): Promise<void> {
    await this.command((r) => r.save());
    copyFileSync(path.join(this.dir, 'dump.rdb'), this.snapshotFile);
  }

  /** kill -9, then restart from the last snapshot: Redis comes back with older data than it had. */
  async restoreSnapshot(): Promise<void> {
    if (!existsSync(this.snapshotFile)) throw new Error('restoreSnapshot before snapshot');
    await this.kill();
    copyFileSync(this.snapshotFile, path.join(this.dir, 'dump.rdb'));
    await this.start();
  }

  /** Drops every client connection (the server stays up): what a network blip looks like to clients. */
  async dropConnections(): Promise<void> {
    await this.command((r) => r.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes').then(() => r.client('KILL', 'TYPE', 'pubsub')));
  }

  /** Runs commands on a short-lived connection of its own. */
  command<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
    return onRedis(this.url, fn);
  }

  async destroy(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy to `target` on a free local port. `cut()` resets every open connection; `refuse()` also
 * stops listening, so new connections are refused, until `accept()`. To the client this is the server
 * going away, while the server itself (possibly shared) is untouched.
 */
/** Runs commands on a short-lived plain connection to the Redis at `url` (no retries, no reconnects). */
export async function onRedis<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(t: ExecutionContext, target: { host: string; port: number }): Promise<TcpProxy> {
    const p = new TcpProxy(await freePort(), target);
    t.teardown(() => p.close());
    await p.accept();
    return p;
  }

  /** `url` with its host and port replaced by this proxy's. */
  via(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  /** Listens (again) and forwards every new connection. */
  async accept(): Promise<void> {
    if (this.server) return;
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  /** Resets every open connection; new ones are still accepted. */
  cut(): void {
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
  }

  /** Stops listening (new connections are refused) and resets the open ones. */
  async refuse(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    this.cut();
    await closed;
  }

  async close(): Promise<void> {
    await this.refuse();
  }
}

/** host and port of a redis:// or postgres:// URL. */
export function endpointOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || (u.protocol.startsWith('redis') ? 6379 : 5432)) };
}
