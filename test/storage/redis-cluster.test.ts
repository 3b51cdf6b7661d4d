import type { ExecutionContext } from 'ava';
import type { FastStore } from '../../src/ports/fast-store.js';
import { redisStore } from '../../src/storage/redis-kv.js';
import { hotKey } from '../../src/genie/cache.js';
import { sessionChannel } from '../../src/genie/events.js';
import { promptChannel } from '../../src/prompt/events.js';
import { newSessionKey, promptCacheKey } from '../../src/prompt/rules.js';
import { redisClusterUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { eventually } from '../helpers/eventually.js';
import { hasRedisServer } from '../helpers/processes.js';
import { masterPorts, onNode, ownerOf, PrivateRedisCluster } from '../helpers/redis-cluster.js';
import { createTenant, rpc, startTestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { HealthCheckResponse_ServingStatus as Serving } from '../../src/gen/grpc/health/v1/health.js';

/**
 * parley on a Redis Cluster, beyond the KV/bus contract (which runs on one too): a session's keys share a slot,
 * fan-out is sharded pub/sub on the master owning the channel, and the fenced cache stays correct when a master
 * restarts empty (on a private cluster the test may break, never the shared one).
 */
const shared = testWhen(redisClusterUrl !== undefined, 'set PARLEY_TEST_REDIS_CLUSTER_URL (scripts/redis-cluster.sh start)');
// Serial: each starts and kills Redis servers of its own.
const privateCluster = testWhen(hasRedisServer, 'redis-server is not installed', false, true);

const seedPort = () => Number(new URL(redisClusterUrl!).port);

async function store(t: ExecutionContext, url: string, prefix: string): Promise<FastStore> {
  const s = await redisStore(url, prefix, { cluster: {} });
  t.teardown(() => s.close());
  return s;
}

/** One id per master: ids whose tagged channel `prefix + channelOf(id)` hashes to a slot of that master. */
async function idPerMaster(port: number, masters: number, nameOf: (id: string) => string): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  for (let i = 0; found.size < masters && i < 1000; i++) {
    const id = `s${i}`;
    const owner = await ownerOf(port, nameOf(id));
    if (!found.has(owner)) found.set(owner, id);
  }
  return found;
}

const keyslot = (port: number, key: string) => onNode(port, async (r) => Number(await r.call('CLUSTER', 'KEYSLOT', key)));

shared('every key of a session hashes to the session’s slot, prefix included', async (t) => {
  const prefix = `${uniqueName('kcl')}:`;
  const port = seedPort();
  const sessionId = '0b7c3a5e-5b8e-4d61-9a7e-3f0c2d1e4b5a';
  const genieSlot = await keyslot(port, sessionId);
  t.is(await keyslot(port, prefix + hotKey(sessionId)), genieSlot, 'the hot copy');
  t.is(await keyslot(port, prefix + sessionChannel(sessionId)), genieSlot, 'the session channel');
  const sessionKey = newSessionKey();
  t.is(await keyslot(port, prefix + promptCacheKey(sessionKey)), await keyslot(port, sessionKey), 'the prompt copy, by its session key');
  const promptId = '6a1d9a4c-2f0e-4c3b-8d7a-5e6f7a8b9c0d';
  t.is(await keyslot(port, prefix + promptChannel(promptId)), await keyslot(port, promptId), 'the prompt channel, by its prompt id');
});

shared('every key a running parley writes is the epoch, an API key principal, or carries its session in a hash tag', async (t) => {
  const s = await startTestServer({ redisUrl: redisClusterUrl, redisCluster: { seeds: [] } });
  t.teardown(() => s.stop());
  const tenant = await createTenant(s);
  const openReq = { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
  const prompt = (await rpc(s.prompt, s.prompt.openPrompt, openReq, tenant.md)).prompt!;
  await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: prompt.sessionKey }, tenant.md);
  const g = genie(s, tenant);
  await g.register(modelType({ name: 'loop', jsonSchema: undefined, stateMachine: { states: ['a'], initialState: 'a', transitions: [{ fromState: 'a', eventName: 'go', toState: 'a', actor: Actor.ACTOR_USER }] } }));
  const { sessionId } = await g.create('loop', {});
  await rpc(s.genie, s.genie.getSession, { sessionId, revision: undefined }, tenant.md);

  const prefix = s.app.config.redisPrefix;
  const keys: string[] = [];
  for (const port of await masterPorts(seedPort())) {
    keys.push(...(await onNode(port, (r) => r.keys(`${prefix}*`))).map((k) => k.slice(prefix.length)));
  }
  const kinds = keys.map((k) =>
    k === 'cache:epoch'
      ? 'epoch'
      : /^apikey:[0-9a-f]+$/.test(k)
        ? 'principal'
        : k === hotKey(sessionId)
          ? 'genie session'
          : k === promptCacheKey(prompt.sessionKey)
            ? 'prompt session'
            : `unexpected: ${k}`,
  );
  t.deepEqual([...new Set(kinds)].sort(), ['epoch', 'genie session', 'principal', 'prompt session']);
});

shared('the bus publishes with SPUBLISH to the master owning the channel, and a subscriber on every master receives', async (t) => {
  const prefix = `${uniqueName('kcl')}:`;
  const port = seedPort();
  t.is((await masterPorts(port)).length, 3, 'the cluster has three masters');
  const ids = await idPerMaster(port, 3, (id) => prefix + sessionChannel(id));
  t.is(ids.size, 3, 'a channel on each master');
  const subscriber = await store(t, redisClusterUrl!, prefix);
  const publisher = await store(t, redisClusterUrl!, prefix);
  const got = new Map<string, string[]>();
  for (const id of ids.values()) {
    got.set(id, []);
    await subscriber.bus.subscribe(sessionChannel(id), (m) => got.get(id)!.push(m));
  }
  for (const [owner, id] of ids) {
    const channel = prefix + sessionChannel(id);
    t.deepEqual(await onNode(owner, (r) => r.call('PUBSUB', 'SHARDCHANNELS', channel)), [channel], `sharded subscription on its master ${owner}`);
    t.deepEqual(await onNode(owner, (r) => r.call('PUBSUB', 'CHANNELS', channel)), [], 'no plain subscription');
  }
  for (const id of ids.values()) await publisher.bus.publish(sessionChannel(id), `to ${id}`);
  await eventually(() => [...got.values()].every((m) => m.length > 0), 'a message on each master’s channel');
  for (const [id, messages] of got) t.deepEqual(messages, [`to ${id}`]);
});

shared('a process starting on an unchanged cluster keeps the epoch, so the copies other replicas filled stay served', async (t) => {
  const prefix = `${uniqueName('kcl')}:`;
  const first = await store(t, redisClusterUrl!, prefix);
  const miss = await first.kv.readCached('{s}:copy');
  t.true(await first.kv.fill('{s}:copy', 'v1', miss.token, 60_000));
  const second = await store(t, redisClusterUrl!, prefix);
  t.is((await second.kv.readCached('{s}:copy')).value, 'v1', 'served to the replica that started later');
  t.is((await first.kv.readCached('{s}:copy')).value, 'v1', 'and still to the first');
});

privateCluster('a master restarting empty while parley runs: a fill from before the restart is never served', async (t) => {
  t.timeout(120_000);
  const cluster = await PrivateRedisCluster.start(t);
  const prefix = `${uniqueName('kcl')}:`;
  const { kv } = await store(t, cluster.url, prefix);
  // A copy on a master other than the epoch key's: restarting it loses its fences while the epoch survives.
  const epochOwner = await ownerOf(cluster.ports[0]!, `${prefix}cache:epoch`);
  const ids = await idPerMaster(cluster.ports[0]!, 3, (id) => prefix + hotKey(id));
  const [victim, id] = [...ids].find(([owner]) => owner !== epochOwner)!;
  const key = hotKey(id);

  // A reader misses and takes a token; a writer commits and fences; the master then restarts with nothing.
  const before = await kv.readCached(key);
  t.not(before.token, undefined);
  await kv.fence(key);
  await cluster.restartEmpty(victim);

  const epochOf = (token: string | undefined) => token?.slice(0, token.lastIndexOf('|'));
  // A read that throws is "not yet": the client may still be settling on the restarted node.
  await eventually(
    () => kv.readCached('probe').then((r) => r.token !== undefined && epochOf(r.token) !== epochOf(before.token), () => false),
    'the store trusted again, in a new epoch',
  );
  // The reader's fill arrives now, with the token from before the fence; its fence is gone with the master.
  await kv.fill(key, 'stale', before.token, 60_000).catch(() => false);
  t.is((await kv.readCached(key)).value, null, 'the copy filled before the restart is not served');
});

privateCluster('a process starting after a master restarted empty does not keep the old epoch', async (t) => {
  t.timeout(120_000);
  const cluster = await PrivateRedisCluster.start(t);
  const prefix = `${uniqueName('kcl')}:`;
  const epochOwner = await ownerOf(cluster.ports[0]!, `${prefix}cache:epoch`);
  const ids = await idPerMaster(cluster.ports[0]!, 3, (id) => prefix + hotKey(id));
  const [victim, id] = [...ids].find(([owner]) => owner !== epochOwner)!;
  const key = hotKey(id);
  const first = await redisStore(cluster.url, prefix, { cluster: {} });
  const before = await first.kv.readCached(key);
  await first.kv.fence(key);
  await first.close(); // gone before the restart: nobody saw it happen

  await cluster.restartEmpty(victim);
  const { kv } = await store(t, cluster.url, prefix);
  await kv.fill(key, 'stale', before.token, 60_000);
  const after = await kv.readCached(key);
  t.is(after.value, null, 'the fill with a token of the old epoch is not served');
  t.not(after.token?.split('|')[0], before.token?.split('|')[0], 'a new epoch');
});

privateCluster('a sharded subscriber whose master restarts is subscribed again, and the bus says it reconnected', async (t) => {
  t.timeout(120_000);
  const cluster = await PrivateRedisCluster.start(t);
  const prefix = `${uniqueName('kcl')}:`;
  const ids = await idPerMaster(cluster.ports[0]!, 3, (id) => prefix + sessionChannel(id));
  const [victim, id] = [...ids][0]!;
  const { bus } = await store(t, cluster.url, prefix);
  const publisher = await store(t, cluster.url, prefix);
  let reconnects = 0;
  bus.onReconnect(() => reconnects++);
  const got: string[] = [];
  await bus.subscribe(sessionChannel(id), (m) => got.push(m));
  await publisher.bus.publish(sessionChannel(id), 'before');
  await eventually(() => got.includes('before'), 'the message before the restart');
  t.is(reconnects, 0);

  await cluster.restartEmpty(victim);
  await eventually(() => reconnects > 0, 'the bus to report the reconnect (the catch-up hook)');
  // Published until one arrives: a message sent before the SSUBSCRIBE is re-sent is lost, as the bus allows.
  await eventually(async () => {
    await publisher.bus.publish(sessionChannel(id), 'after').catch(() => {});
    return got.includes('after');
  }, 'a message after the restart');
  t.true(got.includes('after'));
});

privateCluster('health turns NOT_SERVING when a master of the cluster is down and SERVING once it is back', async (t) => {
  t.timeout(120_000);
  const cluster = await PrivateRedisCluster.start(t);
  const s = await startTestServer({ redisUrl: cluster.url, redisCluster: { seeds: [] } });
  t.teardown(() => s.stop());
  const status = async () => (await rpc(s.health, s.health.check, { service: '' })).status;
  t.is(await status(), Serving.SERVING);
  await cluster.kill(cluster.ports[1]!);
  await eventually(async () => (await status()) === Serving.NOT_SERVING, 'health to say NOT_SERVING');
  t.deepEqual(s.app.health.down(), ['redis']);
  await cluster.startStopped();
  await eventually(async () => (await status()) === Serving.SERVING, 'health to say SERVING again');
});
