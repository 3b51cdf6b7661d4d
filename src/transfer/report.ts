/** What an import from a reference system did, as both migrations report it. */
export interface ImportReport {
  imported: number;
  present: number;
  refused: number;
  byKind: ReadonlyMap<string, number>;
  /** The first refusals in full (key and reason); the rest are only counted. */
  refusals: ReadonlyArray<{ key: string; kind: string; reason: string }>;
}

/** The report as the command prints it: each refusal, then the counts. */
export function describeReport(r: ImportReport): string {
  const lines = r.refusals.map((x) => `refused ${x.key}: ${x.kind}: ${x.reason}`);
  if (r.refused > r.refusals.length) lines.push(`… and ${r.refused - r.refusals.length} more refused`);
  const kinds = [...r.byKind].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, n]) => `${k} ${n}`);
  lines.push(`imported: ${r.imported}`, `already present: ${r.present}`, `refused: ${r.refused}${kinds.length ? ` (${kinds.join(', ')})` : ''}`);
  return lines.join('\n');
}
