import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';

// The heavy modules (grpc-js, knex, PGlite) are imported by the commands that need them, so `help` and a
// bad environment answer at once.

const usage = `usage: parley <command>

commands:
  serve                 migrate the database, then serve gRPC on PARLEY_LISTEN (default 127.0.0.1:50051)
  migrate               apply pending database migrations and exit
  describe [symbol]     describe a service, message or enum of a running server over reflection
                        (lists services without a symbol); --address host:port, default PARLEY_LISTEN
  purge --older-than 30d [--batch-size 500] [--address host:port]
                        retention: delete prompts idle for longer than the given age with their logs,
                        genie sessions past their retention with all their content, and session
                        tombstones older than the age, in small batches; forget request ids older
                        than 24 h. With --address (and PARLEY_ADMIN_TOKEN) the running server does it
                        (AdminService.PurgeExpiredData); an embedded data dir a server holds is refused
  help                  show this text

Configuration comes from the environment; see README.md.`;

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    options: { address: { type: 'string' }, 'older-than': { type: 'string' }, 'batch-size': { type: 'string' } },
  });
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
      const { startApp, CLOSE_DEADLINE_MS } = await import('./app.js');
      const app = await startApp(config, logger);
      await new Promise<void>((resolve) => {
        const onSignal = (signal: string) => {
          logger.info('shutting down', { signal, graceMs: config.shutdownGraceMs });
          // A backstop should stop itself ever hang (stop bounds every step; this bounds stop).
          setTimeout(() => {
            logger.error('shutdown did not finish in time; exiting');
            process.exit(1);
          }, config.shutdownGraceMs + CLOSE_DEADLINE_MS + 2_000).unref();
          app.stop().then(resolve, resolve);
        };
        process.once('SIGTERM', onSignal);
        process.once('SIGINT', onSignal);
      });
      logger.info('stopped');
      return 0;
    }
    case 'migrate': {
      const { openStorage } = await import('./app.js');
      const { migrate } = await import('./storage/db.js');
      const { db, store } = await openStorage({ ...config, redisUrl: undefined });
      const applied = await migrate(db);
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
      await store.close();
      await db.destroy();
      return 0;
    }
    case 'describe': {
      const address = typeof values.address === 'string' ? values.address : config.listen;
      try {
        const { describe } = await import('./transport/describe.js');
        const text = await describe(address, positionals[1]);
        // Wait for the write: process.exit would cut a pending write to a pipe short.
        await new Promise<void>((resolve) => process.stdout.write(`${text}\n`, () => resolve()));
        return 0;
      } catch (err) {
        process.stderr.write(`parley: describe ${positionals[1] ?? ''} at ${address}: ${(err as Error).message}\n`);
        return 1;
      }
    }
    case 'purge': {
      const olderThan = values['older-than'];
      const batch = values['batch-size'];
      if (typeof olderThan !== 'string' || !/^\d+(ms|s|m|h|d)$/.test(olderThan)) {
        process.stderr.write('parley: purge needs --older-than <age>, e.g. --older-than 30d\n');
        return 2;
      }
      if (batch !== undefined && (typeof batch !== 'string' || !/^[1-9]\d{0,4}$|^100000$/.test(batch))) {
        process.stderr.write('parley: --batch-size must be a whole number from 1 to 100000\n');
        return 2;
      }
      const { purgeCommand } = await import('./maintenance/cli.js');
      const address = typeof values.address === 'string' ? values.address : undefined;
      try {
        const line = await purgeCommand(config, { olderThan, batchSize: batch ? Number(batch) : undefined, address });
        await new Promise<void>((resolve) => process.stdout.write(`${line}\n`, () => resolve()));
        return 0;
      } catch (err) {
        if (!address) throw err;
        process.stderr.write(`parley: purge: ${(err as Error).message}\n`);
        return 1;
      }
    }
    default:
      process.stderr.write(`parley: unknown command ${command}\n${usage}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    // A locked data dir is an operator's situation, not a crash: the message says what to do, no stack.
    if (err instanceof Error && err.name === 'DataDirLockedError') {
      process.stderr.write(`parley: ${err.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`parley: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
