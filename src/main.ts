import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './log.js';
import { checkPostgres, checkRedis, describeFailure, listenError, postgresError } from './startup-errors.js';
import { collectStartupGarbage } from './startup-garbage.js';

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
  export --address host:port [--all-revisions] <session_id>...
                        write genie sessions as JSON lines (one SessionRecord per line, proto3 JSON) on
                        stdout: every revision with --all-revisions, else the current one
  import --address host:port [--keep-ids] [file]
                        import the sessions of JSON lines written by export (from file, else stdin), each
                        all or nothing: new ids, or the exported ones with --keep-ids (a taken id is
                        refused); prints counts and one line per refused session, exit code 1 if any
                        was. export and import use the API key in PARLEY_API_KEY
  import --from genie-flow --source redis://… --model-type <Class>=<model type> [--prefix genie-flow]
                        [--timestamp-offset +00:00] --address host:port
                        migration: imports every genie-flow session of the Redis into the account of
                        PARLEY_API_KEY at a running server (README, Migrating from genie-flow)
  import --from smarter --source postgres://… --address host:port [--llm-client <name>=<id>]… [--llm-client-id <id>]
                        migration: imports every prompt of a smarter database with its history, tool calls
                        and plugin usage into the account of PARLEY_API_KEY (README, Migrating from smarter)
  help                  show this text (also --help or -h, after any command)

options: --version (-v) prints the version. Configuration comes from the environment; see README.md.
TLS for describe, export, import and purge --address: --cacert ca.pem (the CA of the server's certificate), and
--cert client.pem --key client.key for a server that requires mutual TLS.`;

const commands = new Set(['serve', 'migrate', 'describe', 'purge', 'export', 'import', 'help']);

function version(): string {
  // ../package.json from src/ (and from a compiled dist/ alike).
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Waits for the write: process.exit would cut a pending write to a pipe short. */
function print(text: string): Promise<void> {
  return new Promise<void>((resolve) => process.stdout.write(`${text}\n`, () => resolve()));
}

/** Reaches the configured Postgres and Redis once, so a start-up failure names which one and why. */
async function checkStorage(config: Pick<Config, 'databaseUrl' | 'redisUrl' | 'redisCluster'>): Promise<void> {
  if (config.databaseUrl) await checkPostgres(config.databaseUrl);
  if (config.redisUrl) await checkRedis(config.redisUrl, config.redisCluster);
}

/**
 * grpc-js logs a failed bind on stderr itself (`E No address added …`) before rejecting; at its default
 * verbosity that line is muted during start-up, since the rejection becomes parley's own one line. A
 * verbosity the operator asked for (GRPC_VERBOSITY=DEBUG/INFO) is left alone.
 */
async function quietGrpcDuring<T>(fn: () => Promise<T>): Promise<T> {
  const chosen = (process.env.GRPC_NODE_VERBOSITY ?? process.env.GRPC_VERBOSITY ?? '').toUpperCase();
  if (chosen === 'DEBUG' || chosen === 'INFO' || chosen === 'NONE') return fn();
  const { setLogVerbosity, logVerbosity } = await import('@grpc/grpc-js');
  setLogVerbosity(logVerbosity.NONE);
  try {
    return await fn();
  } finally {
    setLogVerbosity(logVerbosity.ERROR);
  }
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    options: {
      address: { type: 'string' },
      'older-than': { type: 'string' },
      'batch-size': { type: 'string' },
      'all-revisions': { type: 'boolean' },
      'keep-ids': { type: 'boolean' },
      from: { type: 'string' },
      cacert: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  const command = positionals[0] ?? 'serve';
  if (values.version === true) {
    await print(version());
    return 0;
  }
  if (command === 'help' || (values.help === true && commands.has(command))) {
    await print(usage);
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
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const clientTls = { caFile: str(values.cacert), certFile: str(values.cert), keyFile: str(values.key) };

  switch (command) {
    case 'serve': {
      const { startApp, CLOSE_DEADLINE_MS } = await import('./app.js');
      await checkStorage(config);
      // SIGHUP re-reads the TLS files; taken before listening, so an early one cannot end the process. Without
      // TLS it keeps its default: it ends the process.
      const onHangup: { reloadTls?: () => void } = {};
      if (config.tls) process.on('SIGHUP', () => onHangup.reloadTls?.());
      // SIGTERM and SIGINT are taken before start-up too: a signal with no listener ends the process at once,
      // and a supervisor may signal the moment it sees the process (or reads "listening", a moment before the
      // handlers would otherwise be in place). One that arrives while starting stops the server once it serves;
      // a second one (the listeners are gone) ends the process at once.
      const signalled = new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      const app = await quietGrpcDuring(() => startApp(config, logger)).catch((err: unknown) => {
        throw listenError(err, config.listen) ?? (config.databaseUrl && isPostgresError(err) ? postgresError(err, config.databaseUrl) : err);
      });
      onHangup.reloadTls = () => void app.tls?.reload('SIGHUP');
      if (!config.databaseUrl) collectStartupGarbage();
      const signal = await signalled;
      logger.info('shutting down', { signal, graceMs: config.shutdownGraceMs });
      // A backstop should stop itself ever hang (stop bounds every step; this bounds stop).
      setTimeout(() => {
        logger.error('shutdown did not finish in time; exiting');
        process.exit(1);
      }, config.shutdownGraceMs + CLOSE_DEADLINE_MS + 2_000).unref();
      await app.stop();
      logger.info('stopped');
      return 0;
    }
    case 'migrate': {
      const { openStorage } = await import('./app.js');
      const { migrate } = await import('./storage/db.js');
      await checkStorage({ ...config, redisUrl: undefined });
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
        const { clientCredentials } = await import('./transport/tls.js');
        await print(await describe(address, positionals[1], await clientCredentials(clientTls)));
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
      // Run here (not at a server), purge opens the storage itself: reach it first so a failure names it.
      if (!address) await checkStorage(config);
      try {
        await print(await purgeCommand(config, { olderThan, batchSize: batch ? Number(batch) : undefined, address, tls: clientTls }));
        return 0;
      } catch (err) {
        if (!address) throw err;
        process.stderr.write(`parley: purge: ${(err as Error).message}\n`);
        return 1;
      }
    }
    case 'export':
    case 'import': {
      if (command === 'import' && values.from !== undefined) {
        // A migration reads another system and parses its own flags (any other --from is refused there).
        if (values.from === 'smarter') {
          const { smarterImportCommand } = await import('./transfer/from-smarter.js');
          return smarterImportCommand(argv, { apiKey: process.env.PARLEY_API_KEY || undefined, print });
        }
        const { genieFlowImportCommand } = await import('./transfer/from-genie-flow.js');
        return genieFlowImportCommand(argv, { apiKey: process.env.PARLEY_API_KEY || undefined, print });
      }
      if (typeof values.address !== 'string') {
        process.stderr.write(`parley: ${command} needs --address host:port, the server to ${command === 'export' ? 'read the sessions from' : 'import them into'}\n`);
        return 2;
      }
      const transfer = { address: values.address, tls: clientTls, apiKey: process.env.PARLEY_API_KEY || undefined };
      const out = { line: print };
      try {
        const { exportCommand, importCommand } = await import('./transfer/cli.js');
        return command === 'export'
          ? await exportCommand({ ...transfer, allRevisions: values['all-revisions'] === true, sessionIds: positionals.slice(1) }, out)
          : await importCommand({ ...transfer, keepIds: values['keep-ids'] === true, file: positionals[1] }, out);
      } catch (err) {
        process.stderr.write(`parley: ${command}: ${(err as Error).message}\n`);
        return 1;
      }
    }
    default:
      process.stderr.write(`parley: unknown command ${command}\n${usage}\n`);
      return 2;
  }
}

/** A server-side Postgres error: it carries a five-character SQLSTATE and a severity. */
function isPostgresError(err: unknown): boolean {
  const e = err as { code?: unknown; severity?: unknown };
  return typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && typeof e.severity === 'string';
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Every failure is one line naming what failed (a port in use, a missing database, an unreachable
    // Redis, a locked data dir); the stack only with PARLEY_LOG_LEVEL=debug, for failures not foreseen.
    process.stderr.write(`${describeFailure(err, process.env.PARLEY_LOG_LEVEL === 'debug')}\n`);
    process.exit(1);
  },
);
