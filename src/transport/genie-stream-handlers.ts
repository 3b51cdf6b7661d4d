import { z } from 'zod';
import type { GenieWatch, LiveUpdate, UtterancePart, UtteranceStart, WatchStart } from '../genie/watch.js';
import { messageAfterLastChunk } from '../genie/watch.js';
import type { GenieUseCases } from '../genie/service.js';
import type { SessionEvent as DomainEvent } from '../genie/events.js';
import type { ChatRequest, ChatResponse, GenieServiceServer, SessionEvent, SessionUpdate, StreamUtteranceRequest, WatchSessionRequest } from '../gen/parley/genie/v1/genie.js';
import { AppError, invalidArgument } from '../errors.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { textOfAtMost, uuid, type RequestSchema } from './zod-fields.js';
import { RejectedMessage, type CallContext, type ServiceHandlers, type Sink } from './rpc.js';
import { rpcStatusOf } from './status.js';
import { ACTOR_VALUES, actor, actorToProto, eventName, optionalActor, snapshotRequest } from './genie-handlers.js';
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
/** Resume positions in the utterances in flight, as a Map (user-supplied ids never key a plain object). */
const MAX_AFTER_DELTAS = 16;
const afterDeltas = z
  .array(
    z.object({
      utteranceId: z.string().min(1, 'is required').max(100, 'must be at most 100 characters'),
      chunkIndex: z.number().int().nonnegative('must not be negative'),
    }),
  )
  .max(MAX_AFTER_DELTAS, `must list at most ${MAX_AFTER_DELTAS} utterances`)
  .transform((list, ctx) => {
    const positions = new Map<string, number>();
    list.forEach((p, i) => {
      if (positions.has(p.utteranceId)) ctx.issues.push({ code: 'custom', input: p.utteranceId, path: [i, 'utteranceId'], message: 'is listed twice' });
      positions.set(p.utteranceId, p.chunkIndex);
    });
    return positions;
  });
const watchShape = { sessionId: uuid, afterRevision, afterDeltas, snapshot: snapshotRequest.optional() };
/** Where a watch (or a Chat's open) starts: a replay after a revision, or a snapshot — not both. */
const watchFrom = (params?: { error: string }) =>
  z.object(watchShape, params).transform(({ sessionId, ...from }, ctx) => {
  if (from.snapshot && from.afterRevision) {
    ctx.issues.push({ code: 'custom', input: from.afterRevision, path: ['afterRevision'], message: 'must be unset or 0 with a snapshot (the snapshot is where the stream starts)' });
  }
  const start: WatchStart = { afterRevision: from.afterRevision ?? 0, afterDeltas: from.afterDeltas, snapshot: from.snapshot };
  return { sessionId, start };
});
const watchSession = watchFrom() satisfies RequestSchema<WatchSessionRequest>;

// StreamUtterance: the first message names the session and the speaker; a later one may repeat them.
const chunk = z.object({
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
const utteranceStart = chunk.transform(({ actor: speaker, ...c }, ctx): UtteranceStart => {
  if (!c.sessionId) ctx.issues.push({ code: 'custom', input: c.sessionId, path: ['sessionId'], message: 'is required in the first message' });
  if (!speaker) ctx.issues.push({ code: 'custom', input: speaker, path: ['actor'], message: `is required in the first message: ${ACTOR_VALUES}` });
  return speaker ? { ...c, actor: speaker, expectedRevision: c.expectedRevision } : z.NEVER;
}) satisfies RequestSchema<StreamUtteranceRequest>;
const REPEATABLE = ['sessionId', 'actor', 'eventName', 'utteranceId', 'requestId', 'expectedRevision'] as const;
/** A message after `first`: what it repeats of the first must be unset or the same. */
const utterancePart = (first: UtteranceStart) =>
  chunk.transform((c, ctx): UtterancePart => {
    for (const k of REPEATABLE) {
      const v = c[k];
      if (v !== undefined && v !== '' && v !== first[k]) {
        ctx.issues.push({ code: 'custom', input: v, path: [k], message: `must be unset or ${JSON.stringify(first[k])} after the first message` });
      }
    }
    return { text: c.text, lastChunk: c.lastChunk };
  }) satisfies RequestSchema<StreamUtteranceRequest>;

/**
 * A later message that carries only text (what workers send after the first): taken as the schema would
 * take it, without running it — this is the per-chunk path.
 */
function textOnly(msg: unknown): UtterancePart | undefined {
  const m = msg as Partial<StreamUtteranceRequest>;
  const bare = m.sessionId === '' && m.actor === 0 && m.eventName === '' && m.utteranceId === '' && m.expectedRevision === undefined && m.requestId === '';
  return bare && typeof m.text === 'string' && typeof m.lastChunk === 'boolean' ? { text: m.text, lastChunk: m.lastChunk } : undefined;
}

// Chat: the open, then writes. An answer echoes the request id, unless the id itself is refused.
const chatRequestId = z.string().max(MAX_CHAT_REQUEST_ID_CHARS, `must be at most ${MAX_CHAT_REQUEST_ID_CHARS} characters`);
const chatText = textOfAtMost(MAX_CHAT_UTTERANCE_BYTES, 'bytes');
const chatOpen = z.object({
  requestId: chatRequestId,
  open: watchFrom({ error: 'the first message of a Chat stream must be open' }),
}) satisfies RequestSchema<ChatRequest>;
const chatWrite = z
  .object({
    requestId: chatRequestId,
    sendEvent: z.object({ eventName, actor: optionalActor, actorInput: chatText, expectedRevision }).optional(),
    appendDialogue: z.object({ actor, actorText: chatText, expectedRevision }).optional(),
  })
  .transform(({ sendEvent: send, appendDialogue: append }, ctx) => {
    if (send) {
      const { eventName: event, expectedRevision: rev, ...rest } = send;
      return { kind: 'sendEvent' as const, req: { ...rest, event, expectedRevision: rev ?? 0 } };
    }
    if (append) return { kind: 'appendDialogue' as const, req: { ...append, expectedRevision: append.expectedRevision ?? 0 } };
    ctx.issues.push({ code: 'custom', input: undefined, path: ['request'], message: 'must be send_event or append_dialogue after open' });
    return z.NEVER;
  }) satisfies RequestSchema<ChatRequest>;
const echoable = z.object({ requestId: chatRequestId });

/** The request id an answer to `message` carries: none when the id itself was refused. */
function echoedId(message: unknown, rejected: RejectedMessage | undefined): string {
  if (rejected?.violations.some((v) => v.field === 'request_id')) return '';
  const r = echoable.safeParse(message);
  return r.success ? r.data.requestId : '';
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
      return {
        dialogueAppended: {
          index: e.seq,
          element: { actor: actorToProto(e.actor), actorText: e.actorText, eventName: e.event, timestamp: e.timestamp, tokenCount: 0 },
          utteranceId: e.utteranceId ?? '',
        },
      };
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
  if ('snapshot' in u) {
    const r = u.snapshot;
    return {
      sessionId,
      revision: u.revision,
      snapshot: { text: r.text, tokenCount: r.tokenCount, elementCount: r.elementCount, omittedElementCount: r.omittedCount, tokenizerEncoding: r.encoding },
    };
  }
  const e = u.ephemeral;
  if (e.type === 'utterance_delta') {
    return { sessionId, revision: 0, delta: { utteranceId: e.utteranceId, actor: actorToProto(e.actor), chunkIndex: e.chunkIndex, text: e.text } };
  }
  return { sessionId, revision: 0, aborted: { utteranceId: e.utteranceId, reason: e.reason } };
}

export function genieStreamHandlers(genie: GenieUseCases, live: GenieWatch, limits: Limits): Pick<ServiceHandlers<GenieServiceServer>, 'watchSession' | 'streamUtterance' | 'chat'> {
  return {
    watchSession: async (req, out, ctx) => {
      const r = parseInput(watchSession, req);
      const { signal } = ctx;
      return live.watch(callerOf(ctx), r.sessionId, r.start, (u) => out.send({ update: toUpdate(r.sessionId, u) }), signal);
    },

    streamUtterance: async (requests, ctx) => {
      const caller = callerOf(ctx);
      const messages = new Incoming(requests, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
      // The text received and not yet committed counts against the utterance's and the account's budgets.
      const budget = limits.utterance(caller.accountId, ctx.method);
      try {
        const opening = await messages.next();
        if (opening.done) throw invalidArgument('session_id', 'the stream ended before its first message');
        const first = parseInput(utteranceStart, opening.value);
        budget.add(Buffer.byteLength(first.text, 'utf8'));
        const part = utterancePart(first);
        const rest = (async function* () {
          let sawLast = first.lastChunk;
          for await (const msg of messages) {
            // Refused before it is parsed or counted: whatever it holds, its fault is to come at all.
            if (sawLast) throw messageAfterLastChunk();
            const p = textOnly(msg) ?? parseInput(part, msg);
            budget.add(Buffer.byteLength(p.text, 'utf8'));
            sawLast = p.lastChunk;
            yield p;
          }
        })();
        const c = await live.streamUtterance(caller, first, rest, ctx.signal);
        return { utteranceId: c.utteranceId, revision: c.revision, dialogueIndex: c.dialogueIndex, state: c.state, updateTime: c.updateTime };
      } finally {
        messages.close();
        budget.release();
      }
    },

    chat: async (requests, out, ctx) => chat(requests, out, ctx, genie, live, limits),
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
  const {
    requestId: openId,
    open: { sessionId, start },
  } = parseInput(chatOpen, first.value);

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
    start,
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
      // A message that decoded but failed the request checks is one bad request: it gets its error and the
      // stream reads on. Bytes that are no ChatRequest at all name no request to answer: they end the stream.
      const next = await nextRequest(requests);
      if (!next || signal.aborted) return;
      const requestId = echoedId(next.message, next.rejected);
      try {
        // Each request is a write like an RPC's, so it takes a token of the account's rate too.
        limits.admit(caller.accountId, ctx.method);
        if (next.rejected) throw next.rejected;
        const w = parseInput(chatWrite, next.message);
        const rev =
          w.kind === 'sendEvent'
            ? (await genie.sendEvent(caller, { sessionId, ...w.req })).view.session.revision
            : (await genie.appendDialogue(caller, { sessionId, ...w.req })).session.revision;
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

/** The next Chat request: decoded (perhaps refused by the request checks, and still answered), or the end. */
async function nextRequest(requests: Incoming<ChatRequest>): Promise<{ message: unknown; rejected?: RejectedMessage } | undefined> {
  try {
    const next = await requests.next();
    return next.done ? undefined : { message: next.value };
  } catch (err) {
    if (err instanceof RejectedMessage && err.rejected.request !== undefined) return { message: err.rejected.request, rejected: err };
    throw err;
  }
}
