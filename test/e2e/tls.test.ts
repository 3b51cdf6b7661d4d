import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect } from 'node:tls';
import { promisify } from 'node:util';
import { credentials, status, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import { loadConfig, type Config } from '../../src/config.js';
import { AdminServiceClient } from '../../src/gen/parley/admin/v1/admin.js';
import { HealthClient, HealthCheckResponse_ServingStatus } from '../../src/gen/grpc/health/v1/health.js';
import { ChatRole, PromptServiceClient, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { GenieServiceClient } from '../../src/gen/parley/genie/v1/genie.js';
import { createScratchDatabase, env, testWhen, uniqueName } from '../helpers/backends.js';
import { TestPki } from '../helpers/certs.js';
import { eventually } from '../helpers/eventually.js';
import { ADMIN_TOKEN, bearer, createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { parleyBin } from '../helpers/build.js';
import { freePort, startParleyProcess } from '../helpers/processes.js';

const run = promisify(execFile);
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const withOpenssl = testWhen(hasOpenssl, 'openssl is not installed');
const PYTHON = '/usr/bin/python3';
const pythonReady = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc']).status === 0;
const withPython = testWhen(hasOpenssl && pythonReady, 'openssl, or python3-grpcio and python3-grpc-tools (Debian), are not installed');
const bin = parleyBin();

// The README's TLS section: the start command's variables configure the mTLS server, its sh block is run.
const readme = readFileSync('README.md', 'utf8');
const tlsSection = /## TLS and mutual TLS\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
const shBlocks = [...tlsSection.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');

let pki: TestPki;
let tlsServer: TestServer;
let mtlsServer: TestServer;

test.before(async () => {
  if (!hasOpenssl) return;
  pki = new TestPki();
  pki.ca('ca');
  pki.leaf('server', 'ca', 'server');
  pki.leaf('client', 'ca', 'client');
  pki.ca('rogue');
  pki.leaf('rogue-client', 'rogue', 'client');
  // For rotation: another CA and a server certificate it signed.
  pki.ca('ca2');
  pki.leaf('server2', 'ca2', 'server');
  tlsServer = await startTestServer({ tls: { certFile: pki.file('server.pem'), keyFile: pki.file('server.key'), clientCaFile: undefined, reloadIntervalMs: 0 } });
  mtlsServer = await startTestServer(readmeServer());
});
test.after.always(async () => {
  await tlsServer?.stop();
  await mtlsServer?.stop();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

/** The configuration of the README's TLS start command, its file names taken in the test's PKI directory. */
function readmeServer(): Partial<Config> {
  const start = shBlocks.find((b) => b.includes('npm start')) ?? '';
  const vars = Object.fromEntries([...start.matchAll(/\b(PARLEY_\w+)=(\S+)/g)].map((m) => [m[1]!, m[1]!.startsWith('PARLEY_TLS_') ? pki.file(m[2]!) : m[2]!]));
  const { tls, adminToken } = loadConfig(vars);
  if (!tls?.clientCaFile) throw new Error(`the README's TLS start command does not configure mutual TLS: ${start}`);
  return { tls, adminToken };
}

// A client of its own connection: grpc-js otherwise shares one connection between clients of equal credentials.
// The server is checked as localhost (grpc-js would send the IP as the TLS server name, which Node deprecates).
const ownConnection = { 'grpc.use_local_subchannel_pool': 1, 'grpc.ssl_target_name_override': 'localhost' };

function clientsOf(address: string, creds: ChannelCredentials, adminToken = ADMIN_TOKEN) {
  const admin = new AdminServiceClient(address, creds, ownConnection);
  const prompt = new PromptServiceClient(address, creds, ownConnection);
  const genie = new GenieServiceClient(address, creds, ownConnection);
  const health = new HealthClient(address, creds, ownConnection);
  const s = { address, admin, prompt, genie, health, adminMd: bearer(adminToken) } as unknown as TestServer;
  return { s, close: () => [admin, prompt, genie, health].forEach((c) => c.close()) };
}

const trusting = (ca: string, client?: string) =>
  client ? credentials.createSsl(pki.read(`${ca}.pem`), pki.read(`${client}.key`), pki.read(`${client}.pem`)) : credentials.createSsl(pki.read(`${ca}.pem`));

/** A health check over a connection of its own: its status, or the code of the error. */
async function healthOf(address: string, creds: ChannelCredentials): Promise<string> {
  const { s, close } = clientsOf(address, creds);
  try {
    const r = await rpc(s.health, s.health.check, { service: '' }, undefined, { deadline: Date.now() + 20_000 });
    return HealthCheckResponse_ServingStatus[r.status];
  } catch (err) {
    return status[(err as ServiceError).code];
  } finally {
    close();
  }
}

const openPrompt = (s: TestServer, tenant: Tenant) =>
  rpc(s.prompt, s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md).then((r) => r.prompt!);

const appendHistory = (s: TestServer, tenant: Tenant, promptId: string, content: string) =>
  rpc(
    s.prompt,
    s.prompt.appendHistory,
    { promptId, request: {}, response: {}, messages: [{ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }], requestId: '' },
    tenant.md,
  );

/** The serial number of the certificate a new TLS connection to the port is shown. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
      resolve(socket.getPeerCertificate().serialNumber.toUpperCase());
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

const serialOf = (name: string) => new X509Certificate(pki.read(`${name}.pem`)).serialNumber.toUpperCase();

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (err: ServiceError) => status[err.code],
  );

withOpenssl('TLS: a client trusting the CA creates a tenant, opens a prompt and logs to it; health and reflection answer over TLS', async (t) => {
  const { s, close } = clientsOf(tlsServer.address, trusting('ca'));
  try {
    const tenant = await createTenant(s);
    const p = await openPrompt(s, tenant);
    const logged = await appendHistory(s, tenant, p.id, 'over TLS');
    t.is(logged.revision, 2);
    const { prompt } = await rpc(s.prompt, s.prompt.getPrompt, { id: p.id }, tenant.md);
    t.is(prompt?.revision, 2);
    t.is(await healthOf(tlsServer.address, trusting('ca')), 'SERVING');
    // buf curl reads the schema over reflection on the TLS port.
    const listed = await run(path.resolve('node_modules/.bin/buf'), ['curl', '--protocol', 'grpc', '--cacert', pki.file('ca.pem'), '--list-services', `https://${tlsServer.address}`], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    t.regex(listed.stdout, /^parley\.prompt\.v1\.PromptService$/m);
    t.regex(listed.stdout, /^grpc\.health\.v1\.Health$/m);
  } finally {
    close();
  }
});

withOpenssl('TLS: a plaintext client is refused with UNAVAILABLE and nothing it sent is served', async (t) => {
  const plain = clientsOf(tlsServer.address, credentials.createInsecure());
  const { s, close } = clientsOf(tlsServer.address, trusting('ca'));
  try {
    const marker = `plaintext ${uniqueName('acct')}`;
    t.is(await codeOf(rpc(plain.s.admin, plain.s.admin.createAccount, { accountNumber: '', displayName: marker, requestId: '' }, plain.s.adminMd)), 'UNAVAILABLE');
    t.is(await healthOf(tlsServer.address, credentials.createInsecure()), 'UNAVAILABLE');
    const { accounts } = await rpc(s.admin, s.admin.listAccounts, { pageSize: 1000, pageToken: '' }, s.adminMd);
    t.false(accounts.some((a) => a.displayName === marker), 'the plaintext call created an account');
    // A TLS client that does not trust the server's CA is refused too.
    t.is(await healthOf(tlsServer.address, trusting('rogue')), 'UNAVAILABLE');
  } finally {
    plain.close();
    close();
  }
});

withOpenssl('mutual TLS: no client certificate and one of another CA are refused; a good one works and the API key is still required', async (t) => {
  const address = mtlsServer.address;
  t.is(await healthOf(address, trusting('ca')), 'UNAVAILABLE', 'no client certificate');
  t.is(await healthOf(address, trusting('ca', 'rogue-client')), 'UNAVAILABLE', 'a client certificate of another CA');
  t.is(await healthOf(address, trusting('ca', 'client')), 'SERVING');
  const { s, close } = clientsOf(address, trusting('ca', 'client'), mtlsServer.app.config.adminToken);
  try {
    const tenant = await createTenant(s);
    const p = await openPrompt(s, tenant);
    t.is(p.revision, 1);
    // The certificate lets the connection in; the account still comes from the API key.
    const none = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.getPrompt, { id: p.id }));
    t.is(none?.code, status.UNAUTHENTICATED);
    const wrong = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.getPrompt, { id: p.id }, bearer('pk_not-a-key-of-anyone-at-all')));
    t.is(wrong?.code, status.UNAUTHENTICATED);
    const admin = await t.throwsAsync<ServiceError>(rpc(s.admin, s.admin.listAccounts, { pageSize: 1, pageToken: '' }, tenant.md));
    t.is(admin?.code, status.UNAUTHENTICATED, 'an API key is not the admin token');
  } finally {
    close();
  }
});

withOpenssl('the README: its TLS start command sets mutual TLS, and its buf curl and parley describe commands run as shown', async (t) => {
  t.timeout(120_000);
  const commands = shBlocks.find((b) => b.includes('buf curl'));
  t.truthy(commands, 'the README TLS section has no buf curl block');
  t.false(/\$CURL|^CURL=/m.test(commands!), 'the TLS block must not join the plaintext walk-through');
  const port = mtlsServer.address.split(':')[1]!;
  const script = ['set -euo pipefail', commands!.replaceAll(':50051', `:${port}`).replaceAll('npx buf curl', 'buf curl').replaceAll('node bin/parley.js', `node ${bin}`)].join('\n');
  const r = await run('bash', ['-c', script], {
    cwd: pki.dir,
    encoding: 'utf8',
    timeout: 90_000,
    env: { ...process.env, PATH: `${path.resolve('node_modules/.bin')}:${process.env.PATH}`, PARLEY_LOG_LEVEL: 'silent' },
  }).catch((e: { stdout: string; stderr: string; code: number }) => e);
  t.is('code' in r ? r.code : 0, 0, `the README's TLS commands failed:\n${r.stderr}\n--- stdout ---\n${r.stdout}`);
  t.regex(r.stdout, /"displayName": "Acme over TLS"/);
  t.regex(r.stdout, /^service PromptService \{$/m);
  // The same CreateAccount without the admin token is refused by parley, not by TLS.
  const bare = commands!.split('\n').slice(0, 3).join('\n').replace(/-H "authorization: [^"]*" /, '').replaceAll(':50051', `:${port}`).replaceAll('npx buf curl', 'buf curl');
  const refused = await run('bash', ['-c', bare], { cwd: pki.dir, encoding: 'utf8', env: { ...process.env, PATH: `${path.resolve('node_modules/.bin')}:${process.env.PATH}` } }).catch(
    (e: { stdout: string; stderr: string }) => e,
  );
  t.regex(`${refused.stdout}${refused.stderr}`, /"code": "unauthenticated"/);
});

withOpenssl('the CLI: parley describe needs --cacert for a TLS server and names a file it cannot read', async (t) => {
  const plain = await run(process.execPath, [bin, 'describe', '--address', tlsServer.address], { encoding: 'utf8', env: { ...process.env, PARLEY_LOG_LEVEL: 'silent' } }).catch((e: { code: number; stderr: string }) => e);
  t.is('code' in plain ? plain.code : 0, 1, 'describe over plaintext against a TLS port must fail');
  const missing = await run(process.execPath, [bin, 'describe', '--address', tlsServer.address, '--cacert', '/nonexistent/ca.pem'], { encoding: 'utf8', env: { ...process.env, PARLEY_LOG_LEVEL: 'silent' } }).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.is('code' in missing ? missing.code : 0, 1);
  t.regex(missing.stderr, /--cacert \(\/nonexistent\/ca\.pem\): cannot be read \(ENOENT\)/);
  const ok = await run(process.execPath, [bin, 'describe', '--address', `localhost:${tlsServer.app.port}`, '--cacert', pki.file('ca.pem')], { encoding: 'utf8', env: { ...process.env, PARLEY_LOG_LEVEL: 'silent' } });
  t.regex(ok.stdout, /^parley\.admin\.v1\.AdminService$/m);
});

withOpenssl('the CLI: parley purge --address reaches a mutual TLS server with --cacert, --cert and --key', async (t) => {
  const purge = (...tls: string[]) =>
    run(process.execPath, [bin, 'purge', '--older-than', '3650d', '--address', `localhost:${mtlsServer.app.port}`, ...tls], {
      encoding: 'utf8',
      env: { ...process.env, PARLEY_LOG_LEVEL: 'silent', PARLEY_ADMIN_TOKEN: mtlsServer.app.config.adminToken },
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
  const ok = await purge('--cacert', pki.file('ca.pem'), '--cert', pki.file('client.pem'), '--key', pki.file('client.key'));
  t.false('code' in ok, `purge over mutual TLS failed: ${ok.stderr}`);
  t.regex(ok.stdout, /^purged \d+ prompts .* in \d+ batches; expired \d+ request ids$/m);
  const noCert = await purge('--cacert', pki.file('ca.pem'));
  t.is('code' in noCert ? noCert.code : 0, 1, 'without a client certificate the server refuses the connection');
  t.regex(noCert.stderr, /^parley: purge: the server at localhost:\d+ answered: /);
  const half = await purge('--cacert', pki.file('ca.pem'), '--cert', pki.file('client.pem'));
  t.is('code' in half ? half.code : 0, 1);
  t.regex(half.stderr, /--cert and --key go together/);
});

withPython('mutual TLS: a Python client with grpc.ssl_channel_credentials works with a good certificate and is refused without one', async (t) => {
  t.timeout(120_000);
  const stubs = mkdtempSync(path.join(tmpdir(), 'parley-py-tls-'));
  try {
    await run('scripts/gen-python.sh', [stubs], { encoding: 'utf8', timeout: 120_000 });
    // The certificate names localhost and 127.0.0.1; Python checks the host name as given.
    const target = `localhost:${mtlsServer.app.port}`;
    const py = async (...files: string[]) => {
      const r = await run(PYTHON, ['test/python/tls_client.py', stubs, target, mtlsServer.app.config.adminToken!, ...files.map((f) => pki.file(f))], { encoding: 'utf8', timeout: 60_000 });
      return JSON.parse(r.stdout.trim()) as { code: string; display_name?: string };
    };
    const good = await py('ca.pem', 'client.pem', 'client.key');
    t.is(good.code, 'OK');
    t.is(good.display_name, 'Python over mTLS');
    t.is((await py('ca.pem')).code, 'UNAVAILABLE');
    t.is((await py('ca.pem', 'rogue-client.pem', 'rogue-client.key')).code, 'UNAVAILABLE');
  } finally {
    rmSync(stubs, { recursive: true, force: true });
  }
});

withOpenssl('rotation: after SIGHUP new connections get the new certificate, an open connection and its stream keep working, and a bad file keeps the old one', async (t) => {
  t.timeout(240_000);
  const live = mkdtempSync(path.join(tmpdir(), 'parley-tls-live-'));
  const cert = path.join(live, 'server.pem');
  const key = path.join(live, 'server.key');
  copyFileSync(pki.file('server.pem'), cert);
  copyFileSync(pki.file('server.key'), key);
  const scratch = env.databaseUrl ? await createScratchDatabase(env.databaseUrl) : undefined;
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const server = await startParleyProcess({
    DATABASE_URL: scratch?.url ?? '',
    REDIS_URL: env.redisUrl ?? '',
    PARLEY_REDIS_PREFIX: `${uniqueName('parley_t')}:`,
    PARLEY_DATA_DIR: 'memory',
    PARLEY_LISTEN: address,
    PARLEY_ADMIN_TOKEN: ADMIN_TOKEN,
    PARLEY_LOG_LEVEL: 'info',
    PARLEY_TLS_CERT: cert,
    PARLEY_TLS_KEY: key,
    // Only SIGHUP reloads here, so the test shows that SIGHUP does it.
    PARLEY_TLS_RELOAD_INTERVAL: '0s',
  });
  const old = clientsOf(address, trusting('ca'));
  try {
    t.regex(server.logs(), /"listening".*"tls":"TLS"/);
    t.is(await servedSerial(port), serialOf('server'));
    t.is(await healthOf(address, trusting('ca2')), 'UNAVAILABLE', 'a client trusting only the new CA, before rotation');

    // A connection made before the rotation, with a watch stream open on it.
    const tenant = await createTenant(old.s);
    const p = await openPrompt(old.s, tenant);
    const seen: number[] = [];
    let streamError: ServiceError | undefined;
    const watch = old.s.prompt.watchPrompt({ promptId: p.id, afterRevision: 0 }, tenant.md);
    watch.on('data', (r: WatchPromptResponse) => r.update && !r.update.caughtUp && seen.push(r.update.revision));
    watch.on('error', (e: ServiceError) => (streamError = e));
    await appendHistory(old.s, tenant, p.id, 'before');
    await eventually(() => seen.includes(2), 'the watch to see revision 2');

    // A broken certificate file: the reload is refused with a warning, the old certificate stays.
    writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    server.child.kill('SIGHUP');
    await eventually(() => server.logs().includes('TLS files not reloaded'), 'the warning about the bad file');
    t.regex(server.logs(), /"level":"warn","msg":"TLS files not reloaded; still serving the previous certificate".*PARLEY_TLS_CERT/);
    t.is(server.child.exitCode, null, 'a bad file must not stop the server');
    t.is(await servedSerial(port), serialOf('server'));
    t.is(await healthOf(address, trusting('ca')), 'SERVING');

    // The new set: a certificate of another CA, and its key.
    copyFileSync(pki.file('server2.key'), key);
    copyFileSync(pki.file('server2.pem'), cert);
    server.child.kill('SIGHUP');
    await eventually(() => server.logs().includes('TLS certificate reloaded'), 'the reload');
    t.regex(server.logs(), new RegExp(`"msg":"TLS certificate reloaded; new connections use it".*"serial":"${serialOf('server2')}"`));
    t.is(await servedSerial(port), serialOf('server2'));
    t.is(await healthOf(address, trusting('ca2')), 'SERVING', 'a new connection trusting only the new CA');
    t.is(await healthOf(address, trusting('ca')), 'UNAVAILABLE', 'a new connection trusting only the old CA');

    // The old connection (its client trusts only the old CA, so it cannot have reconnected) still serves calls,
    // and its stream sees the write.
    await appendHistory(old.s, tenant, p.id, 'after');
    await eventually(() => seen.includes(3), 'the watch opened before the rotation to see revision 3');
    t.is(streamError, undefined);
    t.deepEqual(seen, [2, 3]);
    watch.cancel();
  } finally {
    old.close();
    await server.stop();
    await scratch?.drop();
    rmSync(live, { recursive: true, force: true });
  }
});

withOpenssl('rotation: changed files are picked up by polling, without a signal', async (t) => {
  const live = mkdtempSync(path.join(tmpdir(), 'parley-tls-poll-'));
  const cert = path.join(live, 'server.pem');
  const key = path.join(live, 'server.key');
  copyFileSync(pki.file('server.pem'), cert);
  copyFileSync(pki.file('server.key'), key);
  const s = await startTestServer({ tls: { certFile: cert, keyFile: key, clientCaFile: undefined, reloadIntervalMs: 100 } });
  try {
    t.is(await servedSerial(s.app.port), serialOf('server'));
    copyFileSync(pki.file('server2.key'), key);
    copyFileSync(pki.file('server2.pem'), cert);
    await eventually(async () => (await servedSerial(s.app.port)) === serialOf('server2'), 'the new certificate to be served');
    t.is(await healthOf(s.address, trusting('ca2')), 'SERVING');
    t.is(await s.app.tls?.reload('SIGHUP'), 'unchanged');
  } finally {
    await s.stop();
    rmSync(live, { recursive: true, force: true });
  }
});

withOpenssl('start-up: a missing file, a key of another certificate and a bad PEM each stop serve with one line naming the variable, exit 1', async (t) => {
  t.timeout(120_000);
  const serve = (extra: Record<string, string>) =>
    run(process.execPath, [bin, 'serve'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, PARLEY_DATA_DIR: 'memory', PARLEY_LISTEN: '127.0.0.1:0', PARLEY_LOG_LEVEL: 'info', ...extra },
    }).then(
      (r) => ({ code: 0, stderr: r.stderr }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
  const garbage = path.join(pki.dir, 'garbage.pem');
  writeFileSync(garbage, 'this is not PEM\n');
  const [missing, mismatch, bad, alone] = await Promise.all([
    serve({ PARLEY_TLS_CERT: pki.file('nope.pem'), PARLEY_TLS_KEY: pki.file('server.key') }),
    serve({ PARLEY_TLS_CERT: pki.file('server.pem'), PARLEY_TLS_KEY: pki.file('client.key') }),
    serve({ PARLEY_TLS_CERT: pki.file('server.pem'), PARLEY_TLS_KEY: pki.file('server.key'), PARLEY_TLS_CLIENT_CA: garbage }),
    serve({ PARLEY_TLS_CERT: pki.file('server.pem') }),
  ]);
  t.deepEqual(missing, { code: 1, stderr: `parley: PARLEY_TLS_CERT (${pki.file('nope.pem')}): cannot be read (ENOENT)\n` });
  t.deepEqual(mismatch, {
    code: 1,
    stderr: `parley: PARLEY_TLS_KEY (${pki.file('client.key')}): is not the private key of the certificate in PARLEY_TLS_CERT (${pki.file('server.pem')})\n`,
  });
  t.deepEqual(bad, { code: 1, stderr: `parley: PARLEY_TLS_CLIENT_CA (${garbage}): holds no PEM certificate (-----BEGIN CERTIFICATE-----)\n` });
  t.is(alone.code, 2);
  t.regex(alone.stderr, /PARLEY_TLS_KEY: must be set with PARLEY_TLS_CERT/);
  // Never the key's content.
  const keyBody = pki.read('client.key').toString('utf8').split('\n')[1]!;
  t.false(mismatch.stderr.includes(keyBody));
});
