import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // Retention of genie sessions: per type (idle time, the latest version's value governs) and per session.
  await knex.schema.alterTable('genie_model_types', (t) => {
    t.integer('session_ttl_seconds').notNullable().defaultTo(0);
  });
  await knex.schema.alterTable('genie_sessions', (t) => {
    t.timestamp('expire_time', { useTz: true });
    t.index(['expire_time']);
    // The purge finds idle sessions of a type, and old tombstones, by these.
    t.index(['account_id', 'model_type', 'updated_at']);
    t.index(['deleted_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('genie_sessions', (t) => {
    t.dropIndex(['deleted_at']);
    t.dropIndex(['account_id', 'model_type', 'updated_at']);
    t.dropColumn('expire_time');
  });
  await knex.schema.alterTable('genie_model_types', (t) => t.dropColumn('session_ttl_seconds'));
}
