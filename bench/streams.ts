/**
 * The load process's streaming scenarios (GenieService.WatchSession), against parley or the bare
 * broadcast of bench/ceiling-server.ts alike:
 *
 * - fanout: W watchers of one session; a driver sends SendEvent at a fixed rate, each with the
 *   expected revision, so the revision it commits is known before it is sent. Delivery latency is the time
 *   from just before the SendEvent call to a watcher receiving that revision (all in this process, hrtime).
 * - idle-open / idle-close: N watchers spread over sessions, each confirmed live by its first message
 *   (a replay of revision 1), left open while run.ts reads the server's RSS.
 */
import { randomUUID } from 'node:crypto';
import type { ClientReadableStream, Metadata, ServiceError } from '@grpc/grpc-js';
import { Actor, GenieServiceClient, type CreateSessionResponse } from '../src/gen/parley/genie/v1/genie.js';
import { bearer, channelOptions, insecure, nowMs, sleep, summarize, type LoadCommand, type LoadReply } from './lib.js';

type Genie = InstanceType<typeof GenieServiceClient>;
type AnyStream = ClientReadableStream<unknown>;

/** The revision a watch message carries, wherever the message keeps it. */
export function revisionOf(msg: unknown, depth = 0): number | undefined {
  if (!msg || typeof msg !== 'object' || depth > 3) return undefined;
  const o = msg as Record<string, unknown>;
  if (typeof o.revision === 'number' && o.revision > 0) return o.revision;
  for (const v of Object.values(o)) {
    const r = revisionOf(v, depth + 1);
    if (r !== undefined) return r;
  }
  return undefined;
}

function unary<T = unknown>(client: Genie, method: string, req: unknown, md: Metadata): Promise<T> {
  const f = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
  if (!f) throw new Error(`client has no method ${method}`);
  return new Promise((resolve, reject) =>
    f.call(client, req, md, { deadline: new Date(Date.now() + 10_000) }, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

function watch(client: Genie, sessionId: string, afterRevision: number, md: Metadata): AnyStream {
  const f = (client as unknown as Record<string, (...a: unknown[]) => AnyStream>).watchSession;
  if (!f) throw new Error('this build has no GenieService.WatchSession');
  const s = f.call(client, { sessionId, afterRevision, afterDeltas: [], snapshot: undefined }, md);
  // Cancellation at the end reports CANCELLED; nothing else is expected, but an error must not crash us.
  s.on('error', () => {});
  return s;
}

/** Channels for `n` streams, `perChannel` to a channel. */
function channels(target: string, n: number, perChannel: number, offset: number): Genie[] {
  return Array.from({ length: Math.max(1, Math.ceil(n / perChannel)) }, (_, i) => new GenieServiceClient(target, insecure, channelOptions(offset + i)));
}

/** Resolves when every stream has had its first message, or rejects after timeoutMs. */
async function allLive(streams: AnyStream[], timeoutMs: number): Promise<void> {
  let live = 0;
  await new Promise<void>((resolve, reject) => {
    if (streams.length === 0) return resolve();
    const t = setTimeout(() => reject(new Error(`only ${live} of ${streams.length} watch streams went live within ${timeoutMs} ms`)), timeoutMs);
    for (const s of streams) {
      s.once('data', () => {
        if (++live === streams.length) {
          clearTimeout(t);
          resolve();
        }
      });
      s.once('error', (e: ServiceError) => {
        clearTimeout(t);
        reject(new Error(`watch stream failed: ${e.message}`));
      });
    }
  });
}

async function createSession(parley: Genie, md: Metadata, modelType: string): Promise<{ id: string; revision: number }> {
  const { session } = await unary<CreateSessionResponse>(parley, 'createSession', { modelType, fields: {}, requestId: '', endUserId: '', labels: {} }, md);
  return { id: session!.sessionId, revision: Number(session!.revision) };
}

async function fanout(cmd: Extract<LoadCommand, { kind: 'fanout' }>, send: (r: LoadReply) => void) {
  const { ctx } = cmd;
  const md = bearer(ctx.apiKey);
  const parley = new GenieServiceClient(ctx.parleyTarget, insecure, channelOptions(5000));
  const driver = cmd.bare ? new GenieServiceClient(cmd.target, insecure, channelOptions(5001)) : parley;
  const clients = channels(cmd.target, cmd.watchers, 100, 6000);
  const streams: AnyStream[] = [];
  try {
    const session = cmd.bare ? { id: randomUUID(), revision: 1 } : await createSession(parley, md, ctx.modelType);
    const sent = new Map<number, number>();
    let measuredFrom = Infinity;
    let measuredTo = Infinity;
    const latencies: number[] = [];
    let deliveries = 0;
    let revision = session.revision;
    for (let i = 0; i < cmd.watchers; i++) {
      const s = watch(clients[Math.floor(i / 100)] as Genie, session.id, 0, md);
      let seen = 0;
      s.on('data', (msg: unknown) => {
        const at = nowMs();
        const r = revisionOf(msg);
        // Each revision counts once per watcher, at its first message (a commit may span several).
        if (r === undefined || r <= seen) return;
        seen = r;
        const t0 = sent.get(r);
        if (t0 !== undefined && t0 >= measuredFrom && t0 < measuredTo) {
          latencies.push(at - t0);
          deliveries++;
        }
      });
      streams.push(s);
    }
    await allLive(streams, 60_000);

    const interval = 1000 / cmd.ratePerSec;
    const start = nowMs();
    measuredFrom = start + cmd.warmupMs;
    const end = measuredFrom + cmd.measureMs;
    let measuring = false;
    let sends = 0;
    let errors = 0;
    let firstError: string | undefined;
    for (let k = 0; ; k++) {
      const due = start + k * interval;
      if (due >= end) break;
      const wait = due - nowMs();
      if (wait > 0) await sleep(wait);
      const t0 = nowMs();
      if (!measuring && t0 >= measuredFrom) {
        measuring = true;
        send({ id: cmd.id, event: 'measuring' });
      }
      const next = revision + 1;
      sent.set(next, t0);
      try {
        await unary(driver, 'sendEvent', { sessionId: session.id, eventName: ctx.event, actor: Actor.ACTOR_USER, actorInput: `event ${k}`, expectedRevision: revision, requestId: '' }, md);
        revision = next;
        if (t0 >= measuredFrom) sends++;
      } catch (err) {
        sent.delete(next);
        errors++;
        firstError ??= (err as Error).message;
      }
    }
    measuredTo = end;
    // Let the last deliveries arrive.
    const expected = sends * cmd.watchers;
    const until = nowMs() + 5_000;
    while (deliveries < expected && nowMs() < until) await sleep(50);
    const s = summarize(latencies, cmd.measureMs / 1000, errors, firstError);
    return { ...s, sends, expectedDeliveries: expected, deliveries, watchers: cmd.watchers };
  } finally {
    for (const s of streams) s.cancel();
    for (const c of clients) c.close();
    parley.close();
    if (driver !== parley) driver.close();
  }
}

// The idle watchers stay open between idle-open and idle-close.
let idle: { streams: AnyStream[]; clients: Genie[] } | undefined;

async function idleOpen(cmd: Extract<LoadCommand, { kind: 'idle-open' }>) {
  const { ctx } = cmd;
  const md = bearer(ctx.apiKey);
  const sessionCount = Math.max(1, Math.min(cmd.sessions, cmd.watchers));
  const ids: string[] = [];
  if (cmd.bare) for (let i = 0; i < sessionCount; i++) ids.push(randomUUID());
  else {
    const parley = new GenieServiceClient(ctx.parleyTarget, insecure, channelOptions(7000));
    try {
      for (let i = 0; i < sessionCount; i++) ids.push((await createSession(parley, md, ctx.modelType)).id);
    } finally {
      parley.close();
    }
  }
  const clients = channels(cmd.target, cmd.watchers, cmd.perChannel, 8000);
  const streams: AnyStream[] = [];
  idle = { streams, clients };
  const began = nowMs();
  // Open in batches, so the server sees a steady arrival rather than one burst of ten thousand.
  const BATCH = 500;
  for (let i = 0; i < cmd.watchers; i += BATCH) {
    const batch: AnyStream[] = [];
    for (let j = i; j < Math.min(cmd.watchers, i + BATCH); j++) {
      batch.push(watch(clients[Math.floor(j / cmd.perChannel)] as Genie, ids[j % ids.length] as string, 0, md));
    }
    streams.push(...batch);
    await allLive(batch, 60_000);
  }
  return { watchers: streams.length, sessions: ids.length, channels: clients.length, openSeconds: Math.round(nowMs() - began) / 1000 };
}

async function idleClose() {
  if (!idle) return { closed: 0 };
  const { streams, clients } = idle;
  idle = undefined;
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
  await sleep(500);
  return { closed: streams.length };
}

export async function handle(cmd: LoadCommand, send: (r: LoadReply) => void): Promise<unknown> {
  switch (cmd.kind) {
    case 'fanout':
      return fanout(cmd, send);
    case 'idle-open':
      return idleOpen(cmd);
    case 'idle-close':
      return idleClose();
    default:
      throw new Error(`unknown command ${cmd.kind}`);
  }
}
