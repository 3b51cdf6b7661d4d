/**
 * `npm run bench`: parley on real Postgres and Redis against its ceilings, in one run.
 *
 *  1. A scratch Postgres database; parley as a child process (`node bin/parley.js serve`) on a free
 *     127.0.0.1 port with PARLEY_LOG_LEVEL=warn, unless PARLEY_BENCH_TARGET=host:port names a running one.
 *  2. Seeding through AdminService, PromptService and GenieService.
 *  3. The ceilings: bench/ceiling-server.ts (bare grpc-js, no-op handlers answering captured parley
 *     responses, and a bare broadcast) and bench/storage-ceiling.ts (the RPCs' own Postgres and Redis calls).
 *  4. bench/load.ts, a separate process, runs every scenario at every concurrency; this process samples the
 *     server's CPU and RSS from /proc while it measures. Writes are measured against the append ceiling
 *     (AppendHistory's storage calls: one statement and a PUBLISH).
 *     The gateway rows (bench/run-gateway.ts) start a second parley replica on the same database and Redis
 *     prefix for their time, and stream utterances to watchers on both replicas and on the bare relay.
 *  5. Issue 14's rows, from this process at concurrency 1: a turn's cost by dialogue length
 *     (bench/turn-cost.ts), Postgres bytes per element (bench/pg-bytes.ts) and, with PARLEY_BENCH_BULK, a
 *     turn's cost by the number of sessions in the database (bench/bulk.ts); the last two on the scratch
 *     database only.
 *  6. Tables (markdown) on stdout, JSON in bench/results/<timestamp>.json and bench/results/latest.json.
 *
 * Everything stops by itself: every wait has a timeout, the whole run has a hard deadline, and children are
 * killed on exit, on SIGINT and on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import type { Client, Metadata, ServiceError } from '@grpc/grpc-js';
import { AdminServiceClient, type CreateAccountResponse, type CreateApiKeyResponse, type CreateLlmClientResponse, type CreateUserProfileResponse } from '../src/gen/parley/admin/v1/admin.js';
import { Actor, GenieServiceClient, GenieServiceService, GetSessionResponse, SendEventResponse, type CreateSessionResponse } from '../src/gen/parley/genie/v1/genie.js';
import { OpenPromptResponse, PromptServiceClient } from '../src/gen/parley/prompt/v1/prompt.js';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../src/gen/grpc/health/v1/health.js';
import { createScratchDatabase } from '../test/helpers/scratch-db.js';
import { bearer, insecure, ProcSampler, sleep, type BenchContext, type LoadCommand, type LoadReply, type Row, type Summary } from './lib.js';
import { idleRssTable, measureIdleRss, type IdleRss } from './idle-rss.js';
import { ASSISTANT_EVENT, USER_EVENT } from './dialogue.js';
import { runPgBytes, runScaling, scalingText, type ScalingEnv } from './run-scaling.js';
import { gatewayText, runGateway } from './run-gateway.js';
import type { GatewayRow } from './gateway-tally.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const resultsDir = path.join(root, 'bench', 'results');

// ---------------------------------------------------------------------------------------------------------
// Settings (environment)

const envInt = (name: string, dflt: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number`);
  return n;
};
/** PARLEY_BENCH_GATEWAY_QUICK=1: fewer chats and shorter utterances, for a look while developing. */
const gatewayQuick = process.env.PARLEY_BENCH_GATEWAY_QUICK === '1';
const settings = {
  target: process.env.PARLEY_BENCH_TARGET || undefined,
  adminToken: process.env.PARLEY_BENCH_ADMIN_TOKEN || undefined,
  databaseUrl: process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test',
  redisUrl: process.env.REDIS_URL || 'redis://127.0.0.1:6379',
  concurrencies: (process.env.PARLEY_BENCH_CONCURRENCY || '1,16,64').split(',').map(Number),
  warmupMs: envInt('PARLEY_BENCH_WARMUP_MS', 1500),
  measureMs: envInt('PARLEY_BENCH_MEASURE_MS', 4000),
  fanoutWatchers: envInt('PARLEY_BENCH_FANOUT_WATCHERS', 1000),
  fanoutRate: envInt('PARLEY_BENCH_FANOUT_RATE', 10),
  idleWatchers: envInt('PARLEY_BENCH_IDLE_WATCHERS', 10_000),
  idleSessions: envInt('PARLEY_BENCH_IDLE_SESSIONS', 100),
  /** Only these scenarios (comma-separated names), for quick looks. */
  only: process.env.PARLEY_BENCH_ONLY ? new Set(process.env.PARLEY_BENCH_ONLY.split(',')) : undefined,
  /** Write a CPU profile of the parley child (node --cpu-prof) into bench/results/profiles/. */
  profile: process.env.PARLEY_BENCH_PROFILE === '1',
  /** Heap snapshots of the parley child before and after opening the idle watchers (bench/heap-summary.ts diffs them). */
  heapSnapshot: process.env.PARLEY_BENCH_HEAPSNAPSHOT === '1',
  /** How long the idle-RSS servers stay quiet before their last reading. */
  idleSettleMs: envInt('PARLEY_BENCH_IDLE_SETTLE_MS', 30_000),
  /** Dialogue lengths of the turn-cost rows (bench/turn-cost.ts), and the turns timed at each. */
  turnLengths: (process.env.PARLEY_BENCH_TURN_LENGTHS || '10,100,1000,10000').split(',').map(Number),
  turns: envInt('PARLEY_BENCH_TURNS', 100),
  /** Sessions seeded at once for the turn-cost rows. */
  seedParallel: envInt('PARLEY_BENCH_SEED_PARALLEL', 8),
  /** Elements appended for the Postgres bytes per element (bench/pg-bytes.ts). */
  bytesElements: envInt('PARLEY_BENCH_BYTES_ELEMENTS', 2000),
  /** Sessions in the database for the total-data rows (bench/bulk.ts); off unless set, e.g. 10000,1000000. */
  bulk: process.env.PARLEY_BENCH_BULK ? process.env.PARLEY_BENCH_BULK.split(',').map(Number).sort((a, b) => a - b) : undefined,
  bulkSamples: envInt('PARLEY_BENCH_BULK_SAMPLES', 100),
  bulkBatch: envInt('PARLEY_BENCH_BULK_BATCH', 20_000),
  /** The gateway rows (bench/run-gateway.ts): chats at once per row, chunks per utterance, chunks per second. */
  gatewayChats: (process.env.PARLEY_BENCH_GATEWAY_CHATS || (gatewayQuick ? '2,10' : '10,50,200')).split(',').map(Number),
  gatewayChunks: envInt('PARLEY_BENCH_GATEWAY_CHUNKS', gatewayQuick ? 100 : 300),
  gatewayRate: envInt('PARLEY_BENCH_GATEWAY_RATE', 50),
  gatewaySpreadMs: process.env.PARLEY_BENCH_GATEWAY_SPREAD_MS ? envInt('PARLEY_BENCH_GATEWAY_SPREAD_MS', 0) : undefined,
  /** The whole run is cut here, whatever happens (an hour with PARLEY_BENCH_BULK). */
  deadlineMs: envInt('PARLEY_BENCH_DEADLINE_MS', process.env.PARLEY_BENCH_BULK ? 3_600_000 : 900_000),
};
const wants = (name: string) => !settings.only || settings.only.has(name);
if (settings.target && !settings.adminToken) {
  process.stderr.write('bench: PARLEY_BENCH_TARGET needs PARLEY_BENCH_ADMIN_TOKEN (the target\'s PARLEY_ADMIN_TOKEN) to seed it\n');
  process.exit(2);
}
if (settings.target && !/^(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(settings.target)) {
  process.stderr.write('bench: PARLEY_BENCH_TARGET must be on 127.0.0.1 (host:port)\n');
  process.exit(2);
}

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

// ---------------------------------------------------------------------------------------------------------
// Children and cleanup

const children = new Set<ChildProcess>();
const cleanups: Array<() => Promise<void>> = [];
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    // Give children a moment to stop gracefully (parley writes its CPU profile on exit), then kill.
    const until = Date.now() + 5_000;
    while ([...children].some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < until) await sleep(50);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const fn of cleanups.splice(0).reverse()) await fn().catch((e) => log(`cleanup: ${(e as Error).message}`));
  })());
}

const die = (code: number, why: string) => {
  log(why);
  void cleanup().finally(() => process.exit(code));
};
process.on('SIGINT', () => die(130, 'interrupted'));
process.on('SIGTERM', () => die(143, 'terminated'));
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
const hardStop = setTimeout(() => die(1, `deadline of ${settings.deadlineMs / 1000}s passed; stopping`), settings.deadlineMs);
hardStop.unref();

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, name: string): ChildProcess {
  const child = spawn(cmd, args, { cwd: root, env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (!cleaning && code !== 0) log(`${name} exited (${signal ?? code})`);
  });
  child.stderr?.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line.trim()) process.stderr.write(`[${name}] ${line}\n`);
  });
  return child;
}

const tsxArgs = (file: string) => ['--import', 'tsx', path.join(root, file)];

/** PARLEY_BENCH_PORTS=<first>-<last>: the servers' ports come from that range (sessions sharing a host each get one). */
const portRange = (() => {
  const v = process.env.PARLEY_BENCH_PORTS;
  if (!v) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(v);
  if (!m || Number(m[1]) < 1024 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) throw new Error('PARLEY_BENCH_PORTS must be <first>-<last>, e.g. 53300-53399');
  return { next: Number(m[1]), last: Number(m[2]) };
})();

function tryListen(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => {
      const bound = (s.address() as { port: number }).port;
      s.close(() => resolve(bound));
    });
  });
}

async function freePort(): Promise<number> {
  if (!portRange) return tryListen(0);
  // Each port of the range is handed out once per run: a port just checked may not be bound yet by its child.
  while (portRange.next <= portRange.last) {
    const port = portRange.next++;
    try {
      return await tryListen(port);
    } catch {
      // taken; the next one
    }
  }
  throw new Error('PARLEY_BENCH_PORTS: no free port left in the range');
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}

function call<T = unknown>(client: Client, method: string, req: unknown, md: Metadata): Promise<T> {
  const f = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
  if (!f) throw new Error(`client has no method ${method}`);
  return new Promise((resolve, reject) =>
    f.call(client, req, md, { deadline: new Date(Date.now() + 10_000) }, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

async function waitServing(address: string, timeoutMs: number): Promise<void> {
  const health = new HealthClient(address, insecure);
  const until = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        const r = await call<{ status: number }>(health, 'check', { service: '' }, bearer('none'));
        if (r.status === HealthCheckResponse_ServingStatus.SERVING) return;
      } catch {
        // not up yet
      }
      if (Date.now() > until) throw new Error(`parley at ${address} did not become SERVING within ${timeoutMs} ms`);
      await sleep(200);
    }
  } finally {
    health.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// parley, the ceiling server and the load process

const ADMIN_TOKEN = settings.adminToken ?? `bench-admin-${process.pid}-${Math.random().toString(36).slice(2)}`;
const redisPrefix = settings.target ? process.env.PARLEY_REDIS_PREFIX || 'parley:' : `parley_bench_${process.pid}:`;
const promptCacheTtlMs = 60 * 60 * 1000;

async function startParley(): Promise<{ address: string; pid: number | undefined; databaseUrl: string | undefined }> {
  if (settings.target) {
    await waitServing(settings.target, 10_000);
    const pid = process.env.PARLEY_BENCH_PID ? Number(process.env.PARLEY_BENCH_PID) : undefined;
    return { address: settings.target, pid, databaseUrl: process.env.DATABASE_URL || undefined };
  }
  const scratch = await createScratchDatabase(settings.databaseUrl);
  cleanups.push(() => scratch.drop());
  cleanups.push(() => clearRedisPrefix(settings.redisUrl, redisPrefix));
  const { address, child } = await spawnParley(scratch.url, 'parley');
  return { address, pid: child.pid, databaseUrl: scratch.url };
}

/**
 * One parley child on the database and the run's Redis prefix, once it serves. Two of them on the same
 * database are two replicas (the gateway rows).
 */
async function spawnParley(databaseUrl: string, name: string): Promise<{ address: string; child: ChildProcess }> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const nodeArgs: string[] = [];
  if (settings.profile) {
    const dir = path.join(resultsDir, 'profiles');
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir}`);
  }
  if (settings.heapSnapshot) {
    const dir = path.join(resultsDir, 'profiles');
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir}`);
  }
  const child = start(
    process.execPath,
    [...nodeArgs, path.join(root, 'bin', 'parley.js'), 'serve'],
    {
      ...process.env,
      DATABASE_URL: databaseUrl,
      REDIS_URL: settings.redisUrl,
      PARLEY_LISTEN: address,
      PARLEY_ADMIN_TOKEN: ADMIN_TOKEN,
      // Per-call info lines would cost the server a JSON line per call; warn keeps only problems.
      PARLEY_LOG_LEVEL: 'warn',
      PARLEY_REDIS_PREFIX: redisPrefix,
      PARLEY_PROMPT_CACHE_TTL: '1h',
      // Every scenario runs as one account (10,000 idle watchers, unary calls at thousands per second):
      // per-account limits that would refuse a bench are raised unless the environment sets them.
      PARLEY_ACCOUNT_RATE: process.env.PARLEY_ACCOUNT_RATE || '1000000',
      PARLEY_ACCOUNT_BURST: process.env.PARLEY_ACCOUNT_BURST || '1000000',
      PARLEY_ACCOUNT_MAX_STREAMS: process.env.PARLEY_ACCOUNT_MAX_STREAMS || '1000000',
    },
    name,
  );
  await withTimeout(
    Promise.race([
      waitServing(address, 60_000),
      new Promise<never>((_, reject) => child.once('exit', (c) => reject(new Error(`${name} exited with ${c} before serving`)))),
    ]),
    60_000,
    `starting ${name}`,
  );
  return { address, child };
}

/** Stops a child and waits for it to go (SIGKILL after 5 s). */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await gone;
  clearTimeout(t);
}

async function clearRedisPrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  await r.connect();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

async function startCeiling(responses: Record<string, string>): Promise<{ address: string; pid: number | undefined }> {
  const file = path.join(os.tmpdir(), `parley-bench-ceiling-${process.pid}.json`);
  writeFileSync(file, JSON.stringify(responses));
  const child = start(process.execPath, tsxArgs('bench/ceiling-server.ts'), { ...process.env, CEILING_RESPONSES: file, CEILING_PORT: String(portRange ? await freePort() : 0) }, 'ceiling');
  const port = await withTimeout(
    new Promise<number>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.on('line', (l) => {
        const m = /^listening (\d+)$/.exec(l);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (c) => reject(new Error(`ceiling server exited with ${c}`)));
    }),
    30_000,
    'starting the ceiling server',
  );
  return { address: `127.0.0.1:${port}`, pid: child.pid };
}

type LoadCommandBody = LoadCommand extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

class Load {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly waiting = new Map<number, { onEvent: (r: LoadReply) => void }>();

  constructor() {
    this.child = start(process.execPath, tsxArgs('bench/load.ts'), process.env, 'load');
    const rl = createInterface({ input: this.child.stdout! });
    rl.on('line', (line) => {
      let r: LoadReply;
      try {
        r = JSON.parse(line) as LoadReply;
      } catch {
        process.stderr.write(`[load] ${line}\n`);
        return;
      }
      this.waiting.get(r.id)?.onEvent(r);
    });
    this.child.once('exit', (code) => {
      for (const w of this.waiting.values()) w.onEvent({ id: 0, event: 'error', message: `load process exited with ${code}` });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends one command; `onMeasuring` runs when the measured window opens. Resolves with the result. */
  run<T>(cmd: LoadCommandBody, timeoutMs: number, onMeasuring?: () => void): Promise<T> {
    const id = this.nextId++;
    return withTimeout(
      new Promise<T>((resolve, reject) => {
        this.waiting.set(id, {
          onEvent: (r) => {
            if (r.event === 'measuring') onMeasuring?.();
            else {
              this.waiting.delete(id);
              if (r.event === 'done') resolve(r.result as T);
              else reject(new Error(r.message));
            }
          },
        });
        this.child.stdin!.write(`${JSON.stringify({ ...cmd, id })}\n`);
      }),
      timeoutMs,
      `load command ${cmd.kind}`,
    ).finally(() => this.waiting.delete(id));
  }

  stop(): void {
    this.child.stdin!.end(`${JSON.stringify({ id: 0, kind: 'exit' })}\n`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Seeding

interface Seeded {
  ctx: BenchContext;
  responses: Record<string, string>;
}

const MODEL_TYPE = 'bench_chat';
const EVENT = USER_EVENT;

async function seed(address: string, databaseUrl: string | undefined, maxConcurrency: number): Promise<Seeded> {
  const admin = new AdminServiceClient(address, insecure);
  const prompt = new PromptServiceClient(address, insecure);
  const genie = new GenieServiceClient(address, insecure);
  try {
    const adminMd = bearer(ADMIN_TOKEN);
    const account = (await call<CreateAccountResponse>(admin, 'createAccount', { accountNumber: '', displayName: 'bench', requestId: '' }, adminMd)).account!;
    const userProfile = (await call<CreateUserProfileResponse>(admin, 'createUserProfile', { accountId: account.id, username: 'bench', email: 'bench@example.com', requestId: '' }, adminMd)).userProfile!;
    const key = await call<CreateApiKeyResponse>(admin, 'createApiKey', { userProfileId: userProfile.id, description: 'bench', requestId: '' }, adminMd);
    const llmClient = (await call<CreateLlmClientResponse>(admin, 'createLlmClient', { accountId: account.id, name: 'bench', description: '', requestId: '' }, adminMd)).llmClient!;
    const md = bearer(key.secret);

    const open = (sessionKey: string) =>
      call<OpenPromptResponse>(prompt, 'openPrompt', { sessionKey, llmClientId: sessionKey ? '' : llmClient.id, llmClientUrl: '', ipAddress: '203.0.113.7', userAgent: 'parley-bench/1.0', url: '', requestId: '', endUserId: '', labels: {} }, md);
    const first = (await open('')).prompt!;
    const promptIds: string[] = [];
    for (let i = 0; i < maxConcurrency; i++) promptIds.push((await open('')).prompt!.id);
    // Opening by key puts the session in the cache; the captured response is what a cached open answers.
    const cachedOpen = await open(first.sessionKey);

    await call(
      genie,
      'registerModelType',
      {
        modelType: {
          name: MODEL_TYPE,
          schemaVersion: 1,
          jsonSchema: { type: 'object', properties: { topic: { type: 'string' } } },
          stateMachine: {
            states: ['open', 'closed'],
            initialState: 'open',
            transitions: [
              { fromState: 'open', eventName: EVENT, toState: 'open', actor: Actor.ACTOR_USER },
              { fromState: 'open', eventName: ASSISTANT_EVENT, toState: 'open', actor: Actor.ACTOR_ASSISTANT },
              { fromState: 'open', eventName: 'close', toState: 'closed', actor: Actor.ACTOR_UNSPECIFIED },
            ],
          },
          upgrades: [],
          cacheTtl: { seconds: 3600, nanos: 0 },
          tokenizerEncoding: '',
        },
        requestId: '',
      },
      md,
    );
    const session = (await call<CreateSessionResponse>(genie, 'createSession', { modelType: MODEL_TYPE, fields: { topic: 'vacation days' }, requestId: '', endUserId: '', labels: {} }, md)).session!;
    let sent: unknown;
    for (let i = 0; i < 4; i++) {
      sent = await call(genie, 'sendEvent', { sessionId: session.sessionId, eventName: EVENT, actor: Actor.ACTOR_USER, actorInput: `turn ${i}: how many vacation days are left?`, requestId: '' }, md);
    }
    // The first read after a write fills the hot copy; the second is served from it.
    await call(genie, 'getSession', { sessionId: session.sessionId, revision: undefined }, md);
    const hot = await call<GetSessionResponse>(genie, 'getSession', { sessionId: session.sessionId, revision: undefined }, md);

    const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
    const responses: Record<string, string> = {
      GetSessionResponse: b64(GetSessionResponse.encode(hot).finish()),
      SendEventResponse: b64(SendEventResponse.encode(sent as SendEventResponse).finish()),
      OpenPromptResponse: b64(OpenPromptResponse.encode(cachedOpen).finish()),
    };
    const ctx: BenchContext = {
      apiKey: key.secret,
      parleyTarget: address,
      databaseUrl,
      redisUrl: settings.redisUrl,
      redisPrefix,
      accountId: account.id,
      llmClientId: llmClient.id,
      modelType: MODEL_TYPE,
      sessionKey: first.sessionKey,
      hotSessionId: session.sessionId,
      promptIds,
      event: EVENT,
      promptCacheTtlMs,
    };
    return { ctx, responses };
  } finally {
    admin.close();
    prompt.close();
    genie.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Rows, targets, output

const r2 = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 100) / 100);

function fmt(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  return n.toFixed(digits);
}

function table(rows: Row[]): string {
  const head = ['scenario', 'conc', 'ops/s', 'p50 ms', 'p95 ms', 'p99 ms', 'server CPU %', 'server RSS MiB', 'host CPU %', 'vs ceiling', 'target', 'met'];
  const lines = rows.map((r) => {
    const name = r.kind === 'parley' ? r.scenario : `  ${r.kind}: ${r.scenario}`;
    let vs = '';
    if (r.ceiling) {
      const parts: string[] = [];
      if (r.throughputRatio !== undefined) parts.push(`${fmt(r.throughputRatio, 2)}× ops`);
      if (r.p99Ratio !== undefined) parts.push(`${fmt(r.p99Ratio, 2)}× p99`);
      if (r.extra?.perWatcherRatio !== undefined) parts.push(`${fmt(r.extra.perWatcherRatio as number, 2)}× mem/watcher`);
      vs = `${parts.join(', ')} (${r.ceiling})`;
    }
    const rss = r.extra?.perWatcherKiB !== undefined ? `${fmt(r.rssMiB)} (${fmt(r.extra.perWatcherKiB as number, 1)} KiB/w)` : fmt(r.rssMiB);
    return [
      name,
      String(r.concurrency),
      fmt(r.opsPerSec, 0),
      fmt(r.p50Ms, 2),
      fmt(r.p95Ms, 2),
      fmt(r.p99Ms, 2),
      r.cpuUsPerOp ? `${fmt(r.cpuPercent, 0)} (${fmt(r.cpuUsPerOp, 0)} µs/op)` : fmt(r.cpuPercent, 0),
      rss,
      fmt(r.hostCpuPercent, 0),
      vs,
      r.target ?? '',
      r.met === undefined ? '' : r.met === null ? 'n/a' : r.met ? 'yes' : 'NO',
    ];
  });
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const l of lines) out.push(`| ${l.join(' | ')} |`);
  return out.join('\n');
}

async function machine(): Promise<Record<string, unknown>> {
  const cpu = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpu)?.[1]?.trim();
  let postgres: string | undefined;
  try {
    const c = new pg.Client({ connectionString: settings.databaseUrl, connectionTimeoutMillis: 2000 });
    await c.connect();
    postgres = (await c.query('show server_version')).rows[0].server_version;
    await c.end();
  } catch {
    postgres = undefined;
  }
  let redis: string | undefined;
  try {
    const r = new Redis(settings.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    r.on('error', () => {});
    await r.connect();
    redis = /redis_version:(\S+)/.exec(await r.info('server'))?.[1];
    r.disconnect();
  } catch {
    redis = undefined;
  }
  return {
    cpus: os.cpus().length,
    cpuModel: model,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    postgres,
    redis,
  };
}

// ---------------------------------------------------------------------------------------------------------
// The run

/** The compiled server's idle RSS on both backends (bench/idle-rss.ts); not with PARLEY_BENCH_TARGET. */
async function idleRss(): Promise<IdleRss[] | undefined> {
  if (settings.target || !wants('idle-rss')) return undefined;
  log('idle RSS of the compiled server, embedded and on Postgres + Redis');
  const prefix = `${redisPrefix}idle:`;
  cleanups.push(() => clearRedisPrefix(settings.redisUrl, prefix));
  return measureIdleRss({
    root,
    databaseUrl: settings.databaseUrl,
    redisUrl: settings.redisUrl,
    settleMs: settings.idleSettleMs,
    spawnServer: (args, env, name) => start(process.execPath, args, env, name),
    freePort,
    waitServing,
    warmUp: async (address, databaseUrl) => void (await seed(address, databaseUrl, 4)),
    scratchDatabase: () => createScratchDatabase(settings.databaseUrl),
    adminToken: ADMIN_TOKEN,
    redisPrefix: prefix,
    log,
  });
}

async function main(): Promise<void> {
  const began = Date.now();
  const idle = await idleRss();
  if (idle && settings.only?.size === 1) {
    process.stdout.write(`\nparley bench — idle RSS only\n\n${idleRssTable(idle, settings.idleSettleMs)}\n`);
    return;
  }
  const maxConc = Math.max(...settings.concurrencies);
  log('starting parley');
  const parley = await startParley();
  log(`parley at ${parley.address} (pid ${parley.pid ?? 'unknown'}); seeding`);
  const { ctx, responses } = await seed(parley.address, parley.databaseUrl, maxConc);
  const scalingEnv: ScalingEnv = {
    address: parley.address,
    // Bytes per element and bulk seeding write into and measure the whole database: the scratch one only.
    scratchDatabaseUrl: settings.target ? undefined : parley.databaseUrl,
    apiKey: ctx.apiKey,
    modelType: MODEL_TYPE,
    redisUrl: settings.redisUrl,
    redisPrefix,
    settings,
    wants,
    log,
  };
  const bytes = await runPgBytes(scalingEnv);
  const streaming = 'watchSession' in GenieServiceService;
  if (streaming) {
    const { captureWatchMessages } = await import('./run-streams.js');
    const captured = await captureWatchMessages(ctx);
    if (captured) responses.WatchSessionResponses = JSON.stringify(captured);
    else log('no watch message arrived for a SendEvent while seeding; the bare broadcast sends bare revisions');
  }
  const ceiling = await startCeiling(responses);
  log(`ceiling server at ${ceiling.address}`);
  const load = new Load();
  const rows: Row[] = [];
  let gateway: GatewayRow[] | undefined;

  const perRun = settings.warmupMs + settings.measureMs + 30_000;
  const unary = async (scenario: string, kind: Row['kind'], target: string, pid: number | undefined, concurrency: number): Promise<Row> => {
    const name = kind === 'parley' ? scenario : `${kind === 'noop-ceiling' ? 'noop' : 'storage'}:${scenario}`;
    let sampler: ProcSampler | undefined;
    const s = await load.run<Summary>(
      { kind: 'unary', scenario: name, target, concurrency, warmupMs: settings.warmupMs, measureMs: settings.measureMs, ctx },
      perRun,
      () => (sampler = new ProcSampler(pid)),
    );
    const proc = sampler?.stop() ?? { cpuPercent: null, rssMiB: null, hostCpuPercent: null };
    if (s.errors) log(`${name} c=${concurrency}: ${s.errors} errors, first: ${s.firstError}`);
    log(`${name} c=${concurrency}: ${s.opsPerSec} ops/s, p99 ${s.p99Ms} ms`);
    const row: Row = {
      group: 'unary',
      scenario,
      kind,
      concurrency,
      opsPerSec: s.opsPerSec,
      p50Ms: s.p50Ms,
      p95Ms: s.p95Ms,
      p99Ms: s.p99Ms,
      errors: s.errors,
      cpuPercent: proc.cpuPercent,
      rssMiB: proc.rssMiB,
      hostCpuPercent: proc.hostCpuPercent,
      cpuUsPerOp: proc.cpuPercent !== null && s.opsPerSec > 0 ? Math.round((proc.cpuPercent / 100) * 1e6 / s.opsPerSec) : null,
    };
    rows.push(row);
    return row;
  };

  try {
    if (streaming) {
      const { runStreaming } = await import('./run-streams.js');
      rows.push(...(await runStreaming({ load, ctx, parley, ceiling, settings, wants, log })));
      if (wants('gateway') && 'streamUtterance' in GenieServiceService) {
        const databaseUrl = parley.databaseUrl;
        gateway = await runGateway({
          load,
          ctx,
          parley,
          ceiling,
          settings,
          log,
          startReplica: async () => {
            if (settings.target || !databaseUrl) throw new Error('a second replica needs the run\'s own parley and scratch database');
            const { address, child } = await spawnParley(databaseUrl, 'parley-b');
            return { address, pid: child.pid, stop: () => stopChild(child) };
          },
        });
      }
    } else {
      log('GenieService.WatchSession is not in this build: the streaming scenarios are skipped');
    }

    const reads = ['GetSession', 'OpenPrompt'];
    const writes = ['AppendHistory', 'SendEvent'];
    // The writes' ceiling: AppendHistory's storage calls (one INSERT … + PUBLISH), measured once per concurrency.
    const versus = (own: Row, ceiling: Row, label: string, target: string | undefined, min: number) => {
      own.ceiling = label;
      own.throughputRatio = r2(own.opsPerSec! / ceiling.opsPerSec!);
      own.p99Ratio = r2(own.p99Ms! / ceiling.p99Ms!);
      if (target) {
        own.target = target;
        own.met = own.throughputRatio !== null && own.throughputRatio >= min;
      }
    };
    for (const c of settings.concurrencies) {
      let append: Row | undefined;
      const appendCeiling = async () => (append ??= parley.databaseUrl ? await unary('AppendHistory', 'storage-ceiling', '', load.pid, c) : undefined);
      for (const scenario of [...reads, ...writes]) {
        if (!wants(scenario)) continue;
        const own = await unary(scenario, 'parley', parley.address, parley.pid, c);
        if (reads.includes(scenario)) {
          const noop = await unary(scenario, 'noop-ceiling', ceiling.address, ceiling.pid, c);
          const storage = parley.databaseUrl ? await unary(scenario, 'storage-ceiling', '', load.pid, c) : undefined;
          own.ceiling = 'no-op grpc-js';
          own.throughputRatio = r2(own.opsPerSec! / noop.opsPerSec!);
          own.p99Ratio = r2(own.p99Ms! / noop.p99Ms!);
          own.target = '≥0.70× ops, ≤2× p99';
          own.met = own.throughputRatio !== null && own.p99Ratio !== null && own.throughputRatio >= 0.7 && own.p99Ratio <= 2;
          if (storage) own.extra = { vsStorage: r2(own.opsPerSec! / storage.opsPerSec!) };
          continue;
        }
        const storage = await appendCeiling();
        if (!storage) continue;
        if (scenario === 'AppendHistory') versus(own, storage, 'storage', c === 64 ? '≥0.60× storage ops' : undefined, 0.6);
        else versus(own, storage, 'append ceiling: AppendHistory storage', c >= 16 ? '≥0.50× append ceiling ops' : undefined, 0.5);
      }
    }
  } finally {
    load.stop();
  }
  const scaling = { ...bytes, ...(await runScaling(scalingEnv)) };


  const result = {
    startedAt: new Date(began).toISOString(),
    durationSeconds: Math.round((Date.now() - began) / 1000),
    machine: await machine(),
    settings: { ...settings, only: settings.only ? [...settings.only] : undefined, target: settings.target ?? 'child process' },
    notes: [
      'parley runs with PARLEY_LOG_LEVEL=warn: at info it writes one JSON log line per call.',
      'CPU % and RSS are of the process serving the scenario: parley, the ceiling server, or (storage ceiling) the load process issuing the storage calls.',
      'Load, server, Postgres and Redis share the same machine.',
    ],
    rows,
    ...(gateway ? { gateway } : {}),
    idleRss: idle,
    ...scaling,
  };
  mkdirSync(resultsDir, { recursive: true });
  const stamp = result.startedAt.replace(/[:.]/g, '-');
  writeFileSync(path.join(resultsDir, `${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(path.join(resultsDir, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  const m = result.machine as Record<string, unknown>;
  process.stdout.write(
    `\nparley bench — ${result.startedAt}, ${result.durationSeconds}s; ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ` +
      `Postgres ${m.postgres ?? '?'}, Redis ${m.redis ?? '?'}\n` +
      (rows.length ? `warm-up ${settings.warmupMs} ms, measured ${settings.measureMs} ms per row\n\n${table(rows)}\n\n` : '\n') +
      (gateway ? gatewayText(gateway, settings) : '') +
      scalingText(scaling) +
      (idle ? `idle RSS of the compiled server (node dist/main.js serve)\n\n${idleRssTable(idle, settings.idleSettleMs)}\n\n` : '') +
      `results: bench/results/${stamp}.json (and latest.json)\n`,
  );
}

main().then(
  () => cleanup().then(() => process.exit(0)),
  // After a signal or the deadline the run fails as its children go; that was already reported.
  (err) => (cleaning ? undefined : die(1, `failed: ${(err as Error).stack ?? err}`)),
);

