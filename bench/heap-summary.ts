/**
 * What the heap holds per watcher: diffs two V8 heap snapshots of the parley child (taken by
 * `PARLEY_BENCH_HEAPSNAPSHOT=1 npm run bench` before and after opening the idle watchers) by constructor,
 * and divides by the number of watchers.
 *
 * Usage: tsx bench/heap-summary.ts before.heapsnapshot after.heapsnapshot watchers [top=25]
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

function byConstructor(file: string): Map<string, { count: number; bytes: number }> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const width = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const out = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType] as number] as string;
    const name = type === 'object' || type === 'closure' ? `${type === 'closure' ? 'closure ' : ''}${s.strings[s.nodes[i + iName] as number]}` : `(${type})`;
    const e = out.get(name) ?? { count: 0, bytes: 0 };
    e.count++;
    e.bytes += s.nodes[i + iSize] as number;
    out.set(name, e);
  }
  return out;
}

const [beforeFile, afterFile, n, topArg] = process.argv.slice(2);
if (!beforeFile || !afterFile || !n) throw new Error('usage: heap-summary.ts before.heapsnapshot after.heapsnapshot watchers [top]');
const watchers = Number(n);
const before = byConstructor(beforeFile);
const after = byConstructor(afterFile);
const rows = [...after].map(([name, a]) => {
  const b = before.get(name) ?? { count: 0, bytes: 0 };
  return { name, count: (a.count - b.count) / watchers, bytes: (a.bytes - b.bytes) / watchers };
});
const total = rows.reduce((t, r) => t + r.bytes, 0);
rows.sort((x, y) => y.bytes - x.bytes);
const lines = [`heap growth per watcher: ${(total / 1024).toFixed(2)} KiB (JS heap only; RSS also holds http2/nghttp2 and buffers)`, '', '  bytes/w  objects/w  constructor'];
for (const r of rows.slice(0, Number(topArg ?? 25))) lines.push(`  ${r.bytes.toFixed(0).padStart(7)}  ${r.count.toFixed(2).padStart(9)}  ${r.name}`);
process.stdout.write(`${lines.join('\n')}\n`);
