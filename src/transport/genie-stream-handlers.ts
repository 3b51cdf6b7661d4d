import { z } from 'zod';
import type { GenieWatch, LiveUpdate, UtteranceChunk } from '../genie/watch.js';
import { messageAfterLastChunk } from '../genie/watch.js';
import type { GenieUseCases } from '../genie/service.js';
import type { SessionEvent as DomainEvent } from '../genie/events.js';
import type { ChatRequest, ChatResponse, GenieServiceServer, SessionEvent, SessionUpdate, StreamUtteranceRequest } from '../gen/parley/genie/v1/genie.js';
import { AppError, fieldTooLarge, invalidArgument } from '../errors.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { uuid } from './zod-fields.js';
import { clientStream, duplex, RejectedMessage, serverStream, type CallContext, type ServiceHandlers, type Sink } from './rpc.js';
import { rpcStatusOf } from './status.js';
import { actor, actorToProto, eventName, optionalActor } from './genie-handlers.js';
import type { Limits } from './limits.js';
import { Incoming } from './streams.js';

/** Bytes of UTF-8 of one utterance sent through Chat, as SendEvent's actor_input and AppendDialogue's actor_text. */
export const MAX_CHAT_UTTERANCE_BYTES = 1024 * 1024;
/** Characters of a Chat request id (a correlation id of the gateway's choosing). */
export const MAX_CHAT_REQUEST_ID_CHARS = 128;

const afterRevision = z.number().int().nonnegative('must not be negative').optional();
const expectedRevision = z
  .number()
  .int()
  .min(1, 'must be at least 1 (revisions start at 1); leave it unset to write whatever the revision')
  .optional();
const watchSession = z.object({ sessionId: uuid, afterRevision });
const utteranceChunk = z.object({
  sessionId: z.union([z.literal(''), uuid]),
  actor: optionalActor,
  // Empty: the utterance is appended as dialogue; else the event it is sent with.
  eventName: z.string().refine((e) => e === '' || eventName.safeParse(e).success, 'must be empty or 1–100 letters, digits, _ . : or -'),
  utteranceId: z.string().max(100, 'must be at most 100 characters'),
  text: z.string(),
  expectedRevision,
  lastChunk: z.boolean(),
  requestId: z.union([z.literal(''), uuid]),
});
const chatSendEvent = z.object({ eventName, actor: optionalActor, actorInput: z.string(), expectedRevision });
const chatAppend = z.object({ actor, actorText: z.string(), expectedRevision });

/** INVALID_ARGUMENT FIELD_TOO_LARGE when `text` is over `max` bytes of UTF-8. */
function checkSize(field: string, text: string, max: number): void {
  if (text.length <= max / 3 || Buffer.byteLength(text, 'utf8') <= max) return;
  const description = `must be at most ${max} bytes of UTF-8`;
  throw fieldTooLarge(field, description, new Map([['max_bytes', String(max)]]));
}

/** A session event (as logged and published) → proto. */
function toEvent(e: DomainEvent): SessionEvent {
  switch (e.type) {
    case 'session_created':
      return {
        sessionCreated: {
          modelType: e.modelType,
          schemaVersion: e.schemaVersion,
          state: e.state,
          fields: e.fields,
          forkedFromSessionId: e.forkedFromSessionId ?? '',
          forkedFromRevision: e.forkedFromRevision ?? 0,
        },
      };
    case 'dialogue_appended':
      return { dialogueAppended: { index: e.seq, element: { actor: actorToProto(e.actor), actorText: e.actorText, eventName: e.event, timestamp: e.timestamp } } };
    case 'state_changed':
      return { stateChanged: { fromState: e.fromState, toState: e.toState, eventName: e.event, actor: actorToProto(e.actor) } };
    case 'fields_updated':
      return { fieldsUpdated: { updateMask: e.updateMask, fields: e.fields, actor: actorToProto(e.actor), actorInput: e.actorInput } };
    case 'secondary_put':
      return { secondaryPut: { key: e.key, sizeBytes: e.sizeBytes } };
    case 'session_deleted':
      return { sessionDeleted: {} };
  }
}

export function toUpdate(sessionId: string, u: LiveUpdate): SessionUpdate {
  if ('commit' in u) return { sessionId, revision: u.revision, commit: { events: u.commit.map(toEvent) } };
  if ('caughtUp' in u) return { sessionId, revision: u.revision, caughtUp: {} };
  const e = u.ephemeral;
  if (e.type === 'utterance_delta') {
    return { sessionId, revision: 0, delta: { utteranceId: e.utteranceId, actor: actorToProto(e.actor), chunkIndex: e.chunkIndex, text: e.text } };
  }
  return { sessionId, revision: 0, aborted: { utteranceId: e.utteranceId, reason: e.reason } };
}

export function genieStreamHandlers(genie: GenieUseCases, live: GenieWatch, limits: Limits): Pick<ServiceHandlers<GenieServiceServer>, 'watchSession' | 'streamUtterance' | 'chat'> {
  return {
    watchSession: serverStream(async (req, out, ctx) => {
      const r = parseInput(watchSession, req);
      const { signal } = ctx;
      return live.watch(callerOf(ctx), r.sessionId, r.afterRevision ?? 0, (u) => out.send({ update: toUpdate(r.sessionId, u) }), signal);
    }),

    streamUtterance: clientStream(async (requests, ctx) => {
      const caller = callerOf(ctx);
      const messages = new Incoming(requests, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
      // The text received and not yet committed counts against the utterance's and the account's budgets.
      const budget = limits.utterance(caller.accountId, ctx.method);
      const chunks = (async function* () {
        let sawLast = false;
        for await (const msg of messages) {
          // Refused before it is parsed or counted: whatever it holds, its fault is to come at all.
          if (sawLast) throw messageAfterLastChunk();
          const chunk = parseInput(utteranceChunk, msg) as UtteranceChunk;
          budget.add(Buffer.byteLength(chunk.text, 'utf8'));
          sawLast = chunk.lastChunk;
          yield chunk;
        }
      })();
      try {
        const c = await live.streamUtterance(caller, chunks, ctx.signal);
        return { utteranceId: c.utteranceId, revision: c.revision, dialogueIndex: c.dialogueIndex, state: c.state, updateTime: c.updateTime };
      } finally {
        messages.close();
        budget.release();
      }
    }),

    chat: duplex(async (requests, out, ctx) => chat(requests, out, ctx, genie, live, limits)),
  };
}

/**
 * The gateway stream: after `open`, updates of the session flow out while requests flow in; each request is
 * answered by an ack or an error on the same stream, and a failed request leaves the stream open — one that
 * fails the request checks (a bad field, invalid UTF-8) included. The stream itself ends with
 * INVALID_ARGUMENT only when there is no request to answer: a first message that is not a valid open, or
 * bytes that do not decode as a ChatRequest.
 */
async function chat(messages: AsyncIterable<ChatRequest>, out: Sink<ChatResponse>, ctx: CallContext, genie: GenieUseCases, live: GenieWatch, limits: Limits): Promise<void> {
  const caller = callerOf(ctx);
  // `messages` is the runtime's request stream (readMessages, which never destroys the call, so the status goes out).
  // A gateway that sends no request for the idle time is ended; updates flowing out do not count.
  const requests = new Incoming(messages, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
  try {
    await chatOn(out, requests, ctx, caller, genie, live, limits);
  } finally {
    requests.close();
  }
}

async function chatOn(
  out: Sink<ChatResponse>,
  requests: Incoming<ChatRequest>,
  ctx: CallContext,
  caller: ReturnType<typeof callerOf>,
  genie: GenieUseCases,
  live: GenieWatch,
  limits: Limits,
): Promise<void> {
  const first = await requests.next();
  if (first.done) return;
  const open = first.value.open;
  if (!open) throw invalidArgument('open', 'the first message of a Chat stream must be open');
  const { sessionId, afterRevision: after } = parseInput(watchSession, open, 'open.');
  const openId = first.value.requestId;
  if (openId.length > MAX_CHAT_REQUEST_ID_CHARS) throw invalidArgument('request_id', `must be at most ${MAX_CHAT_REQUEST_ID_CHARS} characters`);

  // Watching runs beside the request loop; whichever ends first (session deleted, client done, error) ends both.
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  // The open is answered first, with the revision the session was at, before the replay and any other answer.
  let opened = false;
  let markOpened!: () => void;
  const isOpened = new Promise<void>((resolve) => (markOpened = resolve));
  const watching = live.watch(
    caller,
    sessionId,
    after ?? 0,
    (u) => out.send({ update: toUpdate(sessionId, u) }, signal),
    signal,
    async (revision) => {
      await out.send({ ack: { requestId: openId, revision } }, signal);
      opened = true;
      markOpened();
    },
  );
  const handling = (async () => {
    // Until the open is answered no request is read; an open that failed ends the stream with its status.
    await Promise.race([isOpened, watching.then(ended, ended)]);
    if (!opened) return;
    for (;;) {
      let next: IteratorResult<ChatRequest>;
      // A message that decoded but failed the request checks is one bad request: it gets its error and the
      // stream reads on. Bytes that are no ChatRequest at all name no request to answer: they end the stream.
      let rejected: RejectedMessage | undefined;
      try {
        next = await requests.next();
      } catch (err) {
        if (!(err instanceof RejectedMessage) || err.rejected.request === undefined) throw err;
        rejected = err;
        next = { done: false, value: err.rejected.request as ChatRequest };
      }
      if (next.done || signal.aborted) return;
      const { sendEvent, appendDialogue } = next.value;
      // A request id that is itself invalid is not echoed: the answer goes out with an empty one.
      const badId = rejected?.violations.some((v) => v.field === 'request_id') || next.value.requestId.length > MAX_CHAT_REQUEST_ID_CHARS;
      const requestId = badId ? '' : next.value.requestId;
      try {
        // Each request is a write like an RPC's, so it takes a token of the account's rate too.
        limits.admit(caller.accountId, ctx.method);
        if (rejected) throw rejected;
        if (badId) throw invalidArgument('request_id', `must be at most ${MAX_CHAT_REQUEST_ID_CHARS} characters`);
        let rev: number;
        if (sendEvent) {
          const r = parseInput(chatSendEvent, sendEvent, 'send_event.');
          checkSize('send_event.actor_input', r.actorInput, MAX_CHAT_UTTERANCE_BYTES);
          const req = { sessionId, event: r.eventName, actor: r.actor, actorInput: r.actorInput, expectedRevision: r.expectedRevision ?? 0 };
          rev = (await genie.sendEvent(caller, req)).view.session.revision;
        } else if (appendDialogue) {
          const r = parseInput(chatAppend, appendDialogue, 'append_dialogue.');
          checkSize('append_dialogue.actor_text', r.actorText, MAX_CHAT_UTTERANCE_BYTES);
          const req = { sessionId, actor: r.actor, actorText: r.actorText, expectedRevision: r.expectedRevision ?? 0 };
          rev = (await genie.appendDialogue(caller, req)).session.revision;
        } else {
          throw invalidArgument('request', 'must be send_event or append_dialogue after open');
        }
        await out.send({ ack: { requestId, revision: rev } }, signal);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        // The Status a unary call would carry in grpc-status-details-bin: code, message, ErrorInfo, BadRequest…
        await out.send({ error: { requestId, status: rpcStatusOf(err) } }, signal);
      }
    }
  })();
  // Whichever loses the race is still settled later; its failure must not surface as unhandled.
  watching.catch(() => {});
  handling.catch(() => {});
  try {
    const winner = await Promise.race([watching.then(() => 'watch' as const), handling.then(() => 'requests' as const)]);
    stop.abort();
    // The client finished sending: let the watch wind down. (When the watch ends first, the request loop is
    // parked on the client's next message and ends with the call.)
    if (winner === 'requests') await watching;
  } finally {
    stop.abort();
  }
}

const ended = () => undefined;
