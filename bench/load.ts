/**
 * The load process: run.ts spawns it and sends it one command per line on stdin; it answers with JSON lines
 * on stdout. Each unary command runs one scenario at one concurrency: N closed-loop workers over a few
 * shared grpc-js channels, a warm-up that is discarded, then a measured window whose per-call latencies
 * (hrtime) give ops/s and p50/p95/p99. Streaming commands open watch streams and time their deliveries.
 */
import { createInterface } from 'node:readline';
import type { Client, Metadata, ServiceError } from '@grpc/grpc-js';
import { Actor, GenieServiceClient, type CreateSessionResponse } from '../src/gen/parley/genie/v1/genie.js';
import { ChatRole, PromptServiceClient, type ChatMessage } from '../src/gen/parley/prompt/v1/prompt.js';
import { bearer, channelOptions, insecure, nowMs, sleep, summarize, type BenchContext, type LoadCommand, type LoadReply } from './lib.js';
import { historyPayload, storageOps } from './storage-ceiling.js';

const CALL_DEADLINE_MS = 10_000;
const UNARY_CHANNELS = 4;

const send = (r: LoadReply) => process.stdout.write(`${JSON.stringify(r)}\n`);

/** One unary call through a generated client, by method name, with a deadline. */
function call<T = unknown>(client: Client, method: string, req: unknown, md: Metadata): Promise<T> {
  const f = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
  if (!f) throw new Error(`client has no method ${method}`);
  return new Promise((resolve, reject) =>
    f.call(client, req, md, { deadline: new Date(Date.now() + CALL_DEADLINE_MS) }, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

const roles: Record<string, ChatRole> = { system: ChatRole.CHAT_ROLE_SYSTEM, user: ChatRole.CHAT_ROLE_USER, assistant: ChatRole.CHAT_ROLE_ASSISTANT };

/** Fresh sessions for SendEvent, one per worker, so concurrent writers do not queue on one row lock. */
async function createSessions(target: string, ctx: BenchContext, n: number): Promise<string[]> {
  const genie = new GenieServiceClient(target, insecure, channelOptions(999));
  const md = bearer(ctx.apiKey);
  try {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await call<CreateSessionResponse>(genie, 'createSession', { modelType: ctx.modelType, fields: { worker: i }, requestId: '', endUserId: '', labels: {} }, md);
      ids.push(r.session!.sessionId);
    }
    return ids;
  } finally {
    genie.close();
  }
}

async function unaryOps(cmd: Extract<LoadCommand, { kind: 'unary' }>): Promise<{ op: (w: number) => Promise<unknown>; close: () => Promise<void> }> {
  const { ctx } = cmd;
  const [mode, scenario] = cmd.scenario.includes(':') ? (cmd.scenario.split(':') as [string, string]) : ['rpc', cmd.scenario];
  if (mode === 'storage') return storageOps(scenario, ctx);
  const sessions = scenario === 'SendEvent' ? await createSessions(ctx.parleyTarget, ctx, cmd.concurrency) : [];

  const md = bearer(ctx.apiKey);
  const clients = Array.from({ length: UNARY_CHANNELS }, (_, i) =>
    scenario === 'OpenPrompt' || scenario === 'AppendHistory'
      ? new PromptServiceClient(cmd.target, insecure, channelOptions(i))
      : new GenieServiceClient(cmd.target, insecure, channelOptions(i)),
  );
  const close = async () => clients.forEach((c) => c.close());
  const pick = (w: number) => clients[w % clients.length] as Client;
  switch (scenario) {
    case 'OpenPrompt': {
      const req = { sessionKey: ctx.sessionKey, llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
      return { close, op: (w) => call(pick(w), 'openPrompt', req, md) };
    }
    case 'AppendHistory': {
      const p = historyPayload();
      const messages: ChatMessage[] = p.messages.map((x) => ({ role: roles[x.role] as ChatRole, content: x.content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }));
      return {
        close,
        op: (w) =>
          call(pick(w), 'appendHistory', { promptId: ctx.promptIds[w % ctx.promptIds.length], request: p.request, response: p.response, messages, requestId: '' }, md),
      };
    }
    case 'GetSession': {
      const req = { sessionId: ctx.hotSessionId, revision: undefined };
      return { close, op: (w) => call(pick(w), 'getSession', req, md) };
    }
    case 'SendEvent':
      return {
        close,
        op: (w) =>
          call(pick(w), 'sendEvent', { sessionId: sessions[w % sessions.length], eventName: ctx.event, actor: Actor.ACTOR_USER, actorInput: 'hello', requestId: '' }, md),
      };
    default:
      await close();
      throw new Error(`unknown scenario ${cmd.scenario}`);
  }
}

async function runUnary(cmd: Extract<LoadCommand, { kind: 'unary' }>) {
  const { op, close } = await unaryOps(cmd);
  try {
    const start = nowMs();
    const warmEnd = start + cmd.warmupMs;
    const end = warmEnd + cmd.measureMs;
    const latencies: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    let measuring = false;
    const worker = async (w: number) => {
      for (;;) {
        const t0 = nowMs();
        if (t0 >= end) return;
        if (!measuring && t0 >= warmEnd) {
          measuring = true;
          send({ id: cmd.id, event: 'measuring' });
        }
        try {
          await op(w);
          if (t0 >= warmEnd) latencies.push(nowMs() - t0);
        } catch (err) {
          if (t0 >= warmEnd) errors++;
          firstError ??= (err as Error).message;
          // A failing op must not spin: back off a little.
          await sleep(5);
        }
      }
    };
    await Promise.all(Array.from({ length: cmd.concurrency }, (_, w) => worker(w)));
    return summarize(latencies, cmd.measureMs / 1000, errors, firstError);
  } finally {
    await close();
  }
}

async function handle(cmd: LoadCommand): Promise<unknown> {
  switch (cmd.kind) {
    case 'unary':
      return runUnary(cmd);
    case 'gateway': {
      const { gateway } = await import('./gateway.js');
      return gateway(cmd, (r) => send(r));
    }
    default: {
      const streaming = await import('./streams.js');
      return streaming.handle(cmd, (r) => send(r));
    }
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line) as LoadCommand;
  if (cmd.kind === 'exit') process.exit(0);
  handle(cmd).then(
    (result) => send({ id: cmd.id, event: 'done', result }),
    (err) => send({ id: cmd.id, event: 'error', message: (err as Error).stack ?? String(err) }),
  );
});
rl.on('close', () => process.exit(0));
