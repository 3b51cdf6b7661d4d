import type { Knex } from 'knex';
import { namedByAccount, ownedBy, timestamps } from './columns.js';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('accounts', (t) => {
    t.uuid('id').primary();
    t.text('account_number').notNullable().unique();
    t.text('display_name').notNullable().defaultTo('');
    timestamps(t, knex);
  });
  await knex.schema.createTable('user_profiles', (t) => namedByAccount(t, knex, 'username', 'email'));
  await knex.schema.createTable('api_keys', (t) => {
    t.uuid('id').primary();
    ownedBy(t, 'user_profile_id', 'user_profiles');
    ownedBy(t, 'account_id', 'accounts');
    // SHA-256 of the secret: secrets are high-entropy, so a slow KDF buys nothing and costs every call.
    t.text('secret_hash').notNullable().unique();
    t.text('description').notNullable().defaultTo('');
    timestamps(t, knex, ['created_at']);
    t.timestamp('revoked_at', { useTz: true });
  });
  await knex.schema.createTable('llm_clients', (t) => namedByAccount(t, knex));
  await knex.schema.createTable('plugins', (t) => namedByAccount(t, knex));
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['plugins', 'llm_clients', 'api_keys', 'user_profiles', 'accounts']) {
    await knex.schema.dropTableIfExists(table);
  }
}
