/**
 * run.ts's gateway part (row name `gateway`): chat gateways streaming answers, on two parley replicas and on
 * the bare relay of bench/ceiling-server.ts, at each number of chats (bench/gateway.ts streams and times them).
 *
 * Parley runs as two replicas sharing the scratch database and the Redis prefix, as replicas behind a load
 * balancer would: workers stream to replica A, each chat has one watcher on A and one on B. The second
 * replica runs only for this part. The relay is one process, so both watchers of a chat are on it.
 */
import type { BenchContext, LoadCommand } from './lib.js';
import { ProcSampler, sleep } from './lib.js';
import { compareToRelay, cpuUsPerDelta, gatewayTable, type GatewayRow, type GatewayRun } from './gateway-tally.js';

type LoadCommandBody = LoadCommand extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

export interface GatewayEnv {
  load: { run<T>(cmd: LoadCommandBody, timeoutMs: number, onMeasuring?: () => void): Promise<T> };
  ctx: BenchContext;
  /** Replica A: the run's parley. */
  parley: { address: string; pid: number | undefined };
  /** Starts replica B on A's database and Redis prefix. */
  startReplica(): Promise<{ address: string; pid: number | undefined; stop(): Promise<void> }>;
  ceiling: { address: string; pid: number | undefined };
  /** gatewaySpreadMs: over how long the chats' starts are spread; undefined is one utterance's length. */
  settings: { gatewayChats: number[]; gatewayChunks: number; gatewayRate: number; gatewaySpreadMs: number | undefined };
  log(msg: string): void;
}

/**
 * By default the chats' starts are spread over one utterance's length, as independent conversations are:
 * at any moment some chats are mid-answer and a few are committing. PARLEY_BENCH_GATEWAY_SPREAD_MS=20 makes
 * every chat start, and commit, within one chunk interval (a burst of commits at once).
 */
const defaultSpreadMs = (s: { gatewayChunks: number; gatewayRate: number }) => (s.gatewayChunks / s.gatewayRate) * 1000;

/** The warm-up round: 10 chats of 2 s. */
const WARMUP_CHATS = 10;
const WARMUP_CHUNKS = 100;

export async function runGateway(env: GatewayEnv): Promise<GatewayRow[]> {
  const { load, ctx, settings, log } = env;
  const a = env.parley;
  if (a.pid === undefined || env.ceiling.pid === undefined) {
    log('gateway: needs the pids of parley and the relay (not with PARLEY_BENCH_TARGET); skipped');
    return [];
  }
  log('gateway: starting the second parley replica');
  const b = await env.startReplica();
  const rows: GatewayRow[] = [];
  try {
    if (b.pid === undefined) throw new Error('the second replica has no pid');
    const streamMs = (settings.gatewayChunks / settings.gatewayRate) * 1000;
    const targets = [
      { kind: 'parley' as const, bare: false, worker: a.address, same: a.address, other: b.address, pids: [a.pid, b.pid], watcherNote: 'same replica / other replica' },
      {
        kind: 'bare-relay' as const,
        bare: true,
        worker: env.ceiling.address,
        same: env.ceiling.address,
        other: env.ceiling.address,
        pids: [env.ceiling.pid],
        watcherNote: 'both on the relay (first / second watcher)',
      },
    ];
    const stream = (t: (typeof targets)[number], chats: number, chunks: number, onMeasuring?: () => void) =>
      load.run<GatewayRun>(
        {
          kind: 'gateway',
          targets: { worker: t.worker, same: t.same, other: t.other },
          chats,
          chunks,
          ratePerSec: settings.gatewayRate,
          spreadMs: settings.gatewaySpreadMs ?? defaultSpreadMs(settings),
          ctx,
          bare: t.bare,
          pids: t.pids,
        },
        streamMs + 180_000,
        onMeasuring,
      );
    // A warm-up round on each target, discarded: replica B has just started, and code that has not been
    // optimised yet would be charged to the first row.
    for (const t of targets) await stream(t, WARMUP_CHATS, Math.min(WARMUP_CHUNKS, settings.gatewayChunks));
    for (const chats of settings.gatewayChats) {
      const level: GatewayRow[] = [];
      for (const t of targets) {
        let sampler: ProcSampler | undefined;
        const run = await stream(t, chats, settings.gatewayChunks, () => (sampler = new ProcSampler(t.pids[0])));
        const proc = sampler?.stop();
        const row: GatewayRow = { kind: t.kind, watcherNote: t.watcherNote, ...run, cpuUsPerDelta: cpuUsPerDelta(run), hostCpuPercent: proc?.hostCpuPercent ?? null };
        const f = run.faults;
        log(
          `gateway ${t.kind} ${chats} chats: ${run.deltasDelivered}/${run.deltasExpected} deltas, p99 ${run.delta.all.p99Ms} ms ` +
            `(same ${run.delta.same.p99Ms}, other ${run.delta.other.p99Ms}), ${row.cpuUsPerDelta} µs CPU/delta (idle ${run.serverIdleCpuPercent}%), commit p50 ${run.commit.p50Ms} ms, ` +
            `lost ${f.lost} dup ${f.duplicated} out of order ${f.outOfOrder}, load CPU ${run.loadCpuPercent}%${run.errors ? `, ${run.errors} errors: ${run.firstError}` : ''}`,
        );
        level.push(row);
        // Let the servers settle (the last commits' after-work) before the next window is charged to them.
        await sleep(1_000);
      }
      const [own, relay] = level as [GatewayRow, GatewayRow];
      compareToRelay(own, relay);
      rows.push(own, relay);
    }
  } finally {
    await b.stop();
  }
  return rows;
}

/** The table with its heading, for run.ts's output. */
export function gatewayText(rows: GatewayRow[], settings: GatewayEnv['settings']): string {
  if (!rows.length) return '';
  return (
    `gateway: each chat streams one utterance of ${settings.gatewayChunks} chunks at ${settings.gatewayRate}/s (StreamUtterance, last_chunk) to two watchers, ` +
    `the chats' starts spread over ${settings.gatewaySpreadMs ?? defaultSpreadMs(settings)} ms; ` +
    `parley: two replicas, worker and first watcher on A, second watcher on B; bare relay: one grpc-js process\n\n${gatewayTable(rows)}\n\n`
  );
}
