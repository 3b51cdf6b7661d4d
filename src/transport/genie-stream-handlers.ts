import type { ServerDuplexStream } from '@grpc/grpc-js';
import { z } from 'zod';
import type { GenieLive, LiveUpdate, UtteranceChunk } from '../genie/live.js';
import type { GenieService } from '../genie/service.js';
import type { Actor } from '../genie/dialogue-format.js';
import type { ChatRequest, ChatResponse, SessionEvent, SessionUpdate, StreamUtteranceRequest } from '../gen/parley/genie/v1/genie.js';
import { AppError, invalidArgument } from '../errors.js';
import { parseInput } from '../validate.js';
import { callerOf } from './auth.js';
import { optionalString, uuid } from './convert.js';
import { clientStream, duplex, RejectedMessage, serverStream, type CallContext, type Handler } from './rpc.js';
import { toServiceError } from './status.js';
import { actorToProto, eventName, toSession } from './genie-handlers.js';
import type { Limits } from './limits.js';
import { Incoming, send } from './streams.js';

const revision = z.number().int().nonnegative('must not be negative');
const watchSession = z.object({ sessionId: uuid, afterRevision: revision });
const actor = z.enum(['system', 'assistant', 'user'], { message: 'must be system, assistant or user' });
const utteranceChunk = z.object({
  sessionId: z.union([z.literal(''), uuid]),
  actor: z.union([z.literal(''), actor]),
  // Empty: the utterance is appended as dialogue; else the event it is sent with.
  event: z.string().refine((e) => e === '' || eventName.safeParse(e).success, 'must be empty or 1–100 letters, digits, _ . : or -'),
  utteranceId: z.string().max(100, 'must be at most 100 characters'),
  text: z.string(),
  expectedRevision: revision,
  final: z.boolean(),
});
const chatSendEvent = z.object({
  event: eventName,
  actor: z.union([z.literal(''), actor]).transform((a) => (a === '' ? undefined : (a as Actor))),
  actorInput: z.string(),
  expectedRevision: revision,
});
const chatAppend = z.object({ actor: actor.transform((a) => a as Actor), actorText: z.string(), expectedRevision: revision });

/** Stored event (snake_case JSON in session_events and on the bus) → proto. */
function toEvent(e: { kind: string; payload: Record<string, any> }): SessionEvent {
  const p = e.payload;
  switch (e.kind) {
    case 'session_created':
      return {
        sessionCreated: {
          modelType: p.model_type,
          schemaVersion: p.schema_version,
          state: p.state,
          fields: p.fields,
          forkedFromSessionId: p.forked_from_session_id ?? '',
          forkedFromRevision: p.forked_from_revision ?? 0,
        },
      };
    case 'dialogue_appended':
      return {
        dialogueAppended: {
          index: p.seq,
          element: { actor: actorToProto(p.actor), actorText: p.actor_text, eventName: p.event ?? '', timestamp: new Date(p.timestamp) },
        },
      };
    case 'state_changed':
      return { stateChanged: { fromState: p.from_state, toState: p.to_state, event: p.event, actor: p.actor, actorInput: p.actor_input } };
    case 'fields_updated':
      return { fieldsUpdated: { updateMask: p.update_mask ?? [], fields: p.fields, actor: p.actor ?? '', actorInput: p.actor_input ?? '' } };
    case 'secondary_put':
      return { secondaryPut: { key: p.key, sizeBytes: p.size_bytes } };
    case 'session_deleted':
      return { sessionDeleted: {} };
    default:
      throw new Error(`unknown session event kind ${e.kind}`);
  }
}

export function toUpdate(sessionId: string, u: LiveUpdate): SessionUpdate {
  if ('commit' in u) return { sessionId, revision: u.revision, commit: { events: u.commit.map(toEvent) } };
  return 'delta' in u.ephemeral
    ? { sessionId, revision: 0, delta: u.ephemeral.delta }
    : { sessionId, revision: 0, aborted: u.ephemeral.aborted };
}

export function genieStreamHandlers(genie: GenieService, live: GenieLive, limits: Limits): Record<string, Handler> {
  return {
    watchSession: serverStream(async (req, call, ctx) => {
      const r = parseInput(watchSession, req);
      const { signal } = ctx;
      return live.watch(callerOf(ctx), r.sessionId, r.afterRevision, (u) => send(call, { update: toUpdate(r.sessionId, u) }, signal), signal);
    }),

    streamUtterance: clientStream(async (call, ctx) => {
      const caller = callerOf(ctx);
      const messages = new Incoming<StreamUtteranceRequest>(call, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
      // The text received and not yet committed counts against the utterance's and the account's budgets.
      const budget = limits.utterance(caller.accountId, ctx.method);
      const chunks = (async function* () {
        for await (const msg of messages) {
          const chunk = parseInput(utteranceChunk, msg) as UtteranceChunk;
          budget.add(Buffer.byteLength(chunk.text, 'utf8'));
          yield chunk;
        }
      })();
      try {
        const { view, utteranceId } = await live.streamUtterance(caller, chunks, ctx.signal);
        return { session: toSession(view), utteranceId };
      } finally {
        messages.close();
        budget.release();
      }
    }),

    chat: duplex(async (call, ctx) => chat(call as ServerDuplexStream<ChatRequest, ChatResponse>, ctx, genie, live, limits)),
  };
}

/**
 * The gateway stream: after `open`, updates of the session flow out while requests flow in; each request is
 * answered by an ack or an error on the same stream, and a failed request leaves the stream open — one that
 * fails the request checks (a bad field, invalid UTF-8) included. The stream itself ends with
 * INVALID_ARGUMENT only when there is no request to answer: a first message that is not a valid open, or
 * bytes that do not decode as a ChatRequest.
 */
async function chat(call: ServerDuplexStream<ChatRequest, ChatResponse>, ctx: CallContext, genie: GenieService, live: GenieLive, limits: Limits): Promise<void> {
  const caller = callerOf(ctx);
  // Not call[Symbol.asyncIterator]: that iterator destroys the duplex when it finishes or the call fails, and the
  // status never goes out; Incoming reads through the call's guarded iterator (readMessages).
  // A gateway that sends no request for the idle time is ended; updates flowing out do not count.
  const requests = new Incoming<ChatRequest>(call, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
  try {
    await chatOn(call, requests, ctx, caller, genie, live, limits);
  } finally {
    requests.close();
  }
}

async function chatOn(
  call: ServerDuplexStream<ChatRequest, ChatResponse>,
  requests: Incoming<ChatRequest>,
  ctx: CallContext,
  caller: ReturnType<typeof callerOf>,
  genie: GenieService,
  live: GenieLive,
  limits: Limits,
): Promise<void> {
  const first = await requests.next();
  if (first.done) return;
  const open = first.value.open;
  if (!open) throw invalidArgument('open', 'the first message of a Chat stream must be open');
  const { sessionId, afterRevision } = parseInput(watchSession, open, 'open.');

  // Watching runs beside the request loop; whichever ends first (session deleted, client done, error) ends both.
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  const watching = live.watch(caller, sessionId, afterRevision, (u) => send(call, { update: toUpdate(sessionId, u) }, signal), signal);
  const handling = (async () => {
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
      const requestId = rejected?.violations.some((v) => v.field === 'request_id') ? '' : next.value.requestId;
      try {
        // Each request is a write like an RPC's, so it takes a token of the account's rate too.
        limits.admit(caller.accountId, ctx.method);
        if (rejected) throw rejected;
        let rev: number;
        if (sendEvent) {
          const r = parseInput(chatSendEvent, sendEvent, 'send_event.');
          rev = (await genie.sendEvent(caller, { sessionId, ...r })).view.session.revision;
        } else if (appendDialogue) {
          const r = parseInput(chatAppend, appendDialogue, 'append_dialogue.');
          rev = (await genie.appendDialogue(caller, { sessionId, ...r })).session.revision;
        } else {
          throw invalidArgument('request', 'must be send_event or append_dialogue after open');
        }
        await send(call, { ack: { requestId, revision: rev } }, signal);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        const se = toServiceError(err);
        await send(call, { error: { requestId, code: se.code, message: se.details } }, signal);
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
