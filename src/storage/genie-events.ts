import type { Db } from './db.js';
import type { LiveCommit } from './genie-cache.js';
import { asJson } from './rows.js';

/** Reads of the session event log (`session_events`), for watchers replaying what they missed. */
export class GenieEventLog {
  constructor(private readonly db: Db) {}

  /** The owner and current revision of a session, deleted ones (tombstones) included. */
  async head(sessionId: string): Promise<{ accountId: string; revision: number; deleted: boolean } | undefined> {
    const r = await this.db('genie_sessions').where({ id: sessionId }).first('account_id', 'revision', 'deleted_at');
    return r && { accountId: r.account_id, revision: Number(r.revision), deleted: r.deleted_at !== null };
  }

  /**
   * The first `limit` logged revisions after `after`, whole, ascending. Numbers may skip: a deleted
   * session's log keeps only its session_deleted revision, so the page is bounded by the limit-th logged
   * revision rather than by after + limit.
   */
  async commitsAfter(sessionId: string, after: number, limit: number): Promise<LiveCommit[]> {
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
      .select('revision', 'kind', 'payload');
    const commits: LiveCommit[] = [];
    for (const r of rows) {
      const revision = Number(r.revision);
      let last = commits[commits.length - 1];
      if (!last || last.revision !== revision) commits.push((last = { revision, events: [] }));
      last.events.push({ kind: r.kind, payload: asJson(r.payload) });
    }
    return commits;
  }
}
