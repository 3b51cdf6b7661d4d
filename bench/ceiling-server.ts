/**
 * The framework's limit: a bare grpc-js server with the same server options and the same message types as
 * parley, whose handlers do nothing but answer with a canned response (a real parley response, captured by
 * run.ts and passed in encoded), and a bare broadcast: every SendEvent writes one message to every open
 * WatchSession stream, straight from the handler. For the gateway scenario the same broadcast relays
 * StreamUtterance: each chunk goes to the session's watchers as a delta as it arrives, and the chunk with
 * `last_chunk` (or the half-close) as a commit carrying the whole text, at the session's next revision, all
 * in memory. A watch that names `after_revision` gets a `caught_up` update at that revision on open, as a
 * parley watch that has nothing to replay does.
 *
 * Usage: tsx bench/ceiling-server.ts   (env CEILING_RESPONSES=<file of JSON {name: base64}>, CEILING_PORT, 0 or unset for any)
 * Prints `listening <port>` on stdout; stops on SIGTERM/SIGINT or when stdin closes.
 */
import { readFileSync } from 'node:fs';
import {
  Server,
  ServerCredentials,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import * as genie from '../src/gen/parley/genie/v1/genie.js';
import { OpenPromptResponse, PromptServiceService } from '../src/gen/parley/prompt/v1/prompt.js';

const canned = JSON.parse(readFileSync(process.env.CEILING_RESPONSES ?? '', 'utf8')) as Record<string, string>;
const bytes = (name: string) => Buffer.from(canned[name] ?? '', 'base64');
const getSession = genie.GetSessionResponse.decode(bytes('GetSessionResponse'));
const sendEvent = genie.SendEventResponse.decode(bytes('SendEventResponse'));
const openPrompt = OpenPromptResponse.decode(bytes('OpenPromptResponse'));

// The same options as src/transport/server.ts.
const server = new Server({
  'grpc.max_receive_message_length': 32 * 1024 * 1024,
  'grpc.max_send_message_length': 32 * 1024 * 1024,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  'grpc.max_concurrent_streams': 1000,
});

// Open watch streams, by session id.
const watchers = new Map<string, Set<ServerWritableStream<unknown, unknown>>>();
let revision = 0;

/**
 * What a broadcast carries: the watch messages parley sent for one SendEvent (captured by run.ts), with the
 * revision set; without a capture, an update with just the revision. A broadcast writes as many messages
 * per SendEvent as parley's capture holds (one SessionUpdate carrying the commit's events, today).
 */
const WatchResponse = (genie as Record<string, unknown>).WatchSessionResponse as { decode(b: Uint8Array): Record<string, unknown> } | undefined;
const captured: Array<Record<string, unknown>> =
  WatchResponse && canned.WatchSessionResponses ? (JSON.parse(canned.WatchSessionResponses) as string[]).map((b) => WatchResponse.decode(Buffer.from(b, 'base64'))) : [];
const withRevision = (m: Record<string, unknown>, rev: number): unknown => {
  const copy: Record<string, unknown> = { ...m };
  for (const [k, v] of Object.entries(copy)) {
    if (k === 'revision') copy[k] = rev;
    else if (v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date) && !(v instanceof Uint8Array)) copy[k] = withRevision(v as Record<string, unknown>, rev);
  }
  return copy;
};
const messagesFor = (rev: number): unknown[] => (captured.length ? captured.map((m) => withRevision(m, rev)) : [{ update: { sessionId: '', revision: rev } }]);

const genieImpl: UntypedServiceImplementation = {
  getSession: (_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => cb(null, getSession),
  sendEvent: (call: ServerUnaryCall<{ sessionId: string; expectedRevision: number }, unknown>, cb: sendUnaryData<unknown>) => {
    // The driver names the revision it expects, as it does with parley; the broadcast carries the next one.
    const rev = Number(call.request.expectedRevision) + 1 || ++revision;
    const set = watchers.get(call.request.sessionId);
    if (set) {
      const msgs = messagesFor(rev);
      for (const w of set) for (const m of msgs) w.write(m);
    }
    cb(null, sendEvent);
  },
};
/** Each relayed session's revision (a session is at 1 until the relay commits an utterance to it). */
const revisions = new Map<string, number>();
const broadcast = (sessionId: string, m: unknown) => {
  const set = watchers.get(sessionId);
  if (set) for (const w of set) w.write(m);
};

/**
 * StreamUtterance relayed: a delta per non-empty chunk, then a commit with the whole text, as parley
 * sends them (the same messages, so the same bytes to serialize), and the same response.
 */
genieImpl.streamUtterance = (call: ServerReadableStream<genie.StreamUtteranceRequest, unknown>, cb: sendUnaryData<genie.StreamUtteranceResponse>) => {
  let first: genie.StreamUtteranceRequest | undefined;
  let text = '';
  let index = 0;
  let committed: genie.StreamUtteranceResponse | undefined;
  const commit = (): genie.StreamUtteranceResponse => {
    const f = first!;
    const revision = (revisions.get(f.sessionId) ?? 1) + 1;
    revisions.set(f.sessionId, revision);
    const now = new Date();
    const element = { actor: f.actor, actorText: text, timestamp: now, eventName: f.eventName, tokenCount: 0 };
    broadcast(f.sessionId, { update: { sessionId: f.sessionId, revision, commit: { events: [{ dialogueAppended: { index: revision - 1, element, utteranceId: f.utteranceId } }] } } });
    return { utteranceId: f.utteranceId, revision, dialogueIndex: revision - 1, state: 'open', updateTime: now };
  };
  call.on('data', (m: genie.StreamUtteranceRequest) => {
    first ??= m;
    if (committed) return;
    if (m.text) {
      text += m.text;
      broadcast(first.sessionId, { update: { sessionId: first.sessionId, revision: 0, delta: { utteranceId: first.utteranceId, actor: first.actor, chunkIndex: index++, text: m.text } } });
    }
    if (m.lastChunk) committed = commit();
  });
  call.on('end', () => {
    if (!first) return cb({ code: 3, details: 'the stream ended before its first message' });
    cb(null, committed ?? commit());
  });
  call.on('error', () => {});
};

if ('watchSession' in genie.GenieServiceService) {
  genieImpl.watchSession = (call: ServerWritableStream<{ sessionId: string; afterRevision?: number }, unknown>) => {
    const id = call.request.sessionId;
    let set = watchers.get(id);
    if (!set) watchers.set(id, (set = new Set()));
    set.add(call);
    const gone = () => {
      set.delete(call);
      if (set.size === 0 && watchers.get(id) === set) watchers.delete(id);
    };
    call.on('cancelled', gone);
    call.on('close', gone);
    // One message on open, as parley sends: the creation replayed for a watch from revision 0, a caught_up
    // otherwise (nothing to replay). Either way the client knows it is live.
    const after = Number(call.request.afterRevision ?? 0);
    call.write(after > 0 ? { update: { sessionId: id, revision: after, caughtUp: {} } } : messagesFor(1)[0]);
  };
}
server.addService(genie.GenieServiceService, genieImpl);
server.addService(PromptServiceService, {
  openPrompt: (_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => cb(null, openPrompt),
});

server.bindAsync(`127.0.0.1:${Number(process.env.CEILING_PORT) || 0}`, ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`ceiling-server: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`listening ${port}\n`);
});

const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
