// Knex configuration for the CLI (`npx tsx node_modules/knex/bin/cli.js migrate:latest`) and for tools;
// the server builds the same configuration through src/storage/db.ts when `parley migrate`/`serve` runs.
import { loadConfig } from './src/config.js';
import { knexConfig } from './src/storage/db.js';

const config = loadConfig();
export default knexConfig({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
