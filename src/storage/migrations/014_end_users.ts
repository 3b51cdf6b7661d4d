import type { Knex } from 'knex';

// End users: a gateway holding one API key names the end user each genie session and prompt belongs to
// (NULL: none), lists by it and erases by it. The indexes hold only rows that name an end user, in each
// list's own order, so a filtered list or an erasure batch reads one index range of one account.

export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE genie_sessions ADD COLUMN end_user_id text');
  await knex.raw('ALTER TABLE prompts ADD COLUMN end_user_id text');
  // ListSessions orders by seq; tombstones drop their end_user_id, so live sessions are all the index holds.
  await knex.raw('CREATE INDEX genie_sessions_end_user ON genie_sessions (account_id, end_user_id, seq) WHERE end_user_id IS NOT NULL');
  // ListPrompts orders newest first by (created_at, id); a b-tree reads that backwards as well.
  await knex.raw('CREATE INDEX prompts_end_user ON prompts (account_id, end_user_id, created_at, id) WHERE end_user_id IS NOT NULL');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS prompts_end_user');
  await knex.raw('DROP INDEX IF EXISTS genie_sessions_end_user');
  await knex.raw('ALTER TABLE prompts DROP COLUMN IF EXISTS end_user_id');
  await knex.raw('ALTER TABLE genie_sessions DROP COLUMN IF EXISTS end_user_id');
}
