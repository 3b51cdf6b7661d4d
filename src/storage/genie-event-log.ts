import type { Knex } from 'knex';
import { z } from 'zod';
import { sessionEventSchema, type SessionCommit, type SessionEvent } from '../genie/events.js';
import type { SessionEventLog } from '../genie/store.js';
import type { Db } from './db.js';

/**
 * The session event log keeps one `session_commits` row per committed revision: its events, in order, as a
 * jsonb array in their stored form. Text is stored once, in genie_dialogue, so the log leaves out what it
 * would repeat and the reader puts it back:
 * - dialogue_appended keeps only `type`, `v`, `seq` (and `utteranceId` when set): the element at `seq` has the rest (`actorText`,
 *   and `actor`, `event`, `timestamp` with it, which would otherwise be most of what a turn logs);
 * - state_changed has `actorInputSeq: seq` in place of an `actorInput` that is the text of an element
 *   appended by the same revision.
 * A part is only left out when the writer appends that very element in the same statement (`appended`), so
 * a stored event never points at an element it does not match; anything else is stored as it is, and the
 * reader takes what an event has and fills in only what it lacks (rows migrated from the old log may lack
 * only `actorText`).
 */
type StoredEvent = Record<string, unknown>;

/** An element a revision appends, as the log can restore it. */
export interface AppendedElement {
  actor: string;
  actorText: string;
  event: string;
  timestamp: Date;
}

const sameElement = (e: Extract<SessionEvent, { type: 'dialogue_appended' }>, d: AppendedElement | undefined) =>
  d !== undefined && d.actorText === e.actorText && d.actor === e.actor && d.event === e.event && d.timestamp.getTime() === e.timestamp.getTime();

/** The stored form of a revision's events; `appended` maps the positions this revision appends to their elements. */
function toStored(events: readonly SessionEvent[], appended: ReadonlyMap<number, AppendedElement>): StoredEvent[] {
  const said = new Map<string, number>();
  for (const e of events) if (e.type === 'dialogue_appended' && sameElement(e, appended.get(e.seq)) && !said.has(e.actorText)) said.set(e.actorText, e.seq);
  return events.map((e): StoredEvent => {
    if (e.type === 'dialogue_appended' && sameElement(e, appended.get(e.seq))) return { type: e.type, v: e.v, seq: e.seq, ...(e.utteranceId && { utteranceId: e.utteranceId }) };
    const seq = e.type === 'state_changed' ? said.get(e.actorInput) : undefined;
    if (e.type === 'state_changed' && seq !== undefined) {
      const { actorInput: _, ...rest } = e;
      return { ...rest, actorInputSeq: seq };
    }
    return e;
  });
}

/** The stored events of a revision, as jsonb text (Postgres wants jsonb parameters as text). */
export const storedEventsJson = (events: readonly SessionEvent[], appended: ReadonlyMap<number, AppendedElement>) => JSON.stringify(toStored(events, appended));

const seqOf = (v: unknown) => z.number().int().parse(v);

/** What the log restores from an element: everything a dialogue_appended event repeats. */
const elementSchema = z.object({ actor: z.string(), actorText: z.string(), event: z.string(), timestamp: z.string() });
type Element = z.infer<typeof elementSchema>;

/** The domain's events of a revision from their stored form; `elements` holds the elements they point at. */
function fromStored(sessionId: string, revision: number, stored: readonly StoredEvent[], elements: ReadonlyMap<number, Element>): SessionEvent[] {
  const at = (seq: number) => {
    const found = elements.get(seq);
    if (found === undefined) throw new Error(`session ${sessionId} revision ${revision}: the log needs dialogue element ${seq}, which is absent`);
    return found;
  };
  return stored.map((e) => {
    // The event's own values win: only what it left out comes from the element.
    if (e.type === 'dialogue_appended' && e.actorText === undefined) return sessionEventSchema.parse({ ...at(seqOf(e.seq)), ...e });
    if (e.type === 'state_changed' && e.actorInputSeq !== undefined) {
      const { actorInputSeq, ...rest } = e;
      return sessionEventSchema.parse({ ...rest, actorInput: at(seqOf(actorInputSeq)).actorText });
    }
    return sessionEventSchema.parse(e);
  });
}

/** Logs `events` as revision `revision` (nothing when there are none). */
export async function insertEvents(
  trx: Knex.Transaction,
  sessionId: string,
  revision: number,
  events: readonly SessionEvent[],
  appended: ReadonlyMap<number, AppendedElement> = new Map(),
): Promise<void> {
  if (events.length === 0) return;
  await trx('session_commits').insert({ session_id: sessionId, revision, events: storedEventsJson(events, appended) });
}

/** A jsonb column checked by `schema`: parsed from pg, but it may arrive as text from other drivers. */
export const jsonb = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (typeof v === 'string' ? JSON.parse(v) : v), schema);

const headRow = z.object({ account_id: z.string(), revision: z.coerce.number(), deleted_at: z.unknown() });
const storedEvents = jsonb(z.array(z.record(z.string(), z.unknown())));
const loggedRow = z.object({
  revision: z.coerce.number(),
  events: storedEvents,
  // jsonb object keys are text: the positions come back as strings.
  elements: jsonb(z.record(z.string(), elementSchema).nullable()),
});

// One statement per page: the page's commits, each with the elements its events point at (by the
// dialogue's primary key, so the work is bounded by the page, not by the session).
const PAGE = `
SELECT c.revision, c.events, (
  SELECT jsonb_object_agg(d.seq, jsonb_build_object('actor', d.actor, 'actorText', d.actor_text, 'event', d.event, 'timestamp', d.timestamp))
  FROM genie_dialogue d
  WHERE d.session_id = c.session_id AND d.seq IN (
    SELECT coalesce(e->>'actorInputSeq', e->>'seq')::int FROM jsonb_array_elements(c.events) e
    WHERE (e->>'type' = 'dialogue_appended' AND e->'actorText' IS NULL) OR (e->>'type' = 'state_changed' AND e->'actorInputSeq' IS NOT NULL))
) AS elements
FROM session_commits c
WHERE c.session_id = ? AND c.revision > ?
ORDER BY c.revision
LIMIT ?`;

/** Reads of the session event log (`session_commits`), for watchers replaying what they missed. */
export class KnexSessionEventLog implements SessionEventLog {
  constructor(private readonly db: Db) {}

  async head(sessionId: string): Promise<{ accountId: string; revision: number; deleted: boolean } | undefined> {
    const found = await this.db('genie_sessions').where({ id: sessionId }).first('account_id', 'revision', 'deleted_at');
    if (!found) return undefined;
    const r = headRow.parse(found);
    return { accountId: r.account_id, revision: r.revision, deleted: r.deleted_at !== null && r.deleted_at !== undefined };
  }

  /** Numbers may skip: a deleted session's log keeps only its session_deleted revision. */
  async commitsAfter(sessionId: string, after: number, limit: number): Promise<SessionCommit[]> {
    if (limit <= 0) return [];
    const { rows } = (await this.db.raw(PAGE, [sessionId, after, limit])) as { rows: unknown[] };
    return rows.map((row) => {
      const r = loggedRow.parse(row);
      const elements = new Map(Object.entries(r.elements ?? {}).map(([seq, element]) => [Number(seq), element]));
      return { revision: r.revision, events: fromStored(sessionId, r.revision, r.events, elements) };
    });
  }
}
