/**
 * Rows of the "does it cost the same when there is more" measurements (dialogue length, total data): one
 * latency sample set per measure and size, its percentiles, and its ratio to the same measure at the
 * smallest size.
 */
import { percentile } from './lib.js';

export interface ScalingRow {
  measure: string;
  /** Dialogue length (elements) or sessions in the database. */
  size: number;
  /** What the size was during the run, when it drifts (turns add elements). */
  sizeNote?: string;
  samples: number;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  /** p50 and p99 as a multiple of the same measure's at the smallest size. */
  p50Ratio?: number | null;
  p99Ratio?: number | null;
  target?: string;
  met?: boolean | null;
}

const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : null);
const r3 = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);

export function scalingRow(measure: string, size: number, latenciesMs: number[], sizeNote?: string): ScalingRow {
  const sorted = Float64Array.from(latenciesMs).sort();
  return {
    measure,
    size,
    ...(sizeNote ? { sizeNote } : {}),
    samples: sorted.length,
    p50Ms: r3(percentile(sorted, 0.5)),
    p95Ms: r3(percentile(sorted, 0.95)),
    p99Ms: r3(percentile(sorted, 0.99)),
  };
}

/**
 * Sets each row's ratios to the same measure's row at the smallest size, and the target (p50 at most
 * `maxRatio` times the smallest size's) on the rows of `targeted` measures at the sizes `targetAt` picks.
 */
export function compareToSmallest(rows: ScalingRow[], targeted: string[], maxRatio: number, targetAt: (size: number) => boolean): void {
  for (const row of rows) {
    const base = rows.filter((r) => r.measure === row.measure).sort((a, b) => a.size - b.size)[0];
    if (!base || base === row || !base.p50Ms || !base.p99Ms || row.p50Ms === null || row.p99Ms === null) continue;
    row.p50Ratio = r2(row.p50Ms / base.p50Ms);
    row.p99Ratio = r2(row.p99Ms / base.p99Ms);
    if (targeted.includes(row.measure) && targetAt(row.size)) {
      row.target = `p50 ≤${maxRatio}× at ${base.size.toLocaleString('en-US')}`;
      row.met = row.p50Ratio !== null && row.p50Ratio <= maxRatio;
    }
  }
}

const fmt = (n: number | null | undefined, digits = 2) => (n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits));

export function scalingTable(rows: ScalingRow[], sizeName: string): string {
  const head = ['measure', sizeName, 'samples', 'p50 ms', 'p95 ms', 'p99 ms', 'p50 vs smallest', 'p99 vs smallest', 'target', 'met'];
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    out.push(
      `| ${[
        r.measure,
        `${r.size.toLocaleString('en-US')}${r.sizeNote ? ` (${r.sizeNote})` : ''}`,
        String(r.samples),
        fmt(r.p50Ms),
        fmt(r.p95Ms),
        fmt(r.p99Ms),
        r.p50Ratio === undefined ? '' : `${fmt(r.p50Ratio)}×`,
        r.p99Ratio === undefined ? '' : `${fmt(r.p99Ratio)}×`,
        r.target ?? '',
        r.met === undefined ? '' : r.met === null ? 'n/a' : r.met ? 'yes' : 'NO',
      ].join(' | ')} |`,
    );
  }
  return out.join('\n');
}
