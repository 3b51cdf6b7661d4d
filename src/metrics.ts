/**
 * A tiny in-process counter registry. Counters are keyed by name and labels; labels are fixed by the code
 * that counts (a reason, a method), never taken from a request, so the number of series stays small.
 * Exporting them is left to whoever reads `snapshot()`.
 */
export type Labels = Readonly<Record<string, string>>;

export interface CounterSample {
  name: string;
  labels: Labels;
  value: number;
}

/** `name{a="1",b="2"}`, labels sorted: one key per series whatever the order they were given in. */
function seriesKey(name: string, labels: Labels): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`);
  return `${name}{${parts.join(',')}}`;
}

export class Metrics {
  private readonly counters = new Map<string, CounterSample>();

  inc(name: string, labels: Labels = {}, by = 1): void {
    const key = seriesKey(name, labels);
    const c = this.counters.get(key);
    if (c) c.value += by;
    else this.counters.set(key, { name, labels: Object.freeze({ ...labels }), value: by });
  }

  /** The current value of one series (0 when it was never counted). */
  value(name: string, labels: Labels = {}): number {
    return this.counters.get(seriesKey(name, labels))?.value ?? 0;
  }

  /** Every series with its value now, sorted by name and labels; later counting does not change it. */
  snapshot(): CounterSample[] {
    return [...this.counters.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => ({ ...c }));
  }
}
