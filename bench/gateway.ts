/**
 * The load process's gateway scenario: chat gateways streaming answers to their users, against parley (two
 * replicas) or the bare relay of bench/ceiling-server.ts alike (the same proto, the same code).
 *
 * Each chat is one genie session with two watchers (WatchSession, live before anything is streamed: one on
 * the worker's replica, one on the other) and one worker streaming one utterance of `chunks` chunks at
 * `ratePerSec` through StreamUtterance, the last with `last_chunk` set. Chats start spread evenly over
 * `spreadMs` (by default one utterance's length: at any moment some chats stream and a few commit), as independent gateways
 * would, and each worker keeps its own schedule (chunk k is due at its
 * start + k × interval, so a late chunk does not delay the rest). Everything is timed here, with hrtime:
 * a chunk's send time just before it is written, keyed by chat (one utterance id each) and chunk_index; a
 * delta's latency is its first arrival at a watcher minus that; a commit's, its arrival minus the send time of
 * the chunk with last_chunk. Server CPU is read from /proc at the start and end of the streaming window.
 */
import { randomUUID } from 'node:crypto';
import type { ClientReadableStream, ClientWritableStream, Metadata, ServiceError } from '@grpc/grpc-js';
import { Actor, GenieServiceClient, type CreateSessionResponse, type StreamUtteranceRequest, type StreamUtteranceResponse, type WatchSessionResponse } from '../src/gen/parley/genie/v1/genie.js';
import { bearer, channelOptions, cpuMsOf, insecure, nowMs, sleep, type LoadCommand, type LoadReply } from './lib.js';
import { addFaults, DeltaTally, latency, noFaults, type GatewayRun } from './gateway-tally.js';

type Genie = InstanceType<typeof GenieServiceClient>;
type Command = Extract<LoadCommand, { kind: 'gateway' }>;

/** Streams per connection, workers and watchers alike. */
const PER_CHANNEL = 100;
/** About 4 tokens of an LLM's answer per chunk. */
const CHUNK_TEXT = 'lorem ipsum dolor ';

function channels(target: string, n: number, offset: number): Genie[] {
  return Array.from({ length: Math.max(1, Math.ceil(n / PER_CHANNEL)) }, (_, i) => new GenieServiceClient(target, insecure, channelOptions(offset + i)));
}

function createSession(client: Genie, md: Metadata, modelType: string): Promise<{ id: string; revision: number }> {
  return new Promise((resolve, reject) =>
    client.createSession({ modelType, fields: {}, requestId: '', expireTime: undefined, endUserId: '', labels: {} }, md, { deadline: new Date(Date.now() + 10_000) }, (err: ServiceError | null, res: CreateSessionResponse) =>
      err ? reject(err) : resolve({ id: res.session!.sessionId, revision: Number(res.session!.revision) }),
    ),
  );
}

/** One watch stream of one chat, tallying what it receives. */
class Watch {
  readonly tally: DeltaTally;
  readonly stream: ClientReadableStream<WatchSessionResponse>;
  readonly live: Promise<void>;
  failed: string | undefined;

  constructor(client: Genie, md: Metadata, chat: Chat, latencies: number[], commitLatencies: number[], onDelivered: () => void, onCommit: () => void) {
    this.tally = new DeltaTally(chat.sentAt.length);
    this.stream = client.watchSession({ sessionId: chat.sessionId, afterRevision: chat.revision, afterDeltas: [], snapshot: undefined }, md);
    let resolveLive: () => void = () => {};
    let rejectLive: (e: Error) => void = () => {};
    this.live = new Promise<void>((resolve, reject) => ((resolveLive = resolve), (rejectLive = reject)));
    this.stream.on('error', (e: ServiceError) => {
      // Cancellation at the end reports CANCELLED; only an error before the commit counts.
      if (!this.tally.committed) this.failed ??= e.message;
      rejectLive(new Error(`watch stream failed: ${e.message}`));
    });
    this.stream.on('data', (m: WatchSessionResponse) => {
      const at = nowMs();
      const u = m.update;
      if (!u) return;
      if (u.caughtUp) return resolveLive();
      if (u.delta) {
        if (u.delta.utteranceId !== chat.utteranceId) return this.tally.stray();
        if (this.tally.delta(u.delta.chunkIndex)) {
          const t0 = chat.sentAt[u.delta.chunkIndex] as number;
          if (!Number.isNaN(t0)) latencies.push(at - t0);
          onDelivered();
        }
        return;
      }
      if (u.aborted) return this.tally.stray();
      if (u.commit && Number(u.revision) > chat.revision && this.tally.commit()) {
        const t0 = chat.sentAt[chat.sentAt.length - 1] as number;
        if (!Number.isNaN(t0)) commitLatencies.push(at - t0);
        onCommit();
      }
    });
  }
}

interface Chat {
  sessionId: string;
  /** The session's revision before the utterance: watchers start after it, the commit is the next one. */
  revision: number;
  utteranceId: string;
  /** hrtime (ms) each chunk was written, NaN until it is. */
  sentAt: Float64Array;
}

/** Streams one utterance on its schedule; resolves with the call's error message, if any. */
function work(client: Genie, md: Metadata, chat: Chat, startAt: number, intervalMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (e?: string) => {
      if (!settled) resolve(e);
      settled = true;
    };
    const call: ClientWritableStream<StreamUtteranceRequest> = client.streamUtterance(md, (err: ServiceError | null, _res?: StreamUtteranceResponse) => done(err?.message));
    const last = chat.sentAt.length - 1;
    void (async () => {
      for (let k = 0; k <= last; k++) {
        const wait = startAt + k * intervalMs - nowMs();
        if (wait > 0) await sleep(wait);
        if (settled) return;
        const msg: StreamUtteranceRequest =
          k === 0
            ? { sessionId: chat.sessionId, actor: Actor.ACTOR_ASSISTANT, eventName: '', utteranceId: chat.utteranceId, text: CHUNK_TEXT, lastChunk: k === last, requestId: '' }
            : { sessionId: '', actor: Actor.ACTOR_UNSPECIFIED, eventName: '', utteranceId: '', text: CHUNK_TEXT, lastChunk: k === last, requestId: '' };
        chat.sentAt[k] = nowMs();
        call.write(msg);
      }
      call.end();
    })();
  });
}

/** How long the idle CPU of the servers is read before streaming. */
const IDLE_MS = 1_000;

const cpuDeltas = (before: Array<number | undefined>, after: Array<number | undefined>): Array<number | null> =>
  before.map((a, i) => {
    const b = after[i];
    return a !== undefined && b !== undefined ? b - a : null;
  });

function sumCpu(before: Array<number | undefined>, after: Array<number | undefined>): number | null {
  const d = cpuDeltas(before, after);
  return d.every((c) => c !== null) ? Math.round(d.reduce<number>((a, b) => a + (b as number), 0)) : null;
}

export async function gateway(cmd: Command, send: (r: LoadReply) => void): Promise<GatewayRun> {
  const { ctx, chats: n, chunks } = cmd;
  const md = bearer(ctx.apiKey);
  const intervalMs = 1000 / cmd.ratePerSec;
  const workers = channels(cmd.targets.worker, n, 9000);
  const same = channels(cmd.targets.same, n, 9100);
  const other = channels(cmd.targets.other, n, 9200);
  const watches: Watch[] = [];
  try {
    const chats: Chat[] = [];
    const run = randomUUID().slice(0, 8);
    for (let i = 0; i < n; i++) {
      // The relay keeps nothing: a session there is any id, at revision 1 as a fresh parley session is.
      const s = cmd.bare ? { id: randomUUID(), revision: 1 } : await createSession(workers[0] as Genie, md, ctx.modelType);
      chats.push({ sessionId: s.id, revision: s.revision, utteranceId: `bench-${run}-${i}`, sentAt: new Float64Array(chunks).fill(NaN) });
    }

    const sameLatencies: number[] = [];
    const otherLatencies: number[] = [];
    const commitLatencies: number[] = [];
    let delivered = 0;
    let commits = 0;
    const onDelivered = () => void delivered++;
    const onCommit = () => void commits++;
    const pick = (cs: Genie[], i: number) => cs[Math.floor(i / PER_CHANNEL)] as Genie;
    for (let i = 0; i < n; i++) {
      const chat = chats[i] as Chat;
      watches.push(new Watch(pick(same, i), md, chat, sameLatencies, commitLatencies, onDelivered, onCommit));
      watches.push(new Watch(pick(other, i), md, chat, otherLatencies, commitLatencies, onDelivered, onCommit));
    }
    await Promise.race([Promise.all(watches.map((w) => w.live)), sleep(60_000).then(() => Promise.reject(new Error('watch streams not live within 60 s')))]);

    const pids = cmd.pids;
    // What the servers burn with every watcher open and nothing streamed, for a second: a cost per delta
    // that falls steeply with the number of chats is a cost per second (or per wake-up), not per delta.
    const idleBefore = pids.map((p) => cpuMsOf(p));
    const idleFrom = nowMs();
    await sleep(IDLE_MS);
    const idleCpu = sumCpu(idleBefore, pids.map((p) => cpuMsOf(p)));
    const idleCpuPercent = idleCpu === null ? null : Math.round((idleCpu / (nowMs() - idleFrom)) * 100);
    const cpuBefore = pids.map((p) => cpuMsOf(p));
    const began = nowMs();
    const loadCpuBefore = process.cpuUsage();
    send({ id: cmd.id, event: 'measuring' });
    const results = await Promise.all(chats.map((chat, i) => work(pick(workers, i), md, chat, began + (i / n) * cmd.spreadMs, intervalMs)));
    // Then every watcher's commit, or as many as come within a generous wait.
    const until = nowMs() + 30_000;
    while (commits < watches.length && nowMs() < until && !watches.every((w) => w.failed || w.tally.committed)) await sleep(5);
    const ended = nowMs();
    const loadCpu = process.cpuUsage(loadCpuBefore);
    const cpuAfter = pids.map((p) => cpuMsOf(p));

    const byProcess = cpuDeltas(cpuBefore, cpuAfter);
    const faults = noFaults();
    for (const w of watches) addFaults(faults, w.tally.result());
    const errors = [...results.filter((e) => e !== undefined), ...watches.map((w) => w.failed).filter((e) => e !== undefined)];
    return {
      chats: n,
      chunks,
      ratePerSec: cmd.ratePerSec,
      watchers: watches.length,
      deltasExpected: watches.length * chunks,
      deltasDelivered: delivered,
      delta: { same: latency(sameLatencies), other: latency(otherLatencies), all: latency([...sameLatencies, ...otherLatencies]) },
      commit: latency(commitLatencies),
      faults,
      serverCpuMs: sumCpu(cpuBefore, cpuAfter),
      serverIdleCpuPercent: idleCpuPercent,
      serverCpuMsByProcess: byProcess,
      streamingSeconds: Math.round(ended - began) / 1000,
      loadCpuPercent: Math.round((loadCpu.user + loadCpu.system) / 10 / (ended - began)),
      errors: errors.length,
      ...(errors.length ? { firstError: errors[0] } : {}),
    };
  } finally {
    for (const w of watches) w.stream.cancel();
    for (const c of [...workers, ...same, ...other]) c.close();
  }
}
