import type { Knex } from 'knex';
import { z } from 'zod';
import { sessionEventSchema, type SessionCommit, type SessionEvent } from '../genie/events.js';
import type { SessionEventLog } from '../genie/store.js';
import type { Db } from './db.js';

/** Postgres wants jsonb parameters as text; the event's `type` is also its own column (`kind`) for queries. */
export async function insertEvents(trx: Knex.Transaction, sessionId: string, revision: number, events: readonly SessionEvent[]): Promise<void> {
  if (events.length === 0) return;
  await trx('session_events').insert(events.map((e) => ({ session_id: sessionId, revision, kind: e.type, payload: JSON.stringify(e) })));
}

/** A jsonb column checked by `schema`: parsed from pg, but it may arrive as text from other drivers. */
export const jsonb = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (typeof v === 'string' ? JSON.parse(v) : v), schema);

const headRow = z.object({ account_id: z.string(), revision: z.coerce.number(), deleted_at: z.unknown() });
const loggedRow = z.object({
  revision: z.coerce.number(),
  payload: jsonb(sessionEventSchema),
});

/** Reads of the session event log (`session_events`), for watchers replaying what they missed. */
export class KnexSessionEventLog implements SessionEventLog {
  constructor(private readonly db: Db) {}

  async head(sessionId: string): Promise<{ accountId: string; revision: number; deleted: boolean } | undefined> {
    const found = await this.db('genie_sessions').where({ id: sessionId }).first('account_id', 'revision', 'deleted_at');
    if (!found) return undefined;
    const r = headRow.parse(found);
    return { accountId: r.account_id, revision: r.revision, deleted: r.deleted_at !== null && r.deleted_at !== undefined };
  }

  /**
   * Numbers may skip: a deleted session's log keeps only its session_deleted revision, so the page is
   * bounded by the limit-th logged revision rather than by after + limit.
   */
  async commitsAfter(sessionId: string, after: number, limit: number): Promise<SessionCommit[]> {
    const upTo = this.db('session_events')
      .where({ session_id: sessionId })
      .andWhere('revision', '>', after)
      .distinct('revision')
      .orderBy('revision')
      .limit(limit)
      .as('page');
    const rows = await this.db('session_events')
      .where({ session_id: sessionId })
      .andWhere('revision', '>', after)
      .andWhere('revision', '<=', this.db.from(upTo).max('revision'))
      .orderBy([{ column: 'revision' }, { column: 'id' }])
      .select('revision', 'payload');
    const commits: SessionCommit[] = [];
    for (const row of rows) {
      const r = loggedRow.parse(row);
      let last = commits[commits.length - 1];
      if (!last || last.revision !== r.revision) commits.push((last = { revision: r.revision, events: [] }));
      last.events.push(r.payload);
    }
    return commits;
  }
}
