import { z } from 'zod';
import { isoDate, zodCodec } from '../json-codec.js';
import type { Codec } from '../ports/unit-of-work.js';
import { ACTORS, type Actor } from './dialogue-format.js';

/**
 * What happens to a session, as one typed, versioned value per kind. The same objects are written to the
 * event log (a jsonb column), carried on the bus after commit and mapped to the wire by the stream
 * handlers; whatever comes back as JSON is checked against these schemas (json-codec.ts), never cast.
 * A change of an event's shape adds a new `v`, so a reader meets only shapes it knows.
 */
const actor = z.enum(ACTORS);
const fields = z.record(z.string(), z.unknown());

const sessionCreatedSchema = z.object({
  type: z.literal('session_created'),
  v: z.literal(1),
  modelType: z.string(),
  schemaVersion: z.number().int(),
  state: z.string(),
  fields,
  forkedFromSessionId: z.string().optional(),
  forkedFromRevision: z.number().int().optional(),
});
const dialogueAppendedSchema = z.object({
  type: z.literal('dialogue_appended'),
  v: z.literal(1),
  /** 1-based position of the element in the dialogue. */
  seq: z.number().int(),
  actor,
  actorText: z.string(),
  /** The event the utterance was sent with; '' for AppendDialogue. */
  event: z.string(),
  timestamp: isoDate,
  /** The StreamUtterance whose deltas this element completes; absent for any other write. */
  utteranceId: z.string().optional(),
});
const stateChangedSchema = z.object({
  type: z.literal('state_changed'),
  v: z.literal(1),
  fromState: z.string(),
  toState: z.string(),
  event: z.string(),
  actor,
  actorInput: z.string(),
});
const fieldsUpdatedSchema = z.object({
  type: z.literal('fields_updated'),
  v: z.literal(1),
  updateMask: z.array(z.string()),
  fields,
  actor: z.union([actor, z.literal('')]),
  actorInput: z.string(),
});
const secondaryPutSchema = z.object({ type: z.literal('secondary_put'), v: z.literal(1), key: z.string(), sizeBytes: z.number().int() });
const sessionDeletedSchema = z.object({ type: z.literal('session_deleted'), v: z.literal(1) });

export const sessionEventSchema = z.discriminatedUnion('type', [
  sessionCreatedSchema,
  dialogueAppendedSchema,
  stateChangedSchema,
  fieldsUpdatedSchema,
  secondaryPutSchema,
  sessionDeletedSchema,
]);
export type SessionEvent = z.infer<typeof sessionEventSchema>;

// One builder per kind: nothing else spells an event out.

export const sessionCreated = (s: {
  modelType: string;
  schemaVersion: number;
  state: string;
  fields: Record<string, unknown>;
  forkedFrom?: { sessionId: string; revision: number } | undefined;
}): SessionEvent => ({
  type: 'session_created',
  v: 1,
  modelType: s.modelType,
  schemaVersion: s.schemaVersion,
  state: s.state,
  fields: s.fields,
  ...(s.forkedFrom && { forkedFromSessionId: s.forkedFrom.sessionId, forkedFromRevision: s.forkedFrom.revision }),
});

export const dialogueAppended = (seq: number, e: { actor: Actor; actorText: string; event: string; timestamp: Date }, utteranceId?: string): SessionEvent => ({
  type: 'dialogue_appended',
  v: 1,
  seq,
  actor: e.actor,
  actorText: e.actorText,
  event: e.event,
  timestamp: e.timestamp,
  ...(utteranceId && { utteranceId }),
});

export const stateChanged = (t: { fromState: string; toState: string; event: string; actor: Actor; actorInput: string }): SessionEvent => ({
  type: 'state_changed',
  v: 1,
  ...t,
});

export const fieldsUpdated = (u: { updateMask: string[]; fields: Record<string, unknown>; actor: Actor | ''; actorInput: string }): SessionEvent => ({
  type: 'fields_updated',
  v: 1,
  ...u,
});

export const secondaryPut = (key: string, sizeBytes: number): SessionEvent => ({ type: 'secondary_put', v: 1, key, sizeBytes });

export const sessionDeleted = (): SessionEvent => ({ type: 'session_deleted', v: 1 });

/** Every event of one committed revision, as the log returns it and the bus carries it. */
export interface SessionCommit {
  revision: number;
  events: SessionEvent[];
}

/**
 * What a session's channel carries: a committed revision whole (one message per revision, so a watcher
 * sees a revision whole), or live-only news of an utterance being streamed, never replayed.
 */
const busMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('commit'), v: z.literal(1), revision: z.number().int(), events: z.array(sessionEventSchema) }),
  z.object({
    type: z.literal('utterance_delta'),
    v: z.literal(1),
    utteranceId: z.string(),
    actor,
    chunkIndex: z.number().int(),
    text: z.string(),
  }),
  z.object({ type: z.literal('utterance_aborted'), v: z.literal(1), utteranceId: z.string(), reason: z.string() }),
]);
export type BusMessage = z.infer<typeof busMessageSchema>;
export type EphemeralEvent = Exclude<BusMessage, { type: 'commit' }>;
export const busMessageCodec: Codec<BusMessage> = zodCodec(busMessageSchema);

export const commitMessage = (c: SessionCommit): BusMessage => ({ type: 'commit', v: 1, revision: c.revision, events: c.events });

export const utteranceDelta = (d: { utteranceId: string; actor: Actor; chunkIndex: number; text: string }): EphemeralEvent => ({
  type: 'utterance_delta',
  v: 1,
  ...d,
});

export const utteranceAborted = (utteranceId: string, reason: string): EphemeralEvent => ({ type: 'utterance_aborted', v: 1, utteranceId, reason });

/** A session's channel; the hash tag keeps it in the slot of the session's other keys. */
export const sessionChannel = (sessionId: string) => `genie:{${sessionId}}`;
