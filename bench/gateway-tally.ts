/**
 * The gateway scenario's pure parts (bench/gateway.ts streams, bench/run-gateway.ts reports):
 *
 * - DeltaTally: what one watcher received of one utterance, as it arrives. The contract a watcher is held to:
 *   every delta exactly once, in chunk_index order, then the commit. Anything else is counted, never
 *   thrown, so one run reports every kind of fault at once.
 * - The rows: latency percentiles, the ratios of parley's row to the bare relay's at the same number of chats,
 *   and the issue's targets, met or missed.
 */
import { percentile } from './lib.js';

/** Faults of delivery, summed over watchers; every one must be 0. */
export interface Exactness {
  /** Chunks a watcher never received. */
  lost: number;
  /** Deltas (or commits) a watcher received again. */
  duplicated: number;
  /** Deltas that arrived after a higher chunk_index had. */
  outOfOrder: number;
  /** Deltas that arrived after the commit. */
  afterCommit: number;
  /** Watchers that never received the commit. */
  missingCommit: number;
  /** Deltas of another utterance, or with a chunk_index outside the utterance, and aborts. */
  unexpected: number;
}

export const noFaults = (): Exactness => ({ lost: 0, duplicated: 0, outOfOrder: 0, afterCommit: 0, missingCommit: 0, unexpected: 0 });

export function addFaults(into: Exactness, more: Exactness): Exactness {
  for (const k of Object.keys(into) as Array<keyof Exactness>) into[k] += more[k];
  return into;
}

export const faultCount = (e: Exactness): number => Object.values(e).reduce((a, b) => a + b, 0);

/** One watcher's view of one utterance of `chunks` chunks (chunk_index 0 … chunks − 1). */
export class DeltaTally {
  private readonly seen: Uint8Array;
  private highest = -1;
  private commits = 0;
  private readonly faults = noFaults();

  constructor(private readonly chunks: number) {
    this.seen = new Uint8Array(chunks);
  }

  /** Counts one delta; true when it is the chunk's first delivery (the one whose latency counts). */
  delta(chunkIndex: number): boolean {
    if (!Number.isInteger(chunkIndex) || chunkIndex < 0 || chunkIndex >= this.chunks) {
      this.faults.unexpected++;
      return false;
    }
    if (this.commits > 0) this.faults.afterCommit++;
    if (this.seen[chunkIndex]) {
      this.faults.duplicated++;
      return false;
    }
    this.seen[chunkIndex] = 1;
    if (chunkIndex < this.highest) this.faults.outOfOrder++;
    else this.highest = chunkIndex;
    return true;
  }

  /** Counts one commit; true for the first. */
  commit(): boolean {
    if (this.commits++ > 0) {
      this.faults.duplicated++;
      return false;
    }
    return true;
  }

  /** Something that has no place in the utterance (another utterance's delta, an abort). */
  stray(): void {
    this.faults.unexpected++;
  }

  get committed(): boolean {
    return this.commits > 0;
  }

  /** The faults so far, counting what has not arrived (yet) as lost. */
  result(): Exactness {
    let lost = 0;
    for (const s of this.seen) if (!s) lost++;
    return { ...this.faults, lost, missingCommit: this.commits > 0 ? 0 : 1 };
  }
}

/** Latency percentiles of one sample set (ms); null without samples. */
export interface Latency {
  samples: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

const r3 = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);
const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : null);

export function latency(ms: number[]): Latency {
  const sorted = Float64Array.from(ms).sort();
  return { samples: sorted.length, p50Ms: r3(percentile(sorted, 0.5)), p99Ms: r3(percentile(sorted, 0.99)) };
}

/** What the load process measured for one target at one number of chats. */
export interface GatewayRun {
  chats: number;
  chunks: number;
  ratePerSec: number;
  /** Watch streams: two per chat. */
  watchers: number;
  deltasExpected: number;
  /** First deliveries of deltas to watchers (duplicates not counted). */
  deltasDelivered: number;
  delta: { same: Latency; other: Latency; all: Latency };
  /** From sending the chunk with last_chunk to each watcher receiving the commit. */
  commit: Latency;
  faults: Exactness;
  /** User + system CPU of the server process(es) over the streaming window, summed; null when unreadable. */
  serverCpuMs: number | null;
  /** The server process(es)' CPU with every watcher open and nothing streamed, just before (100 = one core). */
  serverIdleCpuPercent: number | null;
  /** The same, per process, in the order of the pids the command named. */
  serverCpuMsByProcess: Array<number | null>;
  streamingSeconds: number;
  /** CPU of the load process itself over the window (100 = one core): near 100, it is what limits the row. */
  loadCpuPercent: number;
  /** Failed worker calls (StreamUtterance) and watch streams. */
  errors: number;
  firstError?: string;
}

export interface GatewayTarget {
  name: string;
  met: boolean | null;
}

export interface GatewayRow extends GatewayRun {
  kind: 'parley' | 'bare-relay';
  /** What the two watchers of a chat are: on the worker's replica and the other one, or both on the relay. */
  watcherNote: string;
  cpuUsPerDelta: number | null;
  hostCpuPercent: number | null;
  /** Parley's rows: their figures as a multiple of the bare relay's at the same number of chats. */
  vsRelay?: { deltaP99: number | null; sameP99: number | null; otherP99: number | null; cpuPerDelta: number | null };
  targets?: GatewayTarget[];
}

export function cpuUsPerDelta(run: GatewayRun): number | null {
  return run.serverCpuMs !== null && run.deltasDelivered > 0 ? r2((run.serverCpuMs * 1000) / run.deltasDelivered) : null;
}

const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? r2(a / b) : null);

/** The issue's targets for the ratios apply at these numbers of chats and fewer (10 and 50 of 10, 50, 200). */
export const RATIO_TARGETS_UP_TO_CHATS = 50;
export const MAX_DELTA_P99_RATIO = 2;
export const MAX_CPU_PER_DELTA_RATIO = 1.5;
export const MAX_COMMIT_P50_MS = 20;

/**
 * Sets parley's row's ratios to the bare relay's row and its targets: delta p99 ≤ 2× and CPU per delta
 * ≤ 1.5× the relay's (at 50 chats and fewer), commit p50 ≤ 20 ms, and exact delivery (no fault, no error).
 */
export function compareToRelay(own: GatewayRow, relay: GatewayRow): void {
  own.vsRelay = {
    deltaP99: ratio(own.delta.all.p99Ms, relay.delta.all.p99Ms),
    sameP99: ratio(own.delta.same.p99Ms, relay.delta.all.p99Ms),
    otherP99: ratio(own.delta.other.p99Ms, relay.delta.all.p99Ms),
    cpuPerDelta: ratio(own.cpuUsPerDelta, relay.cpuUsPerDelta),
  };
  const targets: GatewayTarget[] = [];
  if (own.chats <= RATIO_TARGETS_UP_TO_CHATS) {
    const d = own.vsRelay.deltaP99;
    const c = own.vsRelay.cpuPerDelta;
    targets.push({ name: `delta p99 ≤${MAX_DELTA_P99_RATIO}×`, met: d === null ? null : d <= MAX_DELTA_P99_RATIO });
    targets.push({ name: `CPU/delta ≤${MAX_CPU_PER_DELTA_RATIO}×`, met: c === null ? null : c <= MAX_CPU_PER_DELTA_RATIO });
  }
  const p50 = own.commit.p50Ms;
  targets.push({ name: `commit p50 ≤${MAX_COMMIT_P50_MS} ms`, met: p50 === null ? null : p50 <= MAX_COMMIT_P50_MS });
  targets.push({ name: 'exact', met: faultCount(own.faults) === 0 && own.errors === 0 });
  own.targets = targets;
}

const fmt = (n: number | null | undefined, digits = 1): string => {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  return n.toFixed(digits);
};

/** The rows as a markdown table, parley's and the relay's at each number of chats together. */
export function gatewayTable(rows: GatewayRow[]): string {
  const head = [
    'target',
    'chats',
    'deltas delivered',
    'delta p50 ms (same / other)',
    'delta p99 ms (same / other)',
    'server CPU µs/delta (idle CPU %)',
    'commit p50 / p99 ms',
    'lost / dup / out of order / other faults',
    'host CPU % (load)',
    'vs bare relay',
    'target',
    'met',
  ];
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const f = r.faults;
    const vs = r.vsRelay ? `${fmt(r.vsRelay.deltaP99, 2)}× delta p99 (${fmt(r.vsRelay.sameP99, 2)}× / ${fmt(r.vsRelay.otherP99, 2)}×), ${fmt(r.vsRelay.cpuPerDelta, 2)}× CPU/delta` : '';
    const met = r.targets?.length
      ? r.targets.every((t) => t.met === true)
        ? 'yes'
        : `NO: ${r.targets
            .filter((t) => t.met !== true)
            .map((t) => (t.met === null ? `${t.name} n/a` : t.name))
            .join(', ')}`
      : '';
    out.push(
      `| ${[
        r.kind === 'parley' ? 'parley' : `  ${r.kind}`,
        String(r.chats),
        `${r.deltasDelivered.toLocaleString('en-US')} / ${r.deltasExpected.toLocaleString('en-US')}`,
        `${fmt(r.delta.all.p50Ms, 2)} (${fmt(r.delta.same.p50Ms, 2)} / ${fmt(r.delta.other.p50Ms, 2)})`,
        `${fmt(r.delta.all.p99Ms, 2)} (${fmt(r.delta.same.p99Ms, 2)} / ${fmt(r.delta.other.p99Ms, 2)})`,
        `${fmt(r.cpuUsPerDelta, 1)} (idle ${fmt(r.serverIdleCpuPercent, 0)}%)`,
        `${fmt(r.commit.p50Ms, 2)} / ${fmt(r.commit.p99Ms, 2)}`,
        `${f.lost} / ${f.duplicated} / ${f.outOfOrder} / ${f.afterCommit + f.missingCommit + f.unexpected + r.errors}`,
        `${fmt(r.hostCpuPercent, 0)} (${fmt(r.loadCpuPercent, 0)})`,
        vs,
        r.targets?.map((t) => t.name).join(', ') ?? '',
        met,
      ].join(' | ')} |`,
    );
  }
  return out.join('\n');
}
