import { writeFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { CLOSE_DEADLINE_MS } from '../../../src/app.js';
import { env } from '../../helpers/backends.js';
import { eventually } from '../../helpers/eventually.js';
import { createTenant, startTestServer } from '../../helpers/harness.js';
import { caseOf, generators, honest } from './generators.js';
import { allRpcs, type Kind } from './rpcs.js';
import { execute, fuzzClient, fuzzEnv, pool, repr, sampleCase, type Failure } from './runner.js';
import { invalidPersisted } from './scan.js';
import { victimLoop } from './victim.js';
import { buildWorld, populate } from './world.js';

/** RSS may end this much above its baseline (the embedded Postgres keeps what the fuzz stored in memory). */
const RSS_MARGIN_MB = Number(process.env.PARLEY_FUZZ_RSS_MARGIN_MB || 200);
const VICTIM_BOUND_MS = 10_000;

export interface Summary {
  backend: string;
  kinds: Kind[];
  seed: number;
  calls: number;
  rpcs: number;
  statuses: Record<string, number>;
  failures: number;
  victimCalls: number;
  victimFailures: number;
  victimSlowestMs: number;
  /** 1 when calls were still live on the server after the run. */
  unreleasedCalls: number;
  invalidPersisted: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  heapBeforeMb: number;
  heapAfterMb: number;
  slowestCallMs: number;
  durationS: number;
  stopMs: number;
}

const rssMb = () => {
  (globalThis as { gc?: () => void }).gc?.();
  return Math.round(process.memoryUsage().rss / 2 ** 20);
};
const heapMb = () => Math.round(process.memoryUsage().heapUsed / 2 ** 20);

/** The methods of the calls the server still counts as live (a diagnostic: the registry keeps them private). */
function liveMethods(calls: unknown): string {
  const live = (calls as { live?: Set<{ call?: { getPath?: () => string } }> }).live;
  return live ? [...live].map((c) => c.call?.getPath?.() ?? 'unary').join(', ') : 'unknown';
}

/**
 * One fuzz run over the RPCs of `kinds`: a world of real data, `calls` generated cases (round robin over
 * the RPCs, so a short run still covers every one), a victim tenant's ordinary calls beside them, then the
 * checks of issue 9. Every assertion is made on `t`.
 */
/** The RPCs of `kinds` that PARLEY_FUZZ_RPCS selects (all of them when it is unset). */
export function selectedRpcs(kinds: Kind[]) {
  return allRpcs().filter((r) => kinds.includes(r.kind) && (!fuzzEnv.rpcs || fuzzEnv.rpcs.some((f) => r.name.includes(f))));
}

/** `test`, or `test.skip` with the reason in its title when PARLEY_FUZZ_RPCS selects none of `kinds`. */
export function fuzzTest(kinds: Kind[]): (title: string, fn: (t: ExecutionContext) => Promise<void>) => void {
  if (selectedRpcs(kinds).length > 0) return test;
  return (title: string, fn: (t: ExecutionContext) => Promise<void>) => test.skip(`${title} [skipped: PARLEY_FUZZ_RPCS selects no RPC of this file]`, fn);
}

export async function fuzzRun(t: ExecutionContext, kinds: Kind[], calls: number): Promise<Summary> {
  const { seed, deadlineMs, concurrency } = fuzzEnv;
  const rpcs = selectedRpcs(kinds);
  const indexes = fuzzEnv.call !== undefined ? [fuzzEnv.call] : Array.from({ length: calls }, (_, i) => i);
  t.timeout(120_000 + indexes.length * 150, 'the fuzz run');
  t.log(`seed ${seed}; replay with PARLEY_FUZZ_SEED=${seed}${fuzzEnv.rpcs ? ` PARLEY_FUZZ_RPCS=${fuzzEnv.rpcs.join(',')}` : ''}`);

  const serverStarted = performance.now();
  const s = await startTestServer();
  t.log(`server started in ${Math.round(performance.now() - serverStarted)} ms`);
  const client = fuzzClient(s.address);
  let stopped = false;
  try {
    const setupStarted = performance.now();
    const victimHoldings = createTenant(s).then((tenant) => populate(s, tenant));
    const world = await buildWorld(s, victimHoldings);
    const victim = await victimHoldings;
    t.log(`world built in ${Math.round(performance.now() - setupStarted)} ms`);
    const specs = generators(world);
    const honestSpecs = generators(world, honest);
    const arbs = new Map(rpcs.map((r) => [r.name, caseOf(specs[r.name]!, honestSpecs[r.name]!)]));
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort();

    const rssBefore = rssMb();
    const heapBefore = heapMb();
    const started = performance.now();
    const victimRun = victimLoop(s, victim, VICTIM_BOUND_MS);
    const statuses: Record<string, number> = {};
    const failures: Failure[] = [];
    let slowest = 0;
    await pool(indexes.length, concurrency, async (k) => {
      const index = indexes[k]!;
      const rpc = rpcs[index % rpcs.length]!;
      const c = sampleCase(arbs.get(rpc.name)!, seed, index);
      const trace = fuzzEnv.call !== undefined ? [`call ${index} ${rpc.name} as ${c.caller}: ${repr(c, 4000)}`] : undefined;
      const outcome = await execute(client, rpc, c, world, deadlineMs, trace);
      if (trace) t.log(trace.join('\n'));
      const name = status[outcome.code] ?? String(outcome.code);
      statuses[name] = (statuses[name] ?? 0) + 1;
      slowest = Math.max(slowest, outcome.ms);
      if (outcome.problems.length > 0) failures.push({ index, rpc: rpc.name, seed, problems: outcome.problems, request: repr(c) });
    });
    const victimReport = await victimRun.stop();
    const durationS = (performance.now() - started) / 1000;

    // Every stream ended or cancelled is released by the server: no live call, no account holding a slot.
    const unreleased = await eventually(() => s.app.server.calls.size === 0 && s.app.limits.accountsHolding === 0, 'the server to release every call', 20_000).then(
      () => undefined,
      (err: Error) => `${err.message}: ${s.app.server.calls.size} live call(s) (${liveMethods(s.app.server.calls)}), ${s.app.limits.accountsHolding} account(s) holding stream slots`,
    );
    if (unreleased) t.log(unreleased);
    const invalid = await invalidPersisted(s.app.db);
    const rssAfter = rssMb();
    const heapAfter = heapMb();
    const stopStarted = performance.now();
    client.close();
    stopped = true;
    const stopError = await s.stop().then(
      () => undefined,
      (err: Error) => err.message,
    );
    const stopMs = performance.now() - stopStarted;

    const summary: Summary = {
      backend: env.databaseUrl ? 'Postgres + Redis' : 'embedded (PGlite + in-process)',
      kinds,
      seed,
      calls: indexes.length,
      rpcs: rpcs.length,
      statuses,
      failures: failures.length,
      victimCalls: victimReport.calls,
      victimFailures: victimReport.failures.length,
      victimSlowestMs: Math.round(victimReport.slowestMs),
      unreleasedCalls: unreleased ? 1 : 0,
      invalidPersisted: invalid.length,
      rssBeforeMb: rssBefore,
      rssAfterMb: rssAfter,
      heapBeforeMb: heapBefore,
      heapAfterMb: heapAfter,
      slowestCallMs: Math.round(slowest),
      durationS: Math.round(durationS * 10) / 10,
      stopMs: Math.round(stopMs),
    };
    t.log(JSON.stringify(summary));
    if (process.env.PARLEY_FUZZ_REPORT) writeFileSync(`${process.env.PARLEY_FUZZ_REPORT}.${kinds.join('+')}.json`, JSON.stringify(summary, null, 2));

    failures.sort((a, b) => a.index - b.index);
    for (const f of failures.slice(0, 25)) {
      t.log(`call ${f.index} ${f.rpc}: ${f.problems.join('; ')}\n  replay: PARLEY_FUZZ_SEED=${f.seed} PARLEY_FUZZ_CALL=${f.index}${fuzzEnv.rpcs ? ` PARLEY_FUZZ_RPCS=${fuzzEnv.rpcs.join(',')}` : ''}\n  case: ${f.request}`);
    }
    for (const f of victimReport.failures.slice(0, 10)) t.log(`the other tenant's call failed: ${f}`);
    const byRpc = new Map<string, number>();
    for (const f of failures) byRpc.set(f.rpc, (byRpc.get(f.rpc) ?? 0) + 1);
    t.deepEqual([...byRpc], [], `no call may end INTERNAL, UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED or UNIMPLEMENTED, nor carry a message over 1024 bytes (seed ${seed})`);
    t.is(unreleased, undefined, 'every call is released by the server after the run');
    t.is(stopError, undefined, 'app.stop() succeeds');
    t.deepEqual(victimReport.failures.slice(0, 10), [], 'the other tenant was served throughout');
    t.true(victimReport.slowestMs < VICTIM_BOUND_MS, `the other tenant's slowest call took ${Math.round(victimReport.slowestMs)} ms`);
    t.true(victimReport.calls > 0, 'the other tenant made calls');
    t.deepEqual(invalid, [], 'nothing invalid is persisted');
    t.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys, 'Object.prototype is intact');
    t.true(rssAfter <= rssBefore + RSS_MARGIN_MB, `RSS ${rssBefore} MB before, ${rssAfter} MB after (margin ${RSS_MARGIN_MB} MB)`);
    t.true(stopMs < s.app.config.shutdownGraceMs + CLOSE_DEADLINE_MS, `app.stop() took ${Math.round(stopMs)} ms`);
    return summary;
  } finally {
    client.close();
    if (!stopped) await s.stop();
  }
}

/** Calls of the run each file makes: PARLEY_FUZZ_RUNS is split, four fifths unary and one fifth streaming. */
export const unaryCalls = () => Math.round(fuzzEnv.runs * 0.8);
export const streamCalls = () => fuzzEnv.runs - unaryCalls();
