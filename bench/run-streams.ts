/**
 * run.ts's streaming part: idle watchers (server RSS per watcher) and fan-out (delivery latency), each on
 * parley and on the bare grpc-js broadcast of bench/ceiling-server.ts.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Metadata, ServiceError } from '@grpc/grpc-js';
import * as genie from '../src/gen/parley/genie/v1/genie.js';
import { bearer, channelOptions, insecure, ProcSampler, rssKbOf, sleep, type BenchContext, type LoadCommand, type Row, type Summary } from './lib.js';
import { revisionOf } from './streams.js';

type LoadCommandBody = LoadCommand extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

export interface StreamingEnv {
  load: { run<T>(cmd: LoadCommandBody, timeoutMs: number, onMeasuring?: () => void): Promise<T>; pid: number | undefined };
  ctx: BenchContext;
  parley: { address: string; pid: number | undefined };
  ceiling: { address: string; pid: number | undefined };
  settings: {
    warmupMs: number;
    measureMs: number;
    fanoutWatchers: number;
    fanoutRate: number;
    idleWatchers: number;
    idleSessions: number;
    heapSnapshot: boolean;
  };
  wants(name: string): boolean;
  log(msg: string): void;
}

const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : null);

/**
 * The watch messages parley sends for one SendEvent, encoded, so the bare broadcast sends the same bytes.
 * Returns undefined when nothing arrives within a few seconds.
 */
export async function captureWatchMessages(ctx: BenchContext): Promise<string[] | undefined> {
  const Response = (genie as Record<string, unknown>).WatchSessionResponse as { encode(m: unknown): { finish(): Uint8Array } } | undefined;
  if (!Response) return undefined;
  const client = new genie.GenieServiceClient(ctx.parleyTarget, insecure, channelOptions(4000));
  const md = bearer(ctx.apiKey);
  const unary = <T = unknown>(method: string, req: unknown, m: Metadata) =>
    new Promise<T>((resolve, reject) =>
      (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method]!.call(client, req, m, { deadline: new Date(Date.now() + 10_000) }, (err: ServiceError | null, res: T) =>
        err ? reject(err) : resolve(res),
      ),
    );
  try {
    const session = (await unary<genie.CreateSessionResponse>('createSession', { modelType: ctx.modelType, fields: {}, requestId: '', endUserId: '', labels: {} }, md)).session!;
    const stream = client.watchSession({ sessionId: session.sessionId, afterRevision: Number(session.revision), afterDeltas: [], snapshot: undefined }, md);
    stream.on('error', () => {});
    const got: unknown[] = [];
    stream.on('data', (m: unknown) => {
      if (revisionOf(m) === Number(session.revision) + 1) got.push(m);
    });
    await sleep(300);
    await unary('sendEvent', { sessionId: session.sessionId, eventName: ctx.event, actor: genie.Actor.ACTOR_USER, actorInput: 'event 0', expectedRevision: Number(session.revision), requestId: '' }, md);
    // One commit may arrive as one message or as one per event: wait for the first, then a little more.
    const until = Date.now() + 3_000;
    while (got.length === 0 && Date.now() < until) await sleep(20);
    await sleep(300);
    stream.cancel();
    return got.length ? got.map((m) => Buffer.from(Response.encode(m).finish()).toString('base64')) : undefined;
  } finally {
    client.close();
  }
}

async function medianRssKb(pid: number | undefined, samples = 5, everyMs = 200): Promise<number | null> {
  if (!pid) return null;
  const v: number[] = [];
  for (let i = 0; i < samples; i++) {
    const r = rssKbOf(pid);
    if (r !== undefined) v.push(r);
    await sleep(everyMs);
  }
  v.sort((a, b) => a - b);
  return v.length ? (v[Math.floor(v.length / 2)] as number) : null;
}

/** Asks the process for a heap snapshot (it runs with --heapsnapshot-signal) and waits until it is written. */
async function heapSnapshot(pid: number | undefined, log: (m: string) => void): Promise<string | undefined> {
  if (!pid) return undefined;
  const dir = path.resolve('bench/results/profiles');
  const existing = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const until = Date.now() + 60_000;
  let last = -1;
  while (Date.now() < until) {
    await sleep(500);
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !existing.has(f));
    if (!file) continue;
    const size = statSync(path.join(dir, file)).size;
    if (size > 0 && size === last) {
      log(`heap snapshot ${file}`);
      return path.join(dir, file);
    }
    last = size;
  }
  log('heap snapshot: none written within 60 s');
  return undefined;
}

export async function runStreaming(env: StreamingEnv): Promise<Row[]> {
  const { load, ctx, settings, log } = env;
  const rows: Row[] = [];
  const targets = [
    { kind: 'parley' as const, address: env.parley.address, pid: env.parley.pid, bare: false },
    { kind: 'bare-broadcast' as const, address: env.ceiling.address, pid: env.ceiling.pid, bare: true },
  ];

  if (env.wants('idle') && settings.idleWatchers > 0) {
    const idleRows: Row[] = [];
    for (const t of targets) {
      const snapshots: Array<string | undefined> = [];
      if (settings.heapSnapshot && !t.bare) snapshots.push(await heapSnapshot(t.pid, log));
      const before = await medianRssKb(t.pid);
      const opened = await load.run<{ watchers: number; sessions: number; channels: number; openSeconds: number }>(
        { kind: 'idle-open', target: t.address, watchers: settings.idleWatchers, sessions: settings.idleSessions, ctx, bare: t.bare, perChannel: 100 },
        150_000,
      );
      await sleep(2_000);
      const after = await medianRssKb(t.pid);
      if (settings.heapSnapshot && !t.bare) {
        snapshots.push(await heapSnapshot(t.pid, log));
        if (snapshots[0] && snapshots[1]) log(`per-watcher heap: npx tsx bench/heap-summary.ts ${snapshots[0]} ${snapshots[1]} ${opened.watchers}`);
      }
      await load.run({ kind: 'idle-close' }, 30_000);
      const perWatcherKiB = before !== null && after !== null ? r2((after - before) / opened.watchers) : null;
      log(`idle ${t.kind}: ${opened.watchers} watchers on ${opened.sessions} sessions open in ${opened.openSeconds}s, ${perWatcherKiB} KiB/watcher`);
      const row: Row = {
        group: 'streaming',
        scenario: `idle watchers (${opened.sessions} sessions)`,
        kind: t.kind,
        concurrency: opened.watchers,
        opsPerSec: null,
        p50Ms: null,
        p95Ms: null,
        p99Ms: null,
        errors: 0,
        cpuPercent: null,
        rssMiB: after === null ? null : Math.round((after / 1024) * 10) / 10,
        hostCpuPercent: null,
        extra: { rssBeforeMiB: before === null ? null : Math.round((before / 1024) * 10) / 10, perWatcherKiB, openSeconds: opened.openSeconds, channels: opened.channels },
      };
      idleRows.push(row);
    }
    const [own, bare] = idleRows as [Row, Row];
    const a = own.extra?.perWatcherKiB as number | null;
    const b = bare.extra?.perWatcherKiB as number | null;
    own.ceiling = 'bare grpc-js streams';
    own.extra = { ...own.extra, perWatcherRatio: a !== null && b !== null && b > 0 ? r2(a / b) : null };
    own.target = '≤1.5× memory/watcher';
    own.met = a !== null && b !== null && b > 0 ? a / b <= 1.5 : null;
    rows.push(...idleRows);
  }

  if (env.wants('fanout') && settings.fanoutWatchers > 0) {
    const fanRows: Row[] = [];
    for (const t of targets) {
      let sampler: ProcSampler | undefined;
      const s = await load.run<Summary & { sends: number; expectedDeliveries: number; deliveries: number; watchers: number }>(
        {
          kind: 'fanout',
          target: t.address,
          watchers: settings.fanoutWatchers,
          ratePerSec: settings.fanoutRate,
          warmupMs: Math.max(1000, settings.warmupMs),
          measureMs: Math.max(5000, settings.measureMs),
          ctx,
          bare: t.bare,
        },
        150_000,
        () => (sampler = new ProcSampler(t.pid)),
      );
      const proc = sampler?.stop() ?? { cpuPercent: null, rssMiB: null, hostCpuPercent: null };
      log(`fanout ${t.kind}: ${s.deliveries}/${s.expectedDeliveries} deliveries, p99 ${s.p99Ms} ms${s.errors ? `, ${s.errors} send errors: ${s.firstError}` : ''}`);
      fanRows.push({
        group: 'streaming',
        scenario: `fan-out ${s.watchers} watchers @ ${settings.fanoutRate}/s`,
        kind: t.kind,
        concurrency: s.watchers,
        opsPerSec: s.opsPerSec,
        p50Ms: s.p50Ms,
        p95Ms: s.p95Ms,
        p99Ms: s.p99Ms,
        errors: s.errors + (s.expectedDeliveries - s.deliveries),
        cpuPercent: proc.cpuPercent,
        rssMiB: proc.rssMiB,
        hostCpuPercent: proc.hostCpuPercent,
        extra: { sends: s.sends, deliveries: s.deliveries, expectedDeliveries: s.expectedDeliveries },
      });
    }
    const [own, bare] = fanRows as [Row, Row];
    own.ceiling = 'bare grpc-js broadcast';
    own.p99Ratio = own.p99Ms !== null && bare.p99Ms ? r2(own.p99Ms / bare.p99Ms) : null;
    own.target = '≤2× p99';
    own.met = own.p99Ratio !== null && own.p99Ratio <= 2 && own.errors === 0;
    rows.push(...fanRows);
  }
  return rows;
}
