// `parley import --from genie-flow` end to end: a genie-flow dump written into Redis in genie-flow's own
// serialization, the compiled CLI importing it into a running parley (on the backends the environment
// selects), and every imported session read back through the read RPCs as a client would.
import test from 'ava';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Actor, DialogueFormat } from '../../src/gen/parley/genie/v1/genie.js';
import { parleySessionId } from '../../src/transfer/genie-flow.js';
import { createTenant, startTestServer, type TestServer } from '../helpers/harness.js';
import { realRedisUrl, redisClusterUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { parleyBin } from '../helpers/build.js';
import { bufCurl } from '../helpers/buf-curl.js';
import { genieFlowDump } from '../helpers/genie-flow-dump.js';
import { genie, modelType, step } from '../genie/fixtures.js';

const withRedis = testWhen(realRedisUrl !== undefined, 'no Redis to hold the genie-flow dump: set REDIS_URL or PARLEY_TEST_REDIS_URL');

let s: TestServer;
let bin: string;
test.before(async () => {
  if (realRedisUrl === undefined && redisClusterUrl === undefined) return;
  bin = parleyBin();
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The parley side of the Interview app: v1 had `name`, v2 renamed it `user_name` and added `score`. */
const machine = {
  states: ['intro', 'ask', 'done'],
  initialState: 'intro',
  transitions: [
    { fromState: 'intro', eventName: 'start', toState: 'ask', actor: Actor.ACTOR_ASSISTANT },
    { fromState: 'ask', eventName: 'answer', toState: 'done', actor: Actor.ACTOR_USER },
  ],
};
const nullable = (type: string) => ({ type: [type, 'null'] });
const v1 = modelType({ name: 'interview', schemaVersion: 1, stateMachine: machine, jsonSchema: { type: 'object', additionalProperties: false, properties: { name: nullable('string'), age: nullable('integer') } } });
const v2 = modelType({
  name: 'interview',
  schemaVersion: 2,
  stateMachine: machine,
  jsonSchema: { type: 'object', additionalProperties: false, properties: { user_name: nullable('string'), age: nullable('integer'), score: { type: 'number' } } },
  upgrades: [step(1, { renameField: { oldName: 'name', newName: 'user_name' } })],
});

withRedis('parley import --from genie-flow: imports a genie-flow dump, refuses with reasons, reads back through every read RPC; a rerun imports nothing', async (t) => {
  t.timeout(180_000);
  const redis = new Redis(realRedisUrl!);
  const prefix = uniqueName('genieflow');
  const dump = genieFlowDump(prefix);
  t.teardown(async () => {
    await redis.del(...dump.strings.keys(), ...dump.hashes.keys());
    redis.disconnect();
  });
  for (const [k, v] of dump.strings) await redis.set(k, v);
  for (const [k, fields] of dump.hashes) await redis.hset(k, ...[...fields].flat());

  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(v1);
  await g.register(v2);
  const apiKey = String(tenant.md.get('authorization')[0]).replace(/^Bearer /, '');
  const args = ['import', '--from', 'genie-flow', '--source', realRedisUrl!, '--prefix', prefix, '--model-type', 'Interview@0=interview@1', '--model-type', 'Interview=interview', '--timestamp-offset', '+02:00', '--address', s.address];

  const started = process.hrtime.bigint();
  const first = await run(args, { PARLEY_API_KEY: apiKey });
  t.log(`first run: ${Number(process.hrtime.bigint() - started) / 1e6} ms for 6 objects`);
  t.is(first.code, 1, `refusals make the run fail:\n${first.stdout}${first.stderr}`);
  t.is(first.stderr, '');
  const lines = first.stdout.trim().split('\n');
  t.deepEqual(lines.slice(-3), ['imported: 3', 'already present: 0', 'refused: 3 (malformed 1, unknown-state 1, unmapped-class 1)']);
  t.deepEqual(
    lines.slice(0, -3).sort(),
    [
      `refused "${prefix}:object:Interview:${dump.ids.archived}": unknown-state: state "archived" is not a state of interview version 2`,
      `refused "${prefix}:object:Interview:${dump.ids.notSnappy}": malformed: the object is flagged compressed but is not a Snappy block`,
      `refused "${prefix}:object:Survey:${dump.ids.survey}": unmapped-class: no --model-type maps class Survey (schema version 0)`,
    ].sort(),
  );

  // The compressed session at genie-flow's current version: every part of it.
  const { ulidId, hexId, legacyId } = dump.ids;
  const a = await g.getFull(ulidId);
  t.like(a.session, { sessionId: ulidId, modelType: 'interview', schemaVersion: 2, state: 'ask', actor: Actor.ACTOR_ASSISTANT, actorInput: 'Thanks, Ada.\nHow old are you?', revision: 1, dialogueLength: 3 });
  t.deepEqual(a.session!.fields, { user_name: 'Ada', age: 36, score: 1 });
  t.deepEqual(a.session!.createTime, dump.expected.dialogueA[0]!.timestamp);
  t.deepEqual(a.session!.updateTime, dump.expected.dialogueA[2]!.timestamp);
  const expectedElements = dump.expected.dialogueA.map((e) => ({ actor: { assistant: Actor.ACTOR_ASSISTANT, user: Actor.ACTOR_USER }[e.actor], actorText: e.actorText, timestamp: e.timestamp }));
  t.deepEqual(
    a.session!.dialogue.map((e) => ({ actor: e.actor, actorText: e.actorText, timestamp: e.timestamp })),
    expectedElements,
  );
  const page1 = await g.listDialogue(ulidId, 2);
  const page2 = await g.listDialogue(ulidId, 2, page1.nextPageToken);
  t.deepEqual([...page1.elements, ...page2.elements].map((e) => ({ actor: e.actor, actorText: e.actorText, timestamp: e.timestamp })), expectedElements);
  t.is(page2.nextPageToken, '');
  t.is(await g.format(ulidId, DialogueFormat.DIALOGUE_FORMAT_CHAT), '[ASSISTANT]: Welcome! What is your name?\n\n[USER]: Ada — Ada Lovelace 🙂\n\n[ASSISTANT]: Thanks, Ada.\nHow old are you?\n');
  const keys = await g.keys(ulidId);
  t.deepEqual(keys.entries.map((e) => e.key), ['persistence', 'user_info']);
  t.is((await g.getSecondary(ulidId, 'user_info')).value.toString(), dump.expected.userValue);
  t.is((await g.getSecondary(ulidId, 'persistence')).value.toString(), dump.expected.persistenceValue);

  // The uncompressed one at genie-flow's old version: stored at parley version 1, read upgraded to 2.
  const hexSession = await g.get(parleySessionId('Interview', hexId));
  t.is(hexSession.sessionId, `${hexId.slice(0, 8)}-${hexId.slice(8, 12)}-${hexId.slice(12, 16)}-${hexId.slice(16, 20)}-${hexId.slice(20)}`);
  t.like(hexSession, { schemaVersion: 2, state: 'intro', dialogueLength: 1 });
  t.deepEqual(hexSession.fields, { user_name: 'Grace' });
  t.deepEqual(hexSession.dialogue.map((e) => [e.actor, e.actorText, e.timestamp]), [[Actor.ACTOR_SYSTEM, 'You are an interviewer.', new Date('2025-03-02T08:00:00Z')]]);
  t.deepEqual((await g.keys(hexSession.sessionId)).entries, []);

  // Not a UUID in genie-flow: a UUIDv5 here, no dialogue yet.
  const legacy = await g.get(parleySessionId('Interview', legacyId));
  t.like(legacy, { state: 'intro', actor: Actor.ACTOR_UNSPECIFIED, actorInput: '', dialogueLength: 0 });
  t.deepEqual(legacy.fields, { user_name: null, age: null });

  // A JSON caller sees the same session, timestamps in RFC 3339.
  const json = await bufCurl(s.address, 'parley.genie.v1.GenieService/ListDialogue', { session_id: ulidId }, `Bearer ${apiKey}`);
  t.deepEqual(
    json.elements.map((e: { actor: string; timestamp: string }) => [e.actor, e.timestamp]),
    [
      ['ACTOR_ASSISTANT', '2025-03-01T10:00:00.123Z'],
      ['ACTOR_USER', '2025-03-01T10:00:12.123Z'],
      ['ACTOR_ASSISTANT', '2025-03-01T10:00:13.623Z'],
    ],
  );

  const listed = await g.list('interview');
  t.is(listed.sessions.length, 3);

  const second = await run(args, { PARLEY_API_KEY: apiKey });
  t.is(second.code, 1);
  t.deepEqual(second.stdout.trim().split('\n').slice(-3), ['imported: 0', 'already present: 3', 'refused: 3 (malformed 1, unknown-state 1, unmapped-class 1)']);
  t.is((await g.list('interview')).sessions.length, 3, 'nothing imported twice');
  t.is((await g.get(ulidId)).revision, 1);

  // Session ids are unique across accounts: the same dump into another account finds them taken.
  const other = await createTenant(s);
  await genie(s, other).register(v1);
  await genie(s, other).register(v2);
  const third = await run(args, { PARLEY_API_KEY: String(other.md.get('authorization')[0]).replace(/^Bearer /, '') });
  t.is(third.code, 1);
  t.deepEqual(third.stdout.trim().split('\n').slice(-3), ['imported: 0', 'already present: 0', 'refused: 6 (id-taken 3, malformed 1, unknown-state 1, unmapped-class 1)']);
  t.regex(third.stdout, new RegExp(`^refused "${prefix}:object:Interview:${ulidId}": id-taken: its id ${ulidId} is taken outside this account`, 'm'));
});

const PYTHON = '/usr/bin/python3';
const pythonReady = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc']).status === 0;
const withPython = testWhen(realRedisUrl !== undefined && pythonReady, realRedisUrl === undefined ? 'no Redis to hold the genie-flow dump' : 'python3-grpcio and python3-grpc-tools (Debian) are not installed');

withPython('parley import --from genie-flow: the Python client reads a moved session and loads its secondary values as genie-flow does', async (t) => {
  t.timeout(180_000);
  const redis = new Redis(realRedisUrl!);
  const prefix = uniqueName('genieflow');
  const dump = genieFlowDump(prefix);
  const stubs = mkdtempSync(path.join(tmpdir(), 'parley-py-'));
  t.teardown(async () => {
    await redis.del(...dump.strings.keys(), ...dump.hashes.keys());
    redis.disconnect();
    rmSync(stubs, { recursive: true, force: true });
  });
  for (const [k, v] of dump.strings) await redis.set(k, v);
  for (const [k, fields] of dump.hashes) await redis.hset(k, ...[...fields].flat());
  const tenant = await createTenant(s);
  await genie(s, tenant).register(v1);
  await genie(s, tenant).register(v2);
  const apiKey = String(tenant.md.get('authorization')[0]).replace(/^Bearer /, '');
  const r = await run(['import', '--from', 'genie-flow', '--source', realRedisUrl!, '--prefix', prefix, '--model-type', 'Interview=interview', '--timestamp-offset', '+02:00', '--address', s.address], { PARLEY_API_KEY: apiKey });
  // Without a mapping for genie-flow's schema version 0, the old session goes to version 2, whose JSON Schema
  // has no `name`: the server refuses it and says where.
  t.regex(r.stdout, /^imported: 2$/m, r.stdout);
  t.regex(r.stdout, new RegExp(`^refused "${prefix}:object:Interview:${dump.ids.hexId}": refused-by-server: INVALID_ARGUMENT: records\\[1\\]\\.revision\\.fields.*name`, 'm'), r.stdout);

  const exec = promisify(execFile);
  await exec('scripts/gen-python.sh', [stubs], { encoding: 'utf8', timeout: 120_000 });
  const out = await exec(PYTHON, ['test/python/genie_flow_read.py', stubs, s.address, apiKey, dump.ids.ulidId], { encoding: 'utf8', timeout: 60_000 });
  const read = JSON.parse(out.stdout) as Record<string, unknown>;
  t.deepEqual(read, {
    state: 'ask',
    actor: 'ACTOR_ASSISTANT',
    fields: { user_name: 'Ada', age: 36, score: 1 },
    dialogue: dump.expected.dialogueA.map((e) => ({ actor: `ACTOR_${e.actor.toUpperCase()}`, timestamp: e.timestamp.toISOString(), actor_text: e.actorText })),
    secondary: {
      persistence: { class: 'genie_flow.model.persistence.Persistence', schema_version: 0, value: { level: 1 } },
      user_info: {
        class: 'genie_flow.model.user.User',
        schema_version: 0,
        value: { email: 'ada@example.com', firstname: 'Ada', lastname: 'Lovelace', custom_properties: { team: 'analytical' } },
      },
    },
  });
});

withRedis('parley import --from genie-flow: a bad command line or an unknown model type exits 2 and names the problem', async (t) => {
  const tenant = await createTenant(s);
  const apiKey = String(tenant.md.get('authorization')[0]).replace(/^Bearer /, '');
  const base = ['import', '--from', 'genie-flow', '--source', realRedisUrl!, '--prefix', uniqueName('genieflow'), '--address', s.address];
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [base, { PARLEY_API_KEY: apiKey }, /at least one --model-type/],
    [[...base, '--model-type', 'Interview'], { PARLEY_API_KEY: apiKey }, /--model-type "Interview" is not <Class>/],
    [[...base, '--model-type', 'A=b', '--timestamp-offset', '2h'], { PARLEY_API_KEY: apiKey }, /--timestamp-offset must be/],
    [[...base, '--model-type', 'A=b', '--concurrency', '0'], { PARLEY_API_KEY: apiKey }, /--concurrency must be a whole number from 1 to 32/],
    [[...base, '--model-type', 'A=b'], { PARLEY_API_KEY: '' }, /PARLEY_API_KEY must hold the API key/],
    [base.slice(0, -2).concat('--model-type', 'A=b'), { PARLEY_API_KEY: apiKey }, /--address host:port is needed/],
    [[...base, '--model-type', 'A=b', '--keep-ids'], { PARLEY_API_KEY: apiKey }, /Unknown option '--keep-ids'/],
    [[...base, '--model-type', 'A=nope'], { PARLEY_API_KEY: apiKey }, /model type nope is not registered in the API key's account/],
    [['import', '--from', 'smarterish', '--source', realRedisUrl!, '--model-type', 'A=b'], { PARLEY_API_KEY: apiKey }, /--from must be genie-flow/],
  ];
  for (const [args, env, message] of cases) {
    const r = await run(args, env);
    t.is(r.code, 2, `${args.join(' ')}\n${r.stderr}`);
    t.regex(r.stderr, message);
    t.is(r.stdout, '');
  }
});

const withCluster = testWhen(redisClusterUrl !== undefined, 'set PARLEY_TEST_REDIS_CLUSTER_URL (scripts/redis-cluster.sh start)', true);

withCluster('parley import --from genie-flow: a Redis Cluster as the source is refused (scanning one node would import a part)', async (t) => {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(v1);
  const apiKey = String(tenant.md.get('authorization')[0]).replace(/^Bearer /, '');
  const r = await run(['import', '--from', 'genie-flow', '--source', redisClusterUrl!, '--model-type', 'Interview=interview', '--address', s.address], { PARLEY_API_KEY: apiKey });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /the source is a node of a Redis Cluster/);
  t.is(r.stdout, '');
});
