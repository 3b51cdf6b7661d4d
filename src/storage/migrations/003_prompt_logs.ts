import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // The log revision of a prompt: every log write bumps it in the same transaction and stamps the row it
  // inserts, so a watcher can replay "everything after revision N" and then go live without gaps.
  await knex.schema.alterTable('prompts', (t) => {
    t.bigInteger('revision').notNullable().defaultTo(0);
  });
  for (const table of ['prompt_history', 'prompt_tool_calls', 'prompt_plugin_usage']) {
    await knex.schema.alterTable(table, (t) => {
      t.bigInteger('revision').notNullable().defaultTo(0);
    });
  }
  // ListPrompts filters by tag and pages by (created_at, id) within an account.
  await knex.raw('create index prompts_tags_gin on prompts using gin (tags)');
  await knex.schema.alterTable('prompts', (t) => {
    t.index(['account_id', 'llm_client_id', 'created_at']);
  });
  // Tool calls are looked up by plugin when a plugin is deleted (ON DELETE SET NULL).
  await knex.schema.alterTable('prompt_tool_calls', (t) => t.index(['plugin_id']));
  await knex.schema.alterTable('prompt_plugin_usage', (t) => t.index(['plugin_id']));

  // Safe retries (AIP-155), shared by every service: the first result of a request id, written in the
  // same transaction as the change it describes.
  await knex.schema.createTable('request_ids', (t) => {
    t.text('scope').notNullable();
    t.text('method').notNullable();
    t.text('request_id').notNullable();
    t.text('fingerprint').notNullable();
    t.jsonb('response');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['scope', 'method', 'request_id']);
    t.index(['created_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('request_ids');
  await knex.raw('drop index if exists prompts_tags_gin');
  for (const table of ['prompt_history', 'prompt_tool_calls', 'prompt_plugin_usage', 'prompts']) {
    await knex.schema.alterTable(table, (t) => t.dropColumn('revision'));
  }
}
