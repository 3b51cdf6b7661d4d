import type { Knex } from 'knex';
import type { Tx } from '../ports/unit-of-work.js';

/**
 * The one place a Knex transaction becomes the domain's opaque Tx and back. Only storage adapters call
 * these; the domain never sees Knex. The casts are sound because every Tx the domain holds was made by
 * txOf from a live transaction of the same Knex instance.
 */
export const txOf = (trx: Knex.Transaction): Tx => trx as unknown as Tx;

export function knexOf(tx: Tx): Knex.Transaction;
export function knexOf(tx: Tx | undefined, db: Knex): Knex | Knex.Transaction;
export function knexOf(tx: Tx | undefined, db?: Knex): Knex | Knex.Transaction {
  return tx ? (tx as unknown as Knex.Transaction) : (db as Knex);
}
