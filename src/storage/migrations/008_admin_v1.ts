import type { Knex } from 'knex';

const RESOURCES = ['accounts', 'user_profiles', 'api_keys', 'llm_clients', 'plugins'] as const;

export async function up(knex: Knex): Promise<void> {
  // Admin v1: every admin resource has a revision (1 on creation, +1 per committed change); existing rows
  // start at 1.
  for (const table of RESOURCES) {
    await knex.schema.alterTable(table, (t) => {
      t.bigInteger('revision').notNullable().defaultTo(1);
    });
  }
  await knex.schema.alterTable('api_keys', (t) => {
    // The first characters of the secret, shown by ListApiKeys; keys issued before this have none.
    t.text('key_prefix').notNullable().defaultTo('');
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // ListApiKeys pages by (created_at, id), all keys or those of an account or of a profile.
    t.index(['created_at', 'id']);
    t.index(['account_id', 'created_at', 'id']);
    t.index(['user_profile_id', 'created_at', 'id']);
  });
  await knex('api_keys').update({ updated_at: knex.raw('coalesce(revoked_at, created_at)') });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_keys', (t) => {
    t.dropIndex(['user_profile_id', 'created_at', 'id']);
    t.dropIndex(['account_id', 'created_at', 'id']);
    t.dropIndex(['created_at', 'id']);
    t.dropColumn('updated_at');
    t.dropColumn('key_prefix');
  });
  for (const table of RESOURCES) await knex.schema.alterTable(table, (t) => t.dropColumn('revision'));
}
