/**
 * `parley import --from smarter`: every prompt of a smarter database (its `prompt_prompt` table with
 * `prompt_prompthistory`, `prompt_prompttoolcall` and `prompt_promptpluginusage`) becomes a parley prompt
 * through ImportPrompt, one prompt per call.
 *
 * The contract of a run:
 * - It reads the source only, in keyset pages (never one unbounded query), and writes nothing there.
 * - Ownership: a parley prompt belongs to the account and user profile of the API key that imports it;
 *   smarter's `user_profile_id` is not carried over.
 * - LLM clients: smarter's `llm_client_id` points at `llm_client_llmclient`; `--llm-client <name>=<id>` maps
 *   a smarter LLM client (by name) to an LLM client of the account, `--llm-client-id <id>` takes the rest.
 *   A prompt of an unmapped LLM client is refused.
 * - Plugins: matched by name (`plugin_pluginmeta.name`) to the account's plugins. A tool call whose plugin
 *   has no namesake is imported without a plugin (a tool call's plugin is optional in parley too); a plugin
 *   usage whose plugin has none refuses its prompt (the usage names a plugin, or it says nothing).
 * - Messages go through parley's message converter; a message it cannot keep as it is refuses its prompt
 *   (nothing is imported lossy).
 * - Each prompt is imported whole or not at all under its session key: a second run finds every prompt it
 *   imported already there and counts it as present, never as imported.
 * - A refused prompt is reported with a short reason and the run goes on; the run fails (exit 1) when any
 *   was refused. Errors that are not about one prompt (the server unreachable, the key refused) end the run.
 */
import { isDeepStrictEqual } from 'node:util';
import { parseArgs } from 'node:util';
import type { ChannelCredentials, Metadata, ServiceError } from '@grpc/grpc-js';
import type { ClientConfig } from 'pg';
import type { ImportPromptRequest, PromptRecord } from '../gen/parley/prompt/v1/prompt.js';
import { fromOpenAiMessage, toOpenAiMessage } from '../prompt/messages.js';
import type { ClientTlsFiles } from '../transport/tls.js';

/** A bad command line: exit 2. */
export class UsageError extends Error {}

/** Why one prompt was not imported. */
export class Refusal extends Error {
  constructor(
    readonly kind: 'unmapped-llm-client' | 'unmapped-plugin' | 'lossy-message' | 'malformed' | 'too-large' | 'refused-by-server' | 'key-taken',
    message: string,
  ) {
    super(message);
  }
}

/** Rows per page read from the source. */
const PAGE = 200;
/** ImportPrompt's bound on log entries per prompt. */
const MAX_ENTRIES = 10_000;

type Row = Record<string, unknown>;

/** What the reader needs from the source: one parameterized query. */
export interface Source {
  query(sql: string, params: unknown[]): Promise<Row[]>;
}

export interface SmarterOptions {
  /** smarter LLM client name → parley LLM client id. */
  llmClients: ReadonlyMap<string, string>;
  /** The LLM client of prompts whose smarter LLM client is not in `llmClients`; undefined refuses them. */
  defaultLlmClientId: string | undefined;
  /** The account's plugins: name → id. */
  plugins: ReadonlyMap<string, string>;
}

/** Imports one prompt; `records` reads it from the source, only when the account does not have it yet. */
export type Importer = (sessionKey: string, records: () => Promise<PromptRecord[]>) => Promise<'imported' | 'present'>;

export interface Report {
  imported: number;
  present: number;
  refused: number;
  byKind: Map<string, number>;
  refusals: Array<{ key: string; kind: string; reason: string }>;
}

const MAX_LISTED_REFUSALS = 1000;

const show = (v: unknown, max = 80) => {
  const s = JSON.stringify(String(v));
  return s.length > max ? `${s.slice(0, max)}…"` : s;
};

/** Every prompt of the source, page by page in id order. */
export async function importSmarter(source: Source, options: SmarterOptions, importer: Importer): Promise<Report> {
  const report: Report = { imported: 0, present: 0, refused: 0, byKind: new Map(), refusals: [] };
  const hasTags = (await source.query(`select to_regclass('taggit_taggeditem') is not null as present`, []))[0]?.present === true;
  let after = 0n;
  for (;;) {
    const prompts = await source.query(
      `select p.*, c.name as llm_client_name from prompt_prompt p join llm_client_llmclient c on c.id = p.llm_client_id
       where p.id > $1 order by p.id limit $2`,
      [after.toString(), PAGE],
    );
    for (const p of prompts) {
      const key = `prompt ${String(p.id)} (session ${show(p.session_key, 24)})`;
      try {
        if ((await importer(String(p.session_key), () => recordsOf(source, p, options, hasTags))) === 'imported') report.imported++;
        else report.present++;
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        report.refused++;
        report.byKind.set(err.kind, (report.byKind.get(err.kind) ?? 0) + 1);
        if (report.refusals.length < MAX_LISTED_REFUSALS) report.refusals.push({ key, kind: err.kind, reason: err.message });
      }
    }
    if (prompts.length < PAGE) return report;
    after = BigInt(String(prompts[prompts.length - 1]!.id));
  }
}

/** One log table's rows of a prompt, in id order, page by page; more than MAX_ENTRIES refuses the prompt. */
async function rowsOf(source: Source, sql: string, promptId: unknown): Promise<Row[]> {
  const out: Row[] = [];
  let after = '0';
  for (;;) {
    const page = await source.query(`${sql} where t.prompt_id = $1 and t.id > $2 order by t.id limit $3`, [promptId, after, PAGE]);
    out.push(...page);
    if (out.length > MAX_ENTRIES) throw new Refusal('too-large', `more than ${MAX_ENTRIES} log entries`);
    if (page.length < PAGE) return out;
    after = String(page[page.length - 1]!.id);
  }
}

const time = (v: unknown, what: string): Date => {
  if (v instanceof Date) return v;
  throw new Refusal('malformed', `${what} is null`);
};

const object = (v: unknown, what: string): Record<string, unknown> | undefined => {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  throw new Refusal('malformed', `${what} is not a JSON object`);
};

/** smarter keeps annotations as a JSON list of one-key objects (or an object); parley as a string map. */
function annotationsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const add = (o: unknown) => {
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Refusal('malformed', 'annotations are not a list of objects');
    for (const [k, val] of Object.entries(o)) out[k] = typeof val === 'string' ? val : JSON.stringify(val);
  };
  if (v === null || v === undefined) return { ...out };
  if (Array.isArray(v)) v.forEach(add);
  else add(v);
  return { ...out };
}

/** A stored smarter message as a proto ChatMessage, refused when the converter would change it. */
async function messageOf(m: unknown, where: string) {
  const data = fromOpenAiMessage(m);
  if (!isDeepStrictEqual(toOpenAiMessage(data), m)) {
    const role = m && typeof m === 'object' ? (m as { role?: unknown }).role : undefined;
    throw new Refusal('lossy-message', `${where}: a message (role ${show(role, 24)}) parley cannot keep as it is`);
  }
  const { toChatMessage } = await import('../transport/prompt-handlers.js');
  return toChatMessage(data);
}

async function recordsOf(source: Source, p: Row, options: SmarterOptions, hasTags: boolean): Promise<PromptRecord[]> {
  const clientName = String(p.llm_client_name);
  const llmClientId = options.llmClients.get(clientName) ?? options.defaultLlmClientId;
  if (!llmClientId) throw new Refusal('unmapped-llm-client', `its LLM client ${show(clientName, 40)} is not mapped (--llm-client ${clientName}=<id> or --llm-client-id)`);
  const createTime = p.created_at instanceof Date ? p.created_at : time(p.updated_at, 'created_at');
  const tags = hasTags
    ? (
        await source.query(
          `select t.name from taggit_taggeditem i join taggit_tag t on t.id = i.tag_id join django_content_type ct on ct.id = i.content_type_id
           where ct.app_label = 'prompt' and ct.model = 'prompt' and i.object_id = $1 order by t.name limit 65`,
          [p.id],
        )
      ).map((r) => String(r.name))
    : [];
  const records: PromptRecord[] = [
    {
      header: {
        // smarter has no labels.
        labels: {},
        sessionKey: String(p.session_key),
        name: String(p.name ?? ''),
        description: String(p.description ?? ''),
        version: String(p.version ?? ''),
        annotations: annotationsOf(p.annotations),
        tags,
        ipAddress: p.ip_address === null ? '' : String(p.ip_address),
        userAgent: String(p.user_agent ?? ''),
        url: String(p.url ?? ''),
        createTime,
        updateTime: p.updated_at instanceof Date ? p.updated_at : createTime,
        endUserId: '',
        llmClientId,
      },
    },
  ];
  const history = await rowsOf(source, 'select t.* from prompt_prompthistory t', p.id);
  for (const h of history) {
    const where = `history ${String(h.id)}`;
    const messages = h.messages === null ? [] : h.messages;
    if (!Array.isArray(messages)) throw new Refusal('malformed', `${where}: messages are not a list`);
    records.push({
      history: {
        request: object(h.request, `${where}: request`),
        response: object(h.response, `${where}: response`),
        messages: await Promise.all(messages.map((m) => messageOf(m, where))),
        createTime: time(h.created_at, `${where}: created_at`),
      },
    });
  }
  const calls = await rowsOf(source, 'select t.*, pm.name as plugin_name from prompt_prompttoolcall t left join plugin_pluginmeta pm on pm.id = t.plugin_id', p.id);
  for (const c of calls) {
    const where = `tool call ${String(c.id)}`;
    records.push({
      toolCall: {
        pluginId: c.plugin_name === null ? '' : (options.plugins.get(String(c.plugin_name)) ?? ''),
        functionName: String(c.function_name ?? ''),
        functionArgs: String(c.function_args ?? ''),
        request: object(c.request, `${where}: request`),
        response: object(c.response, `${where}: response`),
        createTime: time(c.created_at, `${where}: created_at`),
      },
    });
  }
  const usage = await rowsOf(source, 'select t.*, pm.name as plugin_name from prompt_promptpluginusage t join plugin_pluginmeta pm on pm.id = t.plugin_id', p.id);
  for (const u of usage) {
    const where = `plugin usage ${String(u.id)}`;
    const pluginId = options.plugins.get(String(u.plugin_name));
    if (!pluginId) throw new Refusal('unmapped-plugin', `${where}: the account has no plugin named ${show(u.plugin_name, 40)}`);
    records.push({ pluginUsage: { pluginId, inputText: String(u.input_text ?? ''), createTime: time(u.created_at, `${where}: created_at`) } });
  }
  if (records.length - 1 > MAX_ENTRIES) throw new Refusal('too-large', `more than ${MAX_ENTRIES} log entries`);
  records.push({ trailer: { historyCount: history.length, toolCallCount: calls.length, pluginUsageCount: usage.length } });
  return records;
}

/** The report as the command prints it: each refusal, then the counts. */
export function describeReport(r: Report): string {
  const lines = r.refusals.map((x) => `refused ${x.key}: ${x.kind}: ${x.reason}`);
  if (r.refused > r.refusals.length) lines.push(`… and ${r.refused - r.refusals.length} more refused`);
  const kinds = [...r.byKind].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, n]) => `${k} ${n}`);
  lines.push(`imported: ${r.imported}`, `already present: ${r.present}`, `refused: ${r.refused}${kinds.length ? ` (${kinds.join(', ')})` : ''}`);
  return lines.join('\n');
}

/**
 * ImportPrompt over gRPC, one call per prompt, and the account's plugins by name. A prompt whose session
 * key the account already has is present; one whose key another account holds is refused.
 */
async function grpcImporter(address: string, creds: ChannelCredentials, md: Metadata): Promise<{ importer: Importer; plugins(): Promise<Map<string, string>>; close(): void }> {
  const { status } = await import('@grpc/grpc-js');
  const { PromptServiceClient } = await import('../gen/parley/prompt/v1/prompt.js');
  const { Status } = await import('../gen/google/rpc/status.js');
  const { ErrorInfo, BadRequest } = await import('../gen/google/rpc/error_details.js');
  const client = new PromptServiceClient(address, creds, { 'grpc.max_send_message_length': 8 * 1024 * 1024 });
  const details = (err: ServiceError) => {
    const raw = err.metadata?.get('grpc-status-details-bin')[0];
    const s = raw && typeof raw !== 'string' ? Status.decode(raw) : undefined;
    const one = <T>(type: string, decode: (b: Uint8Array) => T) => {
      const any = s?.details.find((d) => d.typeUrl === `type.googleapis.com/google.rpc.${type}`);
      return any ? decode(any.value) : undefined;
    };
    return { info: one('ErrorInfo', (b) => ErrorInfo.decode(b)), bad: one('BadRequest', (b) => BadRequest.decode(b)) };
  };
  const failure = (what: string, err: ServiceError) => new Error(`${what} at ${address}: ${status[err.code] ?? err.code} ${err.details}`);

  const exists = (sessionKey: string) =>
    new Promise<boolean>((resolve, reject) =>
      client.getPrompt({ sessionKey, id: undefined }, md, (err) => {
        if (!err) return resolve(true);
        // A key that is not parley's shape is refused by ImportPrompt with its reason.
        if (err.code === status.NOT_FOUND || err.code === status.INVALID_ARGUMENT) return resolve(false);
        reject(failure('GetPrompt', err));
      }),
    );

  const once = (records: PromptRecord[]) =>
    new Promise<void>((resolve, reject) => {
      const call = client.importPrompt(md, (err) => (err ? reject(err) : resolve()));
      let i = 0;
      const pump = () => {
        while (i < records.length) {
          const ok = call.write({ record: records[i++] } satisfies ImportPromptRequest);
          if (!ok) return void call.once('drain', pump);
        }
        call.end();
      };
      pump();
    });

  const importer: Importer = async (sessionKey, records) => {
    // An earlier run's import is found with one read, before its logs are read from the source.
    if (await exists(sessionKey)) return 'present';
    const built = await records();
    try {
      await once(built);
      return 'imported';
    } catch (e) {
      const err = e as ServiceError;
      const { info, bad } = details(err);
      if (err.code === status.ALREADY_EXISTS) {
        if (await exists(sessionKey)) return 'present';
        throw new Refusal('key-taken', 'its session key is taken outside this account');
      }
      if (err.code === status.INVALID_ARGUMENT || err.code === status.NOT_FOUND || err.code === status.RESOURCE_EXHAUSTED && info?.reason === 'IMPORT_SIZE_LIMIT') {
        const v = bad?.fieldViolations[0];
        throw new Refusal('refused-by-server', `${info?.reason ?? status[err.code]}: ${v ? `${v.field}: ${v.description}` : err.details}`.slice(0, 400));
      }
      throw failure('ImportPrompt', err);
    }
  };

  const plugins = async () => {
    const out = new Map<string, string>();
    let pageToken = '';
    do {
      const page = await new Promise<{ plugins: Array<{ id: string; name: string }>; nextPageToken: string }>((resolve, reject) =>
        client.listPlugins({ pageSize: 1000, pageToken }, md, (err, res) => (err ? reject(failure('ListPlugins', err)) : resolve(res))),
      );
      for (const p of page.plugins) out.set(p.name, p.id);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  };
  return { importer, plugins, close: () => client.close() };
}

export const usage = `usage: parley import --from smarter --source postgres://user@host:5432/smarter --address host:port
                     [--llm-client <smarter LLM client name>=<LLM client id>]… [--llm-client-id <LLM client id>]
  --source         the smarter database (a libpq URL); read only
  --llm-client     maps the prompts of one smarter LLM client (by name) to an LLM client of the account; repeatable
  --llm-client-id  the LLM client of the account for every prompt --llm-client does not map (otherwise refused)
  --address        the parley server to import into; the API key comes from PARLEY_API_KEY
Plugins are matched by name to the account's plugins. TLS: --cacert ca.pem, and --cert client.pem --key client.key.`;

export interface CommandIo {
  apiKey: string | undefined;
  print(text: string): Promise<void>;
}

interface Command {
  source: string;
  address: string;
  apiKey: string;
  llmClients: Map<string, string>;
  defaultLlmClientId: string | undefined;
  tls: ClientTlsFiles;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function parseCommand(argv: string[], io: CommandIo): Command {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        from: { type: 'string' },
        source: { type: 'string' },
        'llm-client': { type: 'string', multiple: true, default: [] },
        'llm-client-id': { type: 'string' },
        address: { type: 'string' },
        cacert: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.from !== 'smarter') throw new UsageError('--from must be smarter');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${show(positionals[1])}`);
  if (!values.source || !/^postgres(ql)?:\/\//.test(values.source)) throw new UsageError('--source must be a postgres:// URL');
  if (!values.address) throw new UsageError('--address host:port is needed: the server to import into');
  if (!io.apiKey) throw new UsageError('PARLEY_API_KEY must hold the API key of the account to import into');
  const llmClients = new Map<string, string>();
  for (const spec of values['llm-client']) {
    const at = spec.lastIndexOf('=');
    const id = spec.slice(at + 1);
    if (at < 1 || !UUID.test(id)) throw new UsageError(`--llm-client ${show(spec)} is not <smarter name>=<LLM client id>`);
    if (llmClients.has(spec.slice(0, at))) throw new UsageError(`--llm-client maps ${show(spec.slice(0, at))} twice`);
    llmClients.set(spec.slice(0, at), id);
  }
  const fallback = values['llm-client-id'];
  if (fallback !== undefined && !UUID.test(fallback)) throw new UsageError('--llm-client-id must be a UUID');
  if (llmClients.size === 0 && fallback === undefined) throw new UsageError('no LLM client: give --llm-client <name>=<id> or --llm-client-id <id>');
  return { source: values.source, address: values.address, apiKey: io.apiKey, llmClients, defaultLlmClientId: fallback, tls: { caFile: values.cacert, certFile: values.cert, keyFile: values.key } };
}

/** The command: 0 when every prompt was imported or present, 1 when any was refused, 2 on a bad command line. */
export async function smarterImportCommand(argv: string[], io: CommandIo): Promise<number> {
  let args: Command;
  try {
    args = parseCommand(argv, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`parley: import: ${err.message}\n${usage}\n`);
    return 2;
  }
  const { Metadata } = await import('@grpc/grpc-js');
  const { clientCredentials } = await import('../transport/tls.js');
  const pg = (await import('pg')).default;
  const md = new Metadata();
  md.set('authorization', `Bearer ${args.apiKey}`);
  const remote = await grpcImporter(args.address, await clientCredentials(args.tls), md);
  const client = new pg.Client({ connectionString: args.source } satisfies ClientConfig);
  try {
    try {
      await client.connect();
      // Read only, and one snapshot: a prompt is read with the logs it had at one moment.
      await client.query('begin transaction isolation level repeatable read read only');
    } catch (err) {
      process.stderr.write(`parley: import: cannot read the smarter database: ${(err as Error).message}\n`);
      return 1;
    }
    const source: Source = { query: async (sql, params) => (await client.query(sql, params)).rows as Row[] };
    const report = await importSmarter(source, { llmClients: args.llmClients, defaultLlmClientId: args.defaultLlmClientId, plugins: await remote.plugins() }, remote.importer);
    await io.print(describeReport(report));
    return report.refused ? 1 : 0;
  } catch (err) {
    process.stderr.write(`parley: import: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await client.end().catch(() => undefined);
    remote.close();
  }
}
