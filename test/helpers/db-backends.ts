import { openDb, type Db } from '../../src/storage/db.js';
import { createScratchDatabase, realPostgresUrl } from './backends.js';

/**
 * The databases a storage test runs on: the embedded one (PGlite in memory) always, and a scratch database on
 * a real server when one is configured. Each `open` gives a fresh database and the way to drop it.
 */
export const dbBackends: Array<{ name: string; open: () => Promise<{ db: Db; drop: () => Promise<void> }>; enabled: boolean }> = [
  { name: 'pglite', open: async () => ({ db: openDb({ databaseUrl: undefined, dataDir: 'memory' }), drop: async () => {} }), enabled: true },
  {
    name: 'postgres',
    open: async () => {
      const scratch = await createScratchDatabase(realPostgresUrl!);
      return { db: openDb({ databaseUrl: scratch.url, dataDir: 'memory' }), drop: scratch.drop };
    },
    enabled: realPostgresUrl !== undefined,
  },
];
