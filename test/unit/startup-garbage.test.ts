import test from 'ava';
import { spawnSync } from 'node:child_process';

// In a process of its own, started without --expose-gc (as parley is): the test runner's own process has it.
const script = `
import { collectStartupGarbage } from './src/startup-garbage.ts';
let big = new Uint8Array(64 * 1024 * 1024);
const ref = new WeakRef(big);
big = undefined;
// A WeakRef's target lives at least until the current job ends: collect in a later one.
setImmediate(() => {
  collectStartupGarbage();
  console.log(JSON.stringify({ collected: ref.deref() === undefined, gcOnGlobal: typeof globalThis.gc }));
});
`;

test('collectStartupGarbage collects unreachable memory at once, without putting gc on the global object', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout) as unknown, { collected: true, gcOnGlobal: 'undefined' });
});
