import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { credentials, Metadata, type CallOptions, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadConfig, type Config } from '../../src/config.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { startApp, type App } from '../../src/app.js';
import { AdminServiceClient } from '../../src/gen/parley/admin/v1/admin.js';
import { PromptServiceClient } from '../../src/gen/parley/prompt/v1/prompt.js';
import { GenieServiceClient } from '../../src/gen/parley/genie/v1/genie.js';
import { HealthClient } from '../../src/gen/grpc/health/v1/health.js';
import { createScratchDatabase, env, uniqueName } from './backends.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestServer {
  app: App;
  address: string;
  admin: AdminServiceClient;
  prompt: PromptServiceClient;
  genie: GenieServiceClient;
  health: HealthClient;
  /** Metadata carrying the admin token. */
  adminMd: Metadata;
  stop(): Promise<void>;
}

/**
 * Starts a whole parley on a free port over the backends the environment selects, isolated from every
 * other test file: its own Postgres database (or in-memory PGlite) and its own Redis key prefix.
 */
export async function startTestServer(overrides: Partial<Config> = {}, logger: Logger = silentLogger): Promise<TestServer> {
  // A test that names its database (several replicas on one, or one behind a proxy) manages it itself.
  const scratch = env.databaseUrl && overrides.databaseUrl === undefined ? await createScratchDatabase(env.databaseUrl) : undefined;
  const config: Config = {
    ...loadConfig({}),
    listen: '127.0.0.1:0',
    databaseUrl: scratch?.url,
    redisUrl: env.redisUrl,
    dataDir: 'memory',
    adminToken: ADMIN_TOKEN,
    logLevel: 'silent',
    redisPrefix: `${uniqueName('parley_t')}:`,
    shutdownGraceMs: 2_000,
    ...overrides,
  };
  const app = await startApp(config, logger);
  const address = `127.0.0.1:${app.port}`;
  const creds = credentials.createInsecure();
  const admin = new AdminServiceClient(address, creds);
  const prompt = new PromptServiceClient(address, creds);
  const genie = new GenieServiceClient(address, creds, {
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': config.maxMessageBytes,
  });
  const health = new HealthClient(address, creds);
  const adminMd = bearer(ADMIN_TOKEN);
  return {
    app,
    address,
    admin,
    prompt,
    genie,
    health,
    adminMd,
    stop: async () => {
      for (const c of [admin, prompt, genie, health]) c.close();
      await app.stop();
      await app.store.kv.clear().catch(() => {});
      await scratch?.drop();
    },
  };
}

export function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

// The last overload of every generated unary method; TypeScript infers Req and Res from it.
type UnaryMethod<Req, Res> = (
  req: Req,
  md: Metadata,
  options: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

/** Promisifies one generated unary method: `await rpc(client, client.getPrompt, req, md)`. */
export function rpc<Req, Res>(
  client: Client,
  method: UnaryMethod<Req, Res>,
  req: Req,
  md: Metadata = new Metadata(),
  options: Partial<CallOptions> = {},
): Promise<Res> {
  return new Promise((resolve, reject) => method.call(client, req, md, options, (err, res) => (err ? reject(err) : resolve(res))));
}

export interface Tenant {
  accountId: string;
  accountNumber: string;
  userProfileId: string;
  apiKeyId: string;
  md: Metadata;
  llmClientId: string;
  llmClientName: string;
}

/** An account with one user profile, an API key for it and one LLM client. */
export async function createTenant(s: TestServer, llmClientName = 'hr'): Promise<Tenant> {
  const { account } = await rpc(s.admin, s.admin.createAccount, { accountNumber: '', displayName: 'Test', requestId: '' }, s.adminMd);
  const { userProfile } = await rpc(
    s.admin,
    s.admin.createUserProfile,
    { accountId: account!.id, username: 'ada', email: 'ada@example.com', requestId: '' },
    s.adminMd,
  );
  const key = await rpc(s.admin, s.admin.createApiKey, { userProfileId: userProfile!.id, description: 'test', requestId: '' }, s.adminMd);
  const { llmClient } = await rpc(
    s.admin,
    s.admin.createLlmClient,
    { accountId: account!.id, name: llmClientName, description: '', requestId: '' },
    s.adminMd,
  );
  return {
    accountId: account!.id,
    accountNumber: account!.accountNumber,
    userProfileId: userProfile!.id,
    apiKeyId: key.apiKey!.id,
    md: bearer(key.secret),
    llmClientId: llmClient!.id,
    llmClientName: llmClient!.name,
  };
}

/** The google.rpc.Status details of an error whose type URL is `type.googleapis.com/google.rpc.<type>`. */
function details(err: ServiceError, type: string): Uint8Array[] {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (!raw || typeof raw === 'string') return [];
  // google.rpc.Status.details (3) → Any { type_url (1), value (2) }
  return submessages(raw, 3)
    .filter((a) => submessages(a, 1).some((u) => text(u) === `type.googleapis.com/google.rpc.${type}`))
    .flatMap((a) => submessages(a, 2));
}

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** The BadRequest field violations of an error, decoded from grpc-status-details-bin as any client would. */
export function violatedFields(err: ServiceError): string[] {
  // BadRequest.field_violations (1) → FieldViolation.field (1)
  return details(err, 'BadRequest').flatMap((v) => submessages(v, 1).flatMap((violation) => submessages(violation, 1).map(text)));
}

/** The google.rpc.ErrorInfo of an error, or undefined when it carries none. */
export function errorInfo(err: ServiceError): { reason: string; domain: string; metadata: Record<string, string> } | undefined {
  const info = details(err, 'ErrorInfo')[0];
  if (!info) return undefined;
  // ErrorInfo { reason = 1; domain = 2; map<string, string> metadata = 3 } (map entries: key = 1, value = 2)
  const entries = submessages(info, 3).map((e) => [text(submessages(e, 1)[0] ?? new Uint8Array()), text(submessages(e, 2)[0] ?? new Uint8Array())] as const);
  return {
    reason: text(submessages(info, 1)[0] ?? new Uint8Array()),
    domain: text(submessages(info, 2)[0] ?? new Uint8Array()),
    metadata: Object.fromEntries(entries),
  };
}

/** The google.rpc.RetryInfo delay of an error in milliseconds, or undefined when it carries none. */
export function retryDelayMs(err: ServiceError): number | undefined {
  const info = details(err, 'RetryInfo')[0];
  const duration = info && submessages(info, 1)[0];
  if (!duration) return undefined;
  const r = new BinaryReader(duration);
  let seconds = 0;
  let nanos = 0;
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (no === 1) seconds = Number(r.int64());
    else if (no === 2) nanos = r.int32();
    else r.skip(type);
  }
  return seconds * 1000 + nanos / 1e6;
}

function submessages(bytes: Uint8Array, fieldNo: number): Uint8Array[] {
  const r = new BinaryReader(bytes);
  const out: Uint8Array[] = [];
  while (r.pos < r.len) {
    const [no, type] = r.tag();
    if (no === fieldNo && type === WireType.LengthDelimited) out.push(r.bytes());
    else r.skip(type);
  }
  return out;
}
