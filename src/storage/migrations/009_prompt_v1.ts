import type { Knex } from 'knex';

const LOGS = ['prompt_history', 'prompt_tool_calls', 'prompt_plugin_usage'];

export async function up(knex: Knex): Promise<void> {
  // Contracts v1: every id a client sees is a UUID. Log entries keep their bigserial `id` as the internal
  // creation order (page tokens, tie-breaks) and gain `uid`, the id the API exposes.
  for (const table of LOGS) {
    await knex.schema.alterTable(table, (t) => {
      t.uuid('uid').notNullable().defaultTo(knex.raw('gen_random_uuid()'));
      t.unique(['uid']);
      // A watch replays the first changes after a revision, per log.
      t.index(['prompt_id', 'revision']);
    });
  }
  // A prompt's revision is 1 on creation and +1 per committed change (its own or its logs'): shift every
  // stored revision by one, so existing log entries keep their place relative to the prompt's counter.
  // `update_revision` is the revision of the prompt's latest UpdatePrompt (0: never updated), which a
  // watch replays.
  await knex.schema.alterTable('prompts', (t) => {
    t.bigInteger('update_revision').notNullable().defaultTo(0);
  });
  await knex('prompts').update({ revision: knex.raw('revision + 1') });
  await knex.raw('alter table prompts alter column revision set default 1');
  for (const table of LOGS) await knex(table).update({ revision: knex.raw('revision + 1') });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of LOGS) {
    await knex(table).update({ revision: knex.raw('revision - 1') });
    await knex.schema.alterTable(table, (t) => {
      t.dropIndex(['prompt_id', 'revision']);
      t.dropUnique(['uid']);
      t.dropColumn('uid');
    });
  }
  await knex.raw('alter table prompts alter column revision set default 0');
  await knex('prompts').update({ revision: knex.raw('revision - 1') });
  await knex.schema.alterTable('prompts', (t) => t.dropColumn('update_revision'));
}
