/**
 * Summarizes a V8 .cpuprofile (from `PARLEY_BENCH_PROFILE=1 npm run bench`, which runs the parley child
 * with --cpu-prof): the top frames by self time, and time by package (node_modules/<pkg>, src/<dir>, node
 * internals), so the slowest path's cost can be named.
 *
 * Usage: tsx bench/profile-summary.ts [file.cpuprofile] [top=25]   (default: newest in bench/results/profiles)
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

const dir = path.resolve('bench/results/profiles');
const file =
  (process.argv[2] || undefined) ??
  readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs || statSync(b).size - statSync(a).size)
    .find((f) => /\.0\.\d+\.cpuprofile$/.test(f));  // thread 0: the main thread (tsx adds a loader thread)
if (!file) throw new Error('no .cpuprofile given or found');
const top = Number(process.argv[3] ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;

// Self time per node from samples and their time deltas (µs).
const self = new Map<number, number>();
const samples = p.samples ?? [];
const deltas = p.timeDeltas ?? [];
for (let i = 0; i < samples.length; i++) self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i] ?? 0));
// Percentages are of busy time: idle samples (the event loop waiting) are left out.
const idleIds = new Set(p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
for (const id of idleIds) self.delete(id);
const total = [...self.values()].reduce((a, b) => a + b, 0);
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const nodeById = new Map(p.nodes.map((n) => [n.id, n]));

const where = (url: string): string => {
  if (!url) return '(native/VM)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1] as string;
  if (url.startsWith('node:')) return 'node internals';
  const src = /\/src\/([^/]+)/.exec(url);
  if (src) return `src/${src[1]}`;
  return url.replace(/^file:\/\//, '');
};

const byFrame = new Map<string, number>();
const byPackage = new Map<string, number>();
for (const n of p.nodes) {
  const t = self.get(n.id) ?? 0;
  if (!t) continue;
  const f = n.callFrame;
  const name = `${f.functionName || '(anonymous)'} ${f.url ? `${f.url.replace(/^file:\/\/.*?\/(node_modules|src)\//, '$1/')}:${f.lineNumber + 1}` : ''}`.trim();
  byFrame.set(name, (byFrame.get(name) ?? 0) + t);
  const pkg = where(f.url);
  byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + t);
}

// Inclusive time of our own functions (src/…): each sample counts once for every distinct src frame on its stack.
const inclusive = new Map<string, number>();
for (const [id, t] of self) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const f = nodeById.get(cur)?.callFrame;
    if (!f || !/\/src\//.test(f.url) || /\/src\/gen\/|node_modules/.test(f.url)) continue;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/src\//, 'src/')}`;
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + t);
  }
}

const pct = (t: number) => `${((t / total) * 100).toFixed(1).padStart(5)}%`;
const out: string[] = [`${path.basename(file)}: ${(total / 1e6).toFixed(1)} s busy (idle left out; percentages are of busy time)`, '', 'self time by package:'];
for (const [k, v] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 15)) out.push(`  ${pct(v)}  ${k}`);
out.push('', `our functions by inclusive time (top ${top}):`);
for (const [k, v] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(v)}  ${k}`);
out.push('', `top ${top} frames by self time:`);
for (const [k, v] of [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(v)}  ${k}`);
process.stdout.write(`${out.join('\n')}\n`);
