import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { openStorage, startApp } from './app.js';
import { migrate } from './storage/db.js';

const usage = `usage: parley <command>

commands:
  serve                 migrate the database, then serve gRPC on PARLEY_LISTEN (default 127.0.0.1:50051)
  migrate               apply pending database migrations and exit
  help                  show this text

Configuration comes from the environment; see README.md.`;

async function main(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, strict: false });
  const command = positionals[0] ?? 'serve';
  if (command === 'help' || command === '--help') {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`parley: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);

  switch (command) {
    case 'serve': {
      const app = await startApp(config, logger);
      await new Promise<void>((resolve) => {
        const onSignal = (signal: string) => {
          logger.info('shutting down', { signal, graceMs: config.shutdownGraceMs });
          app.stop().then(resolve, resolve);
        };
        process.once('SIGTERM', onSignal);
        process.once('SIGINT', onSignal);
      });
      logger.info('stopped');
      return 0;
    }
    case 'migrate': {
      const { db, store } = await openStorage({ ...config, redisUrl: undefined });
      const applied = await migrate(db);
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
      await store.close();
      await db.destroy();
      return 0;
    }
    default:
      process.stderr.write(`parley: unknown command ${command}\n${usage}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`parley: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
