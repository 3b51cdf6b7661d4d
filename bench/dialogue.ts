/**
 * Genie sessions with a dialogue of a chosen length, built through the API (SendEvent, user and assistant
 * in turn), and the turn every dialogue-length row times: the user's utterance, then the assistant's.
 */
import { status, type Client, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat, GenieServiceClient, type CreateSessionResponse, type FormatDialogueResponse, type GetSessionResponse } from '../src/gen/parley/genie/v1/genie.js';
import { bearer, channelOptions, insecure, nowMs } from './lib.js';

/** The bench model type's events: `say` is the user's (bench/run.ts registers both). */
export const USER_EVENT = 'say';
export const ASSISTANT_EVENT = 'reply';
/** A chat turn's sizes: a short question, a longer answer. */
export const USER_BYTES = 200;
export const ASSISTANT_BYTES = 1024;
const CALL_DEADLINE_MS = 10_000;

export function unaryCall<T = unknown>(client: Client, method: string, req: unknown, md: Metadata, deadlineMs = CALL_DEADLINE_MS): Promise<T> {
  const f = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
  if (!f) throw new Error(`client has no method ${method}`);
  return new Promise((resolve, reject) =>
    f.call(client, req, md, { deadline: new Date(Date.now() + deadlineMs) }, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res))),
  );
}

const WORDS = 'the a of to and in is it you that for on with as are this be at have from or one had by words but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part'.split(' ');

/** `bytes` of ASCII prose-like text (random words): as compressible as chat text, never all alike. */
export function text(bytes: number): string {
  let s = '';
  while (s.length < bytes) s += `${WORDS[Math.floor(Math.random() * WORDS.length)]} `;
  return s.slice(0, bytes);
}

export class Genie {
  readonly client: GenieServiceClient;
  private readonly md: Metadata;

  constructor(
    address: string,
    apiKey: string,
    readonly modelType: string,
    channel = 900,
  ) {
    this.client = new GenieServiceClient(address, insecure, channelOptions(channel));
    this.md = bearer(apiKey);
  }

  async create(fields: Record<string, unknown>): Promise<string> {
    return (await unaryCall<CreateSessionResponse>(this.client, 'createSession', { modelType: this.modelType, fields, requestId: '', endUserId: '', labels: {} }, this.md)).session!.sessionId;
  }

  /** Element `i` of a dialogue: even ones the user's, odd ones the assistant's. */
  say(sessionId: string, i: number, utterance: string): Promise<unknown> {
    const user = i % 2 === 0;
    const req = { sessionId, eventName: user ? USER_EVENT : ASSISTANT_EVENT, actor: user ? Actor.ACTOR_USER : Actor.ACTOR_ASSISTANT, actorInput: utterance, requestId: '' };
    return unaryCall(this.client, 'sendEvent', req, this.md);
  }

  /** One chat turn (user 200 B, then assistant 1 KB); its latency in ms. */
  async turn(sessionId: string): Promise<number> {
    const u = text(USER_BYTES);
    const a = text(ASSISTANT_BYTES);
    const t0 = nowMs();
    await this.say(sessionId, 0, u);
    await this.say(sessionId, 1, a);
    return nowMs() - t0;
  }

  /** GetSession of the current revision, with the newest `pageSize` elements (0: all that fit); latency in ms. */
  async read(sessionId: string, pageSize: number): Promise<number> {
    const t0 = nowMs();
    await unaryCall<GetSessionResponse>(this.client, 'getSession', { sessionId, revision: undefined, dialoguePageSize: pageSize || undefined }, this.md);
    return nowMs() - t0;
  }

  /** FormatDialogue (CHAT) of the current revision within `tokenBudget` tokens; latency in ms. */
  async formatWithin(sessionId: string, tokenBudget: number): Promise<number> {
    const t0 = nowMs();
    await unaryCall<FormatDialogueResponse>(
      this.client,
      'formatDialogue',
      { sessionId, format: DialogueFormat.DIALOGUE_FORMAT_CHAT, revision: undefined, tokenBudget, tokenizerEncoding: '' },
      this.md,
    );
    return nowMs() - t0;
  }

  close(): void {
    this.client.close();
  }
}

/**
 * Sessions of the given dialogue lengths (small texts), built by `parallel` callers at once. Every session
 * advances at the same pace (the elements are queued by how far into its session each one is), so a long
 * session takes several callers at a time rather than one for the whole run: concurrent SendEvents on one
 * session commit one after the other, in any order, and user and assistant events are both allowed in any
 * state of the bench model type. Logs progress every few seconds.
 */
export async function seedDialogues(g: Genie, lengths: number[], parallel: number, log: (m: string) => void): Promise<string[]> {
  const began = Date.now();
  const ids: string[] = [];
  for (const _ of lengths) ids.push(await g.create({ topic: 'dialogue length' }));
  const queue = lengths.flatMap((length, s) => Array.from({ length }, (_, e) => ({ s, e, at: (e + 1) / length }))).sort((a, b) => a.at - b.at);
  let next = 0;
  let told = Date.now();
  const worker = async () => {
    for (let item = queue[next++]; item; item = queue[next++]) {
      const utterance = `element ${item.e} of ${lengths[item.s]}: ${text(24)}`;
      for (let attempt = 1; ; attempt++) {
        try {
          await g.say(ids[item.s]!, item.e, utterance);
          break;
        } catch (err) {
          // A commit that lost a race for the session (or a call that timed out under load) is tried again.
          if (attempt >= 3 || ![status.ABORTED, status.UNAVAILABLE, status.DEADLINE_EXCEEDED].includes((err as ServiceError).code)) throw err;
        }
      }
      if (Date.now() - told > 5_000) {
        told = Date.now();
        log(`seeding dialogues: ${next.toLocaleString('en-US')}/${queue.length.toLocaleString('en-US')} elements`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  log(`seeded ${lengths.length} sessions, ${queue.length.toLocaleString('en-US')} elements in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  return ids;
}
