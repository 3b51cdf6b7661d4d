import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('prompts', (t) => {
    t.uuid('id').primary();
    t.uuid('account_id').notNullable().references('accounts.id').onDelete('CASCADE');
    t.uuid('user_profile_id').notNullable().references('user_profiles.id').onDelete('CASCADE');
    t.uuid('llm_client_id').notNullable().references('llm_clients.id').onDelete('CASCADE');
    t.text('name').notNullable();
    t.text('description').notNullable().defaultTo('');
    t.text('version').notNullable().defaultTo('1.0.0');
    t.jsonb('annotations').notNullable().defaultTo('{}');
    t.specificType('tags', 'text[]').notNullable().defaultTo('{}');
    t.text('session_key').notNullable().unique();
    t.text('ip_address').notNullable().defaultTo('');
    t.text('user_agent').notNullable().defaultTo('');
    t.text('url').notNullable().defaultTo('');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Bumped by every log write; retention purges on it.
    t.timestamp('last_activity_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['account_id', 'created_at']);
    t.index(['last_activity_at']);
  });
  // Log tables order by a bigserial id: creation order survives clock ties.
  await knex.schema.createTable('prompt_history', (t) => {
    t.bigIncrements('id');
    t.uuid('prompt_id').notNullable().references('prompts.id').onDelete('CASCADE');
    t.jsonb('request').notNullable().defaultTo('{}');
    t.jsonb('response').notNullable().defaultTo('{}');
    t.jsonb('messages').notNullable().defaultTo('[]');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['prompt_id', 'id']);
  });
  await knex.schema.createTable('prompt_tool_calls', (t) => {
    t.bigIncrements('id');
    t.uuid('prompt_id').notNullable().references('prompts.id').onDelete('CASCADE');
    t.uuid('plugin_id').references('plugins.id').onDelete('SET NULL');
    t.text('function_name').notNullable();
    t.text('function_args').notNullable().defaultTo('');
    t.jsonb('request').notNullable().defaultTo('{}');
    t.jsonb('response').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['prompt_id', 'id']);
  });
  await knex.schema.createTable('prompt_plugin_usage', (t) => {
    t.bigIncrements('id');
    t.uuid('prompt_id').notNullable().references('prompts.id').onDelete('CASCADE');
    t.uuid('plugin_id').notNullable().references('plugins.id').onDelete('CASCADE');
    t.text('input_text').notNullable().defaultTo('');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['prompt_id', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['prompt_plugin_usage', 'prompt_tool_calls', 'prompt_history', 'prompts']) {
    await knex.schema.dropTableIfExists(table);
  }
}
