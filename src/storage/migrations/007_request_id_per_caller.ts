import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // A request id names one request of a caller, whatever the RPC: the same id on another RPC is a reused id
  // (INVALID_ARGUMENT), not a second write. Older duplicates across RPCs keep only their first claim.
  await knex.raw(`
    delete from request_ids r using request_ids o
     where r.scope = o.scope and r.request_id = o.request_id
       and (r.created_at, r.method) > (o.created_at, o.method)`);
  // The key itself becomes (scope, request_id), not an extra unique index beside the old key: an upsert's
  // ON CONFLICT arbitrates one index only, and two racing claims would hit the other one as an error.
  await knex.schema.alterTable('request_ids', (t) => {
    t.dropPrimary();
    t.primary(['scope', 'request_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('request_ids', (t) => {
    t.dropPrimary();
    t.primary(['scope', 'method', 'request_id']);
  });
}
