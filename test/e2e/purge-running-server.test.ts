import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status } from '@grpc/grpc-js';
import { AdminServiceClient } from '../../src/gen/parley/admin/v1/admin.js';
import { GenieServiceClient } from '../../src/gen/parley/genie/v1/genie.js';
import { PromptServiceClient } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createScratchDatabase, env, uniqueName } from '../helpers/backends.js';
import { ADMIN_TOKEN, bearer, createTenant, rpc, type TestServer } from '../helpers/harness.js';
import { freePort, startParleyProcess } from '../helpers/processes.js';
import { parleyBin } from '../helpers/build.js';
import { code, genie, modelType } from '../genie/fixtures.js';

const run = promisify(execFile);
const bin = parleyBin();

test('parley purge against a running server: a held data dir is refused, --address purges in the server, and it stays purged', async (t) => {
  t.timeout(240_000); // two cold starts of the server on a loaded machine
  const scratch = env.databaseUrl ? await createScratchDatabase(env.databaseUrl) : undefined;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'parley-running-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const childEnv: Record<string, string> = {
    DATABASE_URL: scratch?.url ?? '',
    REDIS_URL: env.redisUrl ?? '',
    PARLEY_REDIS_PREFIX: `${uniqueName('parley_t')}:`,
    PARLEY_DATA_DIR: dataDir,
    PARLEY_LISTEN: address,
    PARLEY_ADMIN_TOKEN: ADMIN_TOKEN,
    PARLEY_LOG_LEVEL: 'info',
  };
  let server = await startParleyProcess(childEnv);
  const clients = () => {
    const admin = new AdminServiceClient(address, credentials.createInsecure());
    const prompt = new PromptServiceClient(address, credentials.createInsecure());
    const genieClient = new GenieServiceClient(address, credentials.createInsecure());
    const s = { admin, prompt, genie: genieClient, adminMd: bearer(ADMIN_TOKEN) } as unknown as TestServer;
    return { s, close: () => [admin, prompt, genieClient].forEach((c) => c.close()) };
  };
  try {
    let c = clients();
    const tenant = await createTenant(c.s);
    const p = (await rpc(c.s.prompt, c.s.prompt.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, tenant.md)).prompt!;
    const g = genie(c.s, tenant);
    await g.register(modelType());
    const expired = await g.create('qa', { topic: 'x' }, new Date(Date.now() - 60_000));
    const kept = await g.create('qa', { topic: 'y' });
    await g.get(expired.sessionId); // a hot copy in the server's store

    const cliEnv = { ...process.env, ...childEnv, PARLEY_LOG_LEVEL: 'silent' };
    if (!scratch) {
      const refused = await t.throwsAsync<Error & { code?: number; stderr?: string; stdout?: string }>(
        run(process.execPath, [bin, 'purge', '--older-than', '0s'], { env: cliEnv }),
      );
      t.is(refused?.code, 1);
      t.true(refused?.stderr?.includes(dataDir), refused?.stderr);
      t.true(refused?.stderr?.includes(`process ${server.child.pid}`), refused?.stderr);
      t.regex(refused?.stderr ?? '', /--address/);
      t.is(refused?.stdout, '');
      t.truthy((await rpc(c.s.prompt, c.s.prompt.getPrompt, { id: p.id, sessionKey: '' }, tenant.md)).prompt, 'the refused purge changed nothing');
    }

    const noToken = await t.throwsAsync<Error & { code?: number; stderr?: string }>(
      run(process.execPath, [bin, 'purge', '--older-than', '0s', '--address', address], { env: { ...cliEnv, PARLEY_ADMIN_TOKEN: 'wrong-token-0123456789' } }),
    );
    t.is(noToken?.code, 1);
    t.regex(noToken?.stderr ?? '', /answered/);

    const out = await run(process.execPath, [bin, 'purge', '--older-than', '0s', '--address', address], { env: cliEnv });
    t.regex(out.stdout, /^purged 1 prompts \(0 history entries, 0 tool calls, 0 plugin usages\), 1 genie sessions and \d+ session tombstones/m);

    t.is(code(await t.throwsAsync(rpc(c.s.prompt, c.s.prompt.getPrompt, { id: p.id, sessionKey: '' }, tenant.md))), status.NOT_FOUND);
    t.is(code(await t.throwsAsync(g.get(expired.sessionId))), status.NOT_FOUND, 'the serving process dropped its hot copy');
    t.is((await g.get(kept.sessionId)).revision, 1);

    c.close();
    await server.stop();
    server = await startParleyProcess(childEnv);
    c = clients();
    t.is(code(await t.throwsAsync(rpc(c.s.prompt, c.s.prompt.getPrompt, { id: p.id, sessionKey: '' }, tenant.md))), status.NOT_FOUND, 'still gone after a restart');
    t.is(code(await t.throwsAsync(genie(c.s, tenant).get(expired.sessionId))), status.NOT_FOUND);
    c.close();
  } finally {
    await server.stop();
    await scratch?.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
});
