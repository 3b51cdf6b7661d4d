import type { Knex } from 'knex';
import { invalidArgument } from '../errors.js';
import type { Db } from './db.js';
import type { Codec, RequestKey, Tx, UnitOfWork } from '../ports/unit-of-work.js';
import { knexOf, txOf } from './knex-tx.js';

/** How long a request id protects against a repeat (AIP-155 asks for at least a day). */
export const REQUEST_ID_WINDOW_MS = 24 * 60 * 60 * 1000;

/**
 * Runs a write at most once per request id. The id is claimed and the first result stored in the same
 * transaction as the write itself, so a crash either loses both or keeps both, and a retry can never
 * write twice. A concurrent duplicate blocks on the claim until the first commits, then replays it.
 * Failures are not remembered: the transaction rolls back with the claim, so a retry runs again.
 */
export class KnexUnitOfWork implements UnitOfWork {
  constructor(
    private readonly db: Db,
    private readonly opts: { windowMs?: number; now?: () => Date } = {},
  ) {}

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  /**
   * `work` must do all its database access through the transaction it receives. `subjectOf` names the
   * resource whose content the result repeats, so forgetSubjects can drop it when that resource goes.
   */
  async run<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>, subjectOf?: (value: T) => string): Promise<{ value: T; replayed: boolean }> {
    return this.db.transaction(async (trx) => {
      if (!key.requestId) return { value: await work(txOf(trx)), replayed: false };
      // One claim per (caller, request id), whatever the RPC: an id names one request of its caller.
      const where = { scope: key.scope, request_id: key.requestId };
      const now = this.now();
      const cutoff = new Date(now.getTime() - (this.opts.windowMs ?? REQUEST_ID_WINDOW_MS));
      // An expired claim protects nothing any more; the id may be used afresh.
      await trx('request_ids').where(where).andWhere('created_at', '<', cutoff).del();
      const claimed = await trx('request_ids')
        .insert({ ...where, method: key.method, fingerprint: key.fingerprint, created_at: now })
        .onConflict(['scope', 'request_id'])
        .ignore()
        .returning('request_id');
      if (claimed.length === 0) {
        const first = await trx('request_ids').where(where).first();
        if (first.method !== key.method || first.fingerprint !== key.fingerprint) {
          const other = first.method !== key.method ? 'another RPC' : 'a different request';
          throw invalidArgument('request_id', `was already used for ${other}; use a new request_id`, 'REQUEST_ID_REUSED');
        }
        return { value: codec.decode(first.response), replayed: true };
      }
      const value = await work(txOf(trx));
      await trx('request_ids').where(where).update({ response: JSON.stringify(codec.encode(value) ?? null), subject: subjectOf?.(value) ?? null });
      return { value, replayed: false };
    });
  }

  /**
   * Forgets every stored result about these resources (their retries then run afresh and find them gone);
   * returns how many went.
   */
  static async forgetSubjects(q: Knex | Knex.Transaction | Tx, subjects: string[]): Promise<number> {
    const k = typeof q === 'function' ? q : knexOf(q);
    if (!subjects.length) return 0;
    // RETURNING rather than the affected-row count, which not every driver (knex-pglite) reports.
    return (await k('request_ids').whereIn('subject', subjects).del(['request_id'])).length;
  }

  /** Deletes claims older than the window, a batch per transaction; returns how many went. */
  async expire(opts: { now?: Date; batchSize?: number } = {}): Promise<number> {
    const cutoff = new Date((opts.now ?? this.now()).getTime() - (this.opts.windowMs ?? REQUEST_ID_WINDOW_MS));
    const batch = opts.batchSize ?? 1000;
    let total = 0;
    for (;;) {
      // RETURNING rather than the affected-row count, which not every driver (knex-pglite) reports.
      const n = (
        await this.db('request_ids')
          .whereIn(
            ['scope', 'request_id'],
            this.db('request_ids').select('scope', 'request_id').where('created_at', '<', cutoff).limit(batch),
          )
          .del(['request_id'])
      ).length;
      total += n;
      if (n < batch) return total;
      await new Promise((r) => setImmediate(r));
    }
  }
}
