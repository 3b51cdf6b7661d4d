import type { Knex } from 'knex';

// Labels and the indexes every ListSessions filter and order reads (the filter grammar refuses what none
// of them serves). Labels are jsonb objects of strings: a GIN index (jsonb_ops) answers both
// `labels @> '{"k":"v"}'` (a label's value) and `labels ? 'k'` (a label is set). The time orders page by
// (time, seq) over live sessions only, so a page and a count read one index range of one account; a time
// bound of create_time/update_time reads the same indexes. Prompts get the same: labels with their GIN
// index, and an (account, updated_at, id) b-tree for the update-time order.

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE genie_sessions ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'`);
  await knex.raw(`ALTER TABLE prompts ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'`);
  await knex.raw('CREATE INDEX genie_sessions_labels ON genie_sessions USING gin (labels)');
  await knex.raw('CREATE INDEX prompts_labels ON prompts USING gin (labels)');
  await knex.raw('CREATE INDEX genie_sessions_created ON genie_sessions (account_id, created_at, seq) WHERE deleted_at IS NULL');
  await knex.raw('CREATE INDEX genie_sessions_updated ON genie_sessions (account_id, updated_at, seq) WHERE deleted_at IS NULL');
  // Prompts page by (time, id); (account_id, created_at) and (account_id, llm_client_id, created_at) exist.
  await knex.raw('CREATE INDEX prompts_updated ON prompts (account_id, updated_at, id)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS prompts_updated');
  await knex.raw('DROP INDEX IF EXISTS genie_sessions_updated');
  await knex.raw('DROP INDEX IF EXISTS genie_sessions_created');
  await knex.raw('DROP INDEX IF EXISTS prompts_labels');
  await knex.raw('DROP INDEX IF EXISTS genie_sessions_labels');
  await knex.raw('ALTER TABLE prompts DROP COLUMN IF EXISTS labels');
  await knex.raw('ALTER TABLE genie_sessions DROP COLUMN IF EXISTS labels');
}
