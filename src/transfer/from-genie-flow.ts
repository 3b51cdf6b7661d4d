/**
 * `parley import --from genie-flow`: every genie-flow session in a Redis becomes a parley session through
 * ImportSession, one session per call.
 *
 * The contract of a run:
 * - It reads the source only (SCAN in bounded batches — never KEYS —, STRLEN, GET, HLEN, HGETALL); it writes
 *   nothing there and takes none of genie-flow's locks, so run it against a stopped genie-flow or a copy of
 *   its data (a session changing during the run is imported as it was read).
 * - Each session is imported whole or not at all (ImportSession is all or nothing) under its genie-flow id
 *   when that is a UUID, else under a UUIDv5 of its class and id: a second run finds every session it
 *   imported already there (ALREADY_EXISTS) and counts it as present, never as imported.
 * - A session that cannot be imported is refused with a short reason and the run goes on; the run fails
 *   (exit 1) when any was refused. Errors that are not about one session (the server unreachable, the API key
 *   refused) end the run: nothing half-imported is left behind, and a rerun picks up where it stopped.
 * - Single Redis only: a Redis Cluster's keys are spread over its masters and this reader scans one node, so a
 *   cluster node as the source is refused before anything is read.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import type { ChannelCredentials, Metadata, ServiceError } from '@grpc/grpc-js';
import type { SessionRecord } from '../gen/parley/genie/v1/genie.js';
import {
  decodeEnvelope,
  decodeSecondary,
  MAX_IMPORT_BYTES,
  MAX_IMPORT_SECONDARY,
  objectPattern,
  parseModel,
  parseObjectKey,
  parseOffset,
  Refusal,
  secondaryKey,
  show,
  toRecords,
  type RefusalKind,
  type SecondaryValue,
  type Target,
} from './genie-flow.js';
import { describeReport } from './report.js';

/** `--model-type Class[@version]=type[@version]`: which parley type (and version) a class's sessions become. */
export interface Mapping {
  className: string;
  /** Only objects stored at this genie-flow schema version; undefined: any version. */
  genieFlowVersion: number | undefined;
  modelType: string;
  /** undefined: the type's latest version when the run starts. */
  schemaVersion: number | undefined;
}

const MAPPING = /^([A-Za-z_][A-Za-z0-9_]*)(?:@(\d{1,9}))?=([A-Za-z][A-Za-z0-9_.-]{0,99})(?:@(\d{1,9}))?$/;

export function parseMapping(spec: string): Mapping {
  const m = MAPPING.exec(spec);
  if (!m) throw new UsageError(`--model-type ${show(spec)} is not <Class>[@<genie-flow version>]=<parley model type>[@<schema version>]`);
  return { className: m[1]!, genieFlowVersion: m[2] === undefined ? undefined : Number(m[2]), modelType: m[3]!, schemaVersion: m[4] === undefined ? undefined : Number(m[4]) };
}

/** A bad command line: exit 2. */
export class UsageError extends Error {}

/** What ImportSession did with one session's records; a refusal throws a Refusal, anything else ends the run. */
export type Importer = (records: SessionRecord[]) => Promise<'imported' | 'present'>;
/** The model type at a version (the latest when undefined); undefined when the account has no such type. */
export type TypeLookup = (modelType: string, schemaVersion: number | undefined) => Promise<Target | undefined>;

export interface RunOptions {
  prefix: string;
  mappings: readonly Mapping[];
  /** Minutes east of UTC of the hosts that wrote naive dialogue timestamps. */
  naiveOffsetMinutes: number;
  /** SCAN's COUNT hint. */
  scanCount?: number;
  /** Sessions imported at once (default 4). */
  concurrency?: number;
  now?: () => Date;
}

export interface Report {
  imported: number;
  present: number;
  refused: number;
  byKind: Map<RefusalKind, number>;
  /** The first refusals in full (key and reason); the rest are only counted. */
  refusals: Array<{ key: string; kind: RefusalKind; reason: string }>;
}

const MAX_LISTED_REFUSALS = 1000;

/** Imports every session under `options.prefix`, batch by SCAN batch, `concurrency` sessions at a time. */
export async function importGenieFlow(redis: Redis, options: RunOptions, importer: Importer, lookup: TypeLookup): Promise<Report> {
  const targets = await resolveTargets(options.mappings, lookup);
  const report: Report = { imported: 0, present: 0, refused: 0, byKind: new Map(), refusals: [] };
  const refuse = (key: string, r: Refusal) => {
    report.refused++;
    report.byKind.set(r.kind, (report.byKind.get(r.kind) ?? 0) + 1);
    if (report.refusals.length < MAX_LISTED_REFUSALS) report.refusals.push({ key: show(key, 200), kind: r.kind, reason: r.message });
  };
  // SCAN may return a key twice; each is imported once per run.
  const seen = new Set<string>();
  const now = options.now ?? (() => new Date());
  let cursor = '0';
  do {
    const [next, keys] = await redis.scanBuffer(cursor, 'MATCH', objectPattern(options.prefix), 'COUNT', options.scanCount ?? 200);
    cursor = next.toString();
    const fresh = keys.filter((k) => {
      // latin1 keeps every byte: two keys that are not UTF-8 never read as one.
      const key = k.toString('latin1');
      return !seen.has(key) && Boolean(seen.add(key));
    });
    await inPool(fresh, options.concurrency ?? 4, async (rawKey) => {
      const key = rawKey.toString('utf8');
      try {
        const outcome = await importOne(redis, rawKey, key, options, targets, importer, now);
        if (outcome === 'imported') report.imported++;
        else report.present++;
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        refuse(key, err);
      }
    });
  } while (cursor !== '0');
  return report;
}

/** `work` on every item, at most `width` at a time; the first failure stops taking new items and is thrown. */
async function inPool<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { err: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failed) throw failed.err;
}

type Targets = (className: string, genieFlowVersion: number) => Target | undefined;

async function resolveTargets(mappings: readonly Mapping[], lookup: TypeLookup): Promise<Targets> {
  const exact = new Map<string, Target>();
  const byClass = new Map<string, Target>();
  for (const m of mappings) {
    const slot = m.genieFlowVersion === undefined ? m.className : `${m.className}@${m.genieFlowVersion}`;
    if (exact.has(slot) || byClass.has(slot)) throw new UsageError(`--model-type maps ${slot} twice`);
    const target = await lookup(m.modelType, m.schemaVersion);
    if (!target) throw new UsageError(`model type ${m.modelType}${m.schemaVersion === undefined ? '' : ` version ${m.schemaVersion}`} is not registered in the API key's account`);
    (m.genieFlowVersion === undefined ? byClass : exact).set(slot, target);
  }
  return (className, version) => exact.get(`${className}@${version}`) ?? byClass.get(className);
}

async function importOne(redis: Redis, rawKey: Buffer, key: string, options: RunOptions, targets: Targets, importer: Importer, now: () => Date): Promise<'imported' | 'present'> {
  if (!Buffer.from(key, 'utf8').equals(rawKey)) throw new Refusal('malformed', 'the key is not valid UTF-8');
  const id = parseObjectKey(key, options.prefix);
  if (!id) throw new Refusal('malformed', 'the key is not {prefix}:object:{Class}:{session_id}');
  const value = await readString(redis, rawKey);
  const env = decodeEnvelope(value, 'the object');
  const target = targets(id.className, env.schemaVersion);
  if (!target) throw new Refusal('unmapped-class', `no --model-type maps class ${id.className} (schema version ${env.schemaVersion})`);
  const session = parseModel(env, id, options.naiveOffsetMinutes);
  const secondary = await readSecondary(redis, secondaryKey(options.prefix, id.className, id.sessionId));
  return importer(toRecords(session, secondary, target, now()));
}

function wrongType(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('WRONGTYPE');
}

async function readString(redis: Redis, key: Buffer): Promise<Buffer> {
  try {
    if ((await redis.strlen(key)) > MAX_IMPORT_BYTES) throw new Refusal('too-large', `the object is over ${MAX_IMPORT_BYTES} bytes`);
    const value = await redis.getBuffer(key);
    // genie-flow's objects expire; one may go between SCAN and GET.
    if (value === null) throw new Refusal('gone', 'the object expired or was deleted during the import');
    return value;
  } catch (err) {
    if (wrongType(err)) throw new Refusal('malformed', 'the key does not hold a string');
    throw err;
  }
}

async function readSecondary(redis: Redis, key: string): Promise<SecondaryValue[]> {
  try {
    if ((await redis.hlen(key)) > MAX_IMPORT_SECONDARY) throw new Refusal('too-large', `its secondary storage has more than ${MAX_IMPORT_SECONDARY} values`);
    // Field names as bytes too: a reply decoded to strings would mangle one that is not UTF-8.
    const flat = (await redis.callBuffer('HGETALL', key)) as Buffer[];
    const values: SecondaryValue[] = [];
    let bytes = 0;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      bytes += flat[i + 1]!.length;
      if (bytes > MAX_IMPORT_BYTES) throw new Refusal('too-large', `its secondary storage is over ${MAX_IMPORT_BYTES} bytes`);
      values.push(decodeSecondary(flat[i]!, flat[i + 1]!));
    }
    return values;
  } catch (err) {
    if (wrongType(err)) throw new Refusal('malformed', 'its secondary storage key does not hold a hash');
    throw err;
  }
}


const RETRIES = 5;

/**
 * ImportSession over gRPC, one call per session, keeping the session's id. A retry after UNAVAILABLE or a
 * rate limit reuses the call's request id, so an import whose answer was lost is answered, not repeated; a
 * new run uses new ids, so what an earlier run imported answers ALREADY_EXISTS.
 */
export async function grpcImporter(address: string, creds: ChannelCredentials, md: Metadata): Promise<{ importer: Importer; lookup: TypeLookup; close(): void }> {
  const { status } = await import('@grpc/grpc-js');
  const { GenieServiceClient } = await import('../gen/parley/genie/v1/genie.js');
  const { Status } = await import('../gen/google/rpc/status.js');
  const { ErrorInfo, RetryInfo, BadRequest } = await import('../gen/google/rpc/error_details.js');
  const client = new GenieServiceClient(address, creds, { 'grpc.max_send_message_length': 8 * 1024 * 1024 });
  const details = (err: ServiceError) => {
    const raw = err.metadata?.get('grpc-status-details-bin')[0];
    const s = raw && typeof raw !== 'string' ? Status.decode(raw) : undefined;
    const one = <T>(type: string, decode: (b: Uint8Array) => T) => {
      const any = s?.details.find((d) => d.typeUrl === `type.googleapis.com/google.rpc.${type}`);
      return any ? decode(any.value) : undefined;
    };
    return { info: one('ErrorInfo', (b) => ErrorInfo.decode(b)), retry: one('RetryInfo', (b) => RetryInfo.decode(b)), bad: one('BadRequest', (b) => BadRequest.decode(b)) };
  };
  const failure = (what: string, err: ServiceError) => new Error(`${what} at ${address}: ${status[err.code] ?? err.code} ${err.details}`);

  const once = (records: SessionRecord[], requestId: string) =>
    new Promise<void>((resolve, reject) => {
      const call = client.importSession(md, (err) => (err ? reject(err) : resolve()));
      let i = 0;
      const pump = () => {
        while (i < records.length) {
          const ok = call.write({ record: records[i], keepSessionId: i === 0, requestId: i === 0 ? requestId : '' });
          i++;
          if (!ok) return void call.once('drain', pump);
        }
        call.end();
      };
      pump();
    });

  const exists = (sessionId: string) =>
    new Promise<boolean>((resolve, reject) =>
      client.getSession({ sessionId, revision: undefined, dialoguePageSize: 1 }, md, (err) => {
        if (!err) return resolve(true);
        if (err.code === status.NOT_FOUND) return resolve(false);
        reject(failure('GetSession', err));
      }),
    );
  // Session ids are unique across the deployment: ALREADY_EXISTS may be an earlier run's import into this
  // account, or another account's session (or a deleted one's id, kept while its tombstone is).
  const presentOrTaken = async (sessionId: string): Promise<'present'> => {
    if (await exists(sessionId)) return 'present';
    throw new Refusal('id-taken', `its id ${sessionId} is taken outside this account (another account's session, or a deleted one's)`);
  };

  const importer: Importer = async (records) => {
    // An earlier run's import is found with one read, instead of sending every record to hear ALREADY_EXISTS.
    if (await exists(records[0]!.header!.sessionId)) return 'present';
    const requestId = randomUUID();
    for (let attempt = 1; ; attempt++) {
      try {
        await once(records, requestId);
        return 'imported';
      } catch (e) {
        const err = e as ServiceError;
        const { info, retry, bad } = details(err);
        if (err.code === status.ALREADY_EXISTS) return presentOrTaken(records[0]!.header!.sessionId);
        if (err.code === status.INVALID_ARGUMENT || err.code === status.FAILED_PRECONDITION || (err.code === status.RESOURCE_EXHAUSTED && info?.reason === 'IMPORT_SIZE_LIMIT')) {
          const v = bad?.fieldViolations[0];
          throw new Refusal('refused-by-server', `${info?.reason ?? status[err.code]}: ${v ? `${v.field}: ${v.description}` : err.details}`.slice(0, 400));
        }
        const transient = err.code === status.UNAVAILABLE || (err.code === status.RESOURCE_EXHAUSTED && info?.reason === 'RATE_LIMIT');
        if (!transient || attempt >= RETRIES) throw failure('ImportSession', err);
        const delayMs = retry?.retryDelay ? retry.retryDelay.seconds * 1000 + retry.retryDelay.nanos / 1e6 : 200 * 2 ** attempt;
        await new Promise((r) => setTimeout(r, Math.min(delayMs, 30_000)));
      }
    }
  };

  const lookup: TypeLookup = (name, schemaVersion) =>
    new Promise((resolve, reject) =>
      client.getModelType({ name, schemaVersion }, md, (err, res) => {
        if (err?.code === status.NOT_FOUND) return resolve(undefined);
        if (err) return reject(failure('GetModelType', err));
        const t = res.modelType!;
        resolve({ modelType: t.name, schemaVersion: t.schemaVersion, states: new Set(t.stateMachine?.states ?? []), tokenizerEncoding: t.tokenizerEncoding });
      }),
    );
  return { importer, lookup, close: () => client.close() };
}

export const usage = `usage: parley import --from genie-flow --source redis://host:6379/1 --model-type <Class>=<model type> …
                     --address host:port [--prefix genie-flow] [--timestamp-offset +00:00]
  --source            the Redis genie-flow's object store uses (its db included)
  --prefix            genie-flow's application_prefix (default genie-flow)
  --model-type        Class[@<genie-flow schema version>]=<parley model type>[@<schema version>], repeatable:
                      the registered parley type a class's sessions become (its latest version when unset);
                      sessions of classes without one are refused
  --timestamp-offset  the UTC offset of the genie-flow hosts (+HH:MM, -HH:MM or Z; default Z): genie-flow
                      writes dialogue timestamps in local time without an offset
  --concurrency       sessions imported at once, 1–32 (default 4)
  --address           the parley server to import into; the API key comes from PARLEY_API_KEY
TLS: --cacert ca.pem, and --cert client.pem --key client.key for mutual TLS.`;

export interface CommandIo {
  apiKey: string | undefined;
  print(text: string): Promise<void>;
}

/** The command: 0 when every session was imported or present, 1 when any was refused, 2 on a bad command line. */
export async function genieFlowImportCommand(argv: string[], io: CommandIo): Promise<number> {
  let args;
  try {
    args = parseCommand(argv, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`parley: import: ${err.message}\n${usage}\n`);
    return 2;
  }
  const { Redis } = await import('ioredis');
  const { Metadata } = await import('@grpc/grpc-js');
  const { clientCredentials } = await import('../transport/tls.js');
  const md = new Metadata();
  md.set('authorization', `Bearer ${args.apiKey}`);
  const remote = await grpcImporter(args.address, await clientCredentials(args.tls), md);
  const redis = new Redis(args.source, { lazyConnect: true, maxRetriesPerRequest: 2, enableOfflineQueue: false });
  try {
    try {
      await redis.connect();
    } catch (err) {
      process.stderr.write(`parley: import: cannot reach the genie-flow Redis: ${(err as Error).message}\n`);
      return 1;
    }
    // SCAN on one node of a cluster would see a third of the keys and report a partial import as whole.
    if (/^cluster_enabled:1\s*$/m.test(await redis.info('cluster'))) {
      process.stderr.write('parley: import: the source is a node of a Redis Cluster; the genie-flow import reads a single Redis (import from each master\'s copy, or from a restore of the data into one Redis)\n');
      return 2;
    }
    const report = await importGenieFlow(redis, args, remote.importer, remote.lookup);
    await io.print(describeReport(report));
    return report.refused ? 1 : 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`parley: import: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`parley: import: ${(err as Error).message}\n`);
    return 1;
  } finally {
    redis.disconnect();
    remote.close();
  }
}

function parseCommand(argv: string[], io: CommandIo) {
  try {
    return checkCommand(argv, io);
  } catch (err) {
    // node:util's own complaints (an unknown option, a missing value) are bad command lines too.
    if (String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message);
    throw err;
  }
}

function checkCommand(argv: string[], io: CommandIo) {
  const { values } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      from: { type: 'string' },
      source: { type: 'string' },
      prefix: { type: 'string', default: 'genie-flow' },
      'model-type': { type: 'string', multiple: true, default: [] },
      'timestamp-offset': { type: 'string', default: 'Z' },
      concurrency: { type: 'string', default: '4' },
      address: { type: 'string' },
      cacert: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  if (values.from !== 'genie-flow') throw new UsageError('--from must be genie-flow');
  if (!values.source || !/^rediss?:\/\//.test(values.source)) throw new UsageError('--source must be a redis:// or rediss:// URL');
  if (values['model-type'].length === 0) throw new UsageError('at least one --model-type <Class>=<model type> is needed');
  if (!values.prefix) throw new UsageError('--prefix must not be empty');
  const naiveOffsetMinutes = parseOffset(values['timestamp-offset']);
  if (naiveOffsetMinutes === undefined) throw new UsageError('--timestamp-offset must be +HH:MM, -HH:MM or Z');
  if (!/^([1-9]|[12]\d|3[0-2])$/.test(values.concurrency)) throw new UsageError('--concurrency must be a whole number from 1 to 32');
  if (!values.address) throw new UsageError('--address host:port is needed: the server to import into');
  if (!io.apiKey) throw new UsageError('PARLEY_API_KEY must hold the API key of the account to import into');
  return {
    source: values.source,
    prefix: values.prefix,
    mappings: values['model-type'].map(parseMapping),
    naiveOffsetMinutes,
    concurrency: Number(values.concurrency),
    address: values.address,
    apiKey: io.apiKey,
    tls: { caFile: values.cacert, certFile: values.cert, keyFile: values.key },
  };
}
