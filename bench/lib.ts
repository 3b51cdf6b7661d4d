import { readFileSync } from 'node:fs';
import os from 'node:os';
import { credentials, Metadata, type ChannelOptions } from '@grpc/grpc-js';

/** Latency summary of one measured window. */
export interface Summary {
  ops: number;
  seconds: number;
  opsPerSec: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  errors: number;
  firstError?: string;
}

export function percentile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

export function summarize(latenciesMs: number[], seconds: number, errors: number, firstError?: string): Summary {
  const sorted = Float64Array.from(latenciesMs).sort();
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    ops: sorted.length,
    seconds: r3(seconds),
    opsPerSec: Math.round((sorted.length / seconds) * 10) / 10,
    p50Ms: r3(percentile(sorted, 0.5)),
    p95Ms: r3(percentile(sorted, 0.95)),
    p99Ms: r3(percentile(sorted, 0.99)),
    errors,
    ...(firstError ? { firstError } : {}),
  };
}

export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const insecure = credentials.createInsecure();

/**
 * Channel options that give each client its own connection: grpc-js shares one subchannel among clients
 * with equal options, so a distinct (ignored) option value per channel spreads calls over several.
 */
export function channelOptions(i: number): ChannelOptions {
  return {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    'parley.bench.channel': i,
  } as ChannelOptions;
}

export function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** CPU time (user + system) of a process in ms, from /proc/<pid>/stat; undefined when unreadable. */
export function cpuMsOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return ((utime + stime) * 1000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

// sysconf(_SC_CLK_TCK) is 100 on every Linux we run on.
const CLOCK_TICKS = 100;

/** Resident set size of a process in KiB (VmRSS of /proc/<pid>/status); undefined when unreadable. */
export function rssKbOf(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Busy and total jiffies of the whole host (all cores), from /proc/stat. */
export function hostJiffies(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/**
 * Samples a process's CPU and RSS over a window: CPU% over the window (100 = one core), mean and peak RSS,
 * and how busy the whole host was (100 × cores = all of it), which shows other work sharing the machine.
 */
export class ProcSampler {
  private readonly startCpu: number | undefined;
  private readonly startWall = nowMs();
  private readonly startHost = hostJiffies();
  private readonly rss: number[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number | undefined, intervalMs = 200) {
    this.startCpu = pid ? cpuMsOf(pid) : undefined;
    this.timer = setInterval(() => this.take(), intervalMs);
    this.take();
  }

  private take(): void {
    const r = this.pid ? rssKbOf(this.pid) : undefined;
    if (r !== undefined) this.rss.push(r);
  }

  stop(): { cpuPercent: number | null; rssMiB: number | null; rssPeakMiB: number | null; hostCpuPercent: number | null } {
    clearInterval(this.timer);
    this.take();
    const endCpu = this.pid ? cpuMsOf(this.pid) : undefined;
    const wall = nowMs() - this.startWall;
    const cpu = this.startCpu !== undefined && endCpu !== undefined && wall > 0 ? ((endCpu - this.startCpu) / wall) * 100 : null;
    const mean = this.rss.length ? this.rss.reduce((a, b) => a + b, 0) / this.rss.length : null;
    const peak = this.rss.length ? Math.max(...this.rss) : null;
    const mib = (kb: number | null) => (kb === null ? null : Math.round((kb / 1024) * 10) / 10);
    const endHost = hostJiffies();
    const cores = os.cpus().length;
    const host =
      this.startHost && endHost && endHost.total > this.startHost.total
        ? Math.round(((endHost.busy - this.startHost.busy) / (endHost.total - this.startHost.total)) * 100 * cores)
        : null;
    return { cpuPercent: cpu === null ? null : Math.round(cpu), rssMiB: mib(mean), rssPeakMiB: mib(peak), hostCpuPercent: host };
  }
}

/** Messages between run.ts and load.ts, one JSON object per line. */
export type LoadCommand =
  | { id: number; kind: 'unary'; scenario: string; target: string; concurrency: number; warmupMs: number; measureMs: number; ctx: BenchContext }
  | { id: number; kind: 'fanout'; target: string; watchers: number; ratePerSec: number; warmupMs: number; measureMs: number; ctx: BenchContext; bare: boolean }
  | { id: number; kind: 'idle-open'; target: string; watchers: number; sessions: number; ctx: BenchContext; bare: boolean; perChannel: number }
  | { id: number; kind: 'idle-close' }
  | {
      id: number;
      kind: 'gateway';
      /** Where workers stream, and where each chat's two watchers watch (the same address for the bare relay). */
      targets: { worker: string; same: string; other: string };
      chats: number;
      chunks: number;
      ratePerSec: number;
      /** The chats' starts are spread evenly over this long (ms). */
      spreadMs: number;
      ctx: BenchContext;
      bare: boolean;
      /** The server processes whose CPU the streaming window is charged to. */
      pids: number[];
    }
  | { id: number; kind: 'exit' };

export type LoadReply =
  | { id: number; event: 'measuring' }
  | { id: number; event: 'done'; result: unknown }
  | { id: number; event: 'error'; message: string };

/** What the seeding step produced; every scenario works from it. */
export interface BenchContext {
  apiKey: string;
  /** host:port of parley (sessions for SendEvent are created there, whatever the target). */
  parleyTarget: string;
  databaseUrl?: string | undefined;
  redisUrl?: string | undefined;
  redisPrefix?: string | undefined;
  accountId: string;
  llmClientId: string;
  modelType: string;
  /** A cached prompt session's key (OpenPrompt cached). */
  sessionKey: string;
  /** A hot genie session (GetSession hot). */
  hotSessionId: string;
  /** Prompt ids for AppendHistory, one per worker. */
  promptIds: string[];
  /** Sessions for SendEvent; each worker takes its own, created fresh per run by the load process. */
  event: string;
  /** The prompt cache TTL (ms) the server runs with, mirrored by the storage ceiling. */
  promptCacheTtlMs: number;
}

/** One line of the results table. */
export interface Row {
  group: 'unary' | 'streaming';
  scenario: string;
  /** What runs: parley, the no-op ceiling or the storage ceiling. */
  kind: 'parley' | 'noop-ceiling' | 'storage-ceiling' | 'bare-broadcast';
  concurrency: number;
  opsPerSec: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  errors: number;
  cpuPercent: number | null;
  rssMiB: number | null;
  /** Server CPU time per operation (µs): robust to other work on the host, unlike ops/s. */
  cpuUsPerOp?: number | null;
  /** How busy the whole host was during the window (100 = one core): the load, Postgres, Redis and anything else. */
  hostCpuPercent: number | null;
  /** Ratios to the row's ceiling (throughput, p99) and the target, when the row has one. */
  ceiling?: string;
  throughputRatio?: number | null;
  p99Ratio?: number | null;
  target?: string;
  met?: boolean | null;
  extra?: Record<string, unknown>;
}

