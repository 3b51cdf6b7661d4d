/**
 * A least-recently-used cache whose entries have weights (bytes, pattern cost, …) and must be disposed of
 * when dropped. Bounded by an entry count and by a budget per weight.
 */
export class WeightedLru<V> {
  private readonly entries = new Map<string, { value: V; weights: number[] }>();
  private readonly totals: number[];

  constructor(
    private readonly maxEntries: number,
    private readonly budgets: readonly number[],
    private readonly dispose: (value: V) => void,
  ) {
    this.totals = budgets.map(() => 0);
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    // Most recently used last: Map iteration order is insertion order.
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /** Stores `value`, dropping the least recently used entries until every bound holds again. */
  set(key: string, value: V, weights: number[]): void {
    this.delete(key);
    this.entries.set(key, { value, weights });
    weights.forEach((w, i) => (this.totals[i]! += w));
    while (this.entries.size > 1 && (this.entries.size > this.maxEntries || this.totals.some((t, i) => t > this.budgets[i]!))) {
      this.delete(this.entries.keys().next().value as string);
    }
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    e.weights.forEach((w, i) => (this.totals[i]! -= w));
    this.dispose(e.value);
  }

  /** Forgets every entry; `dispose` runs only if `disposeEach`. */
  clear(disposeEach = true): void {
    if (disposeEach) for (const e of this.entries.values()) this.dispose(e.value);
    this.entries.clear();
    this.totals.fill(0);
  }

  get size(): number {
    return this.entries.size;
  }

  total(i: number): number {
    return this.totals[i] ?? 0;
  }
}
