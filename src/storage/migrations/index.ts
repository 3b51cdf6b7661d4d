import type { Knex } from 'knex';
import * as m001 from './001_admin.js';
import * as m002 from './002_prompt.js';
import * as m003 from './003_prompt_logs.js';
import * as m004 from './004_genie.js';
import * as m005 from './005_request_subjects.js';
import * as m006 from './006_genie_retention.js';
import * as m007 from './007_request_id_per_caller.js';
import * as m008 from './008_admin_v1.js';
import * as m009 from './009_prompt_v1.js';
import * as m010 from './010_session_events_v1.js';
import * as m011 from './011_session_commits.js';
import * as m012 from './012_session_storage.js';
import * as m013 from './013_dialogue_tokens.js';
import * as m014 from './014_end_users.js';
import * as m015 from './015_labels.js';

interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

// Migrations are imported, not discovered on disk, so they run the same from TypeScript sources, a bundle
// or the knex CLI. Append new ones; never reorder or rename an applied one.
const migrations: Record<string, Migration> = {
  '001_admin': m001,
  '002_prompt': m002,
  '003_prompt_logs': m003,
  '004_genie': m004,
  '005_request_subjects': m005,
  '006_genie_retention': m006,
  '007_request_id_per_caller': m007,
  '008_admin_v1': m008,
  '009_prompt_v1': m009,
  '010_session_events_v1': m010,
  '011_session_commits': m011,
  '012_session_storage': m012,
  '013_dialogue_tokens': m013,
  '014_end_users': m014,
  '015_labels': m015,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations),
  getMigrationName: (name) => name,
  getMigration: async (name) => {
    const m = migrations[name];
    if (!m) throw new Error(`unknown migration ${name}`);
    return m;
  },
};
