import type { Knex } from 'knex';
import { ownedBy, timestamps } from './columns.js';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('prompts', (t) => {
    t.uuid('id').primary();
    ownedBy(t, 'account_id', 'accounts');
    ownedBy(t, 'user_profile_id', 'user_profiles');
    ownedBy(t, 'llm_client_id', 'llm_clients');
    t.text('name').notNullable();
    t.text('description').notNullable().defaultTo('');
    t.text('version').notNullable().defaultTo('1.0.0');
    t.jsonb('annotations').notNullable().defaultTo('{}');
    t.specificType('tags', 'text[]').notNullable().defaultTo('{}');
    t.text('session_key').notNullable().unique();
    t.text('ip_address').notNullable().defaultTo('');
    t.text('user_agent').notNullable().defaultTo('');
    t.text('url').notNullable().defaultTo('');
    timestamps(t, knex);
    // Bumped by every log write; retention purges on it.
    t.timestamp('last_activity_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['account_id', 'created_at']);
    t.index(['last_activity_at']);
  });
  // Log tables order by a bigserial id: creation order survives clock ties.
  const logTable = (name: string, columns: (t: Knex.CreateTableBuilder) => void) =>
    knex.schema.createTable(name, (t) => {
      t.bigIncrements('id');
      ownedBy(t, 'prompt_id', 'prompts');
      columns(t);
      timestamps(t, knex);
      t.index(['prompt_id', 'id']);
    });
  await logTable('prompt_history', (t) => {
    t.jsonb('request').notNullable().defaultTo('{}');
    t.jsonb('response').notNullable().defaultTo('{}');
    t.jsonb('messages').notNullable().defaultTo('[]');
  });
  await logTable('prompt_tool_calls', (t) => {
    t.uuid('plugin_id').references('plugins.id').onDelete('SET NULL');
    t.text('function_name').notNullable();
    t.text('function_args').notNullable().defaultTo('');
    t.jsonb('request').notNullable().defaultTo('{}');
    t.jsonb('response').notNullable().defaultTo('{}');
  });
  await logTable('prompt_plugin_usage', (t) => {
    ownedBy(t, 'plugin_id', 'plugins');
    t.text('input_text').notNullable().defaultTo('');
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['prompt_plugin_usage', 'prompt_tool_calls', 'prompt_history', 'prompts']) {
    await knex.schema.dropTableIfExists(table);
  }
}
