import { Cluster, type ClusterOptions, type Redis, type RedisOptions } from 'ioredis';
import type { BusConnection, KvConnection, RedisConnections, RedisObserver } from './redis-kv.js';

/**
 * parley on a Redis Cluster: the same RedisKv and RedisBus as on one Redis, over ioredis' Cluster client.
 *
 * Keys: every key of a session carries the session in a hash tag (`genie:{id}:hot`, `parley:prompt:session:{key}`),
 * so it lives in that session's slot, and no command or script touches two keys. The cache epoch key is a key
 * of its own, read beside each copy (two single-key commands, which may go to two masters).
 *
 * Pub/sub: sharded (Redis 7: SSUBSCRIBE/SPUBLISH). A channel belongs to the slot of its name; a message goes to
 * the master owning that slot only, where a plain PUBLISH would be broadcast over the cluster bus to every node.
 * ioredis keeps one subscriber connection per master that owns a subscribed channel.
 *
 * Faults: on one Redis the epoch (RedisKv) is renewed whenever the one connection closes. Here a fence lives
 * on the master owning its key's slot, so losing any master loses fences: the store stops trusting its copies
 * (and renews the epoch) when any node's connection closes, a node leaves the client's pool, the whole
 * client reconnects, or the slot map changes (a failover promotes a replica, which may lack the last writes;
 * a resharding moves slots). The epoch records the run id of every master, so a process starting after a
 * master restarted empty does not keep the old epoch either.
 */

/** The slot count of every Redis Cluster. */
const SLOTS = 16384;

/** host:port of a seed (`REDIS_URL` or one of the extra seeds). */
function seedNode(text: string): { host: string; port: number } {
  const u = new URL(text.includes('://') ? text : `redis://${text}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 6379) };
}

/** The URL's credentials and TLS, for every node (a cluster's nodes share them). */
function nodeOptions(url: string, base: RedisOptions): RedisOptions {
  const u = new URL(url);
  return {
    ...base,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** A Cluster client for `url` and `seeds`; not connected yet (lazyConnect). */
export function clusterClient(url: string, seeds: readonly string[], redisOptions: RedisOptions, options: ClusterOptions = {}): Cluster {
  return new Cluster([seedNode(url), ...seeds.map(seedNode)], {
    redisOptions: nodeOptions(url, redisOptions),
    lazyConnect: true,
    // Re-read the slot map now and then even with no traffic, so a failover is noticed (and distrusted) soon.
    slotsRefreshInterval: 5_000,
    // ioredis gives CLUSTER SLOTS 1 s by default; a busy node answering later must not fail start-up.
    slotsRefreshTimeout: 3_000,
    ...options,
  });
}

/** Each master's node key (host:port) once; throws when a slot has no master (the map is not complete). */
function masterKeys(cluster: Cluster): string[] {
  const keys = new Set<string>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const key = cluster.slots[slot]?.[0];
    if (!key) throw new Error('the Redis Cluster has slots without a master');
    keys.add(key);
  }
  return [...keys];
}

/** The slot map as ranges (`0-5460=127.0.0.1:7001,…`): equal strings, same owners. */
function topology(cluster: Cluster): string {
  const ranges: string[] = [];
  let start = 0;
  for (let slot = 1; slot <= SLOTS; slot++) {
    if (slot === SLOTS || cluster.slots[slot]?.[0] !== cluster.slots[start]?.[0]) {
      ranges.push(`${start}-${slot - 1}=${cluster.slots[start]?.[0] ?? ''}`);
      start = slot;
    }
  }
  return ranges.join(',');
}

/** The client's connection to each master of the slot map; throws when a slot has no master in the client's pool. */
export function clusterMasters(cluster: Cluster): Redis[] {
  const byKey = new Map(cluster.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
  return masterKeys(cluster).map((key) => {
    const node = byKey.get(key);
    if (!node) throw new Error('a master of the Redis Cluster is not connected');
    return node;
  });
}

function refreshSlots(cluster: Cluster): Promise<void> {
  return new Promise((resolve, reject) => cluster.refreshSlotsCache((err) => (err ? reject(err) : resolve())));
}

function kvConnection(cluster: Cluster): KvConnection {
  const faultListeners: Array<() => void> = [];
  const fault = () => {
    for (const fn of faultListeners) fn();
  };
  let known: string | undefined;
  // A node connection that closes may have been to a master that restarted empty: its fences are gone. A
  // 'node error' alone is not a fault: a socket error is followed by that close, and the rest (a CLUSTER SLOTS
  // that timed out on a busy node, a refused reconnect to a node already lost) lose nothing, while distrusting
  // on them would void every replica's copies whenever a node is slow.
  cluster.on('+node', (node: Redis) => node.on('close', fault));
  cluster.on('-node', fault);
  for (const status of ['close', 'reconnecting', 'end']) cluster.on(status, fault);
  // 'refresh' follows every read of the slot map; only a changed map is a fault.
  cluster.on('refresh', () => {
    const now = topology(cluster);
    if (known !== undefined && now !== known) fault();
    known = now;
  });
  return {
    client: cluster,
    masters: async (refresh) => {
      if (refresh) await refreshSlots(cluster);
      return clusterMasters(cluster);
    },
    on: (event, fn) => {
      if (event === 'fault') return void faultListeners.push(fn);
      // The first 'ready' is the connect the store's start-up validated (it may arrive after it, and must not
      // start a new epoch: that would void every other replica's copies at each start); later ones follow a loss.
      let connectedOnce = false;
      cluster.on('ready', () => {
        if (connectedOnce) fn();
        connectedOnce = true;
      });
    },
  };
}

/** How long an SSUBSCRIBE may wait for its master's subscriber connection before the subscribe fails. */
const SUBSCRIBE_WITHIN_MS = 10_000;

/**
 * `fn()`, failing after `ms`. The subscriber client keeps its offline queue (so SSUBSCRIBEs wait out a
 * reconnect), and a command that ioredis cannot route to a sharded subscriber (its slot map not yet built) may
 * otherwise never settle; a watcher is better told than left waiting. A synchronous throw becomes a rejection.
 */
function bounded<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the Redis Cluster did not confirm the subscription in time')), ms);
  });
  return Promise.race([Promise.resolve().then(fn), timeout]).finally(() => clearTimeout(timer));
}

function busConnection(pub: Cluster, sub: Cluster): BusConnection {
  return {
    publish: (channel, message) => pub.spublish(channel, message),
    subscribe: (channel) => bounded(() => sub.ssubscribe(channel), SUBSCRIBE_WITHIN_MS),
    unsubscribe: (channel) => sub.sunsubscribe(channel),
    onMessage: (fn) => void sub.on('smessage', fn),
    onResubscribed: (fn) => {
      // ioredis replaces a lost sharded subscriber (its node went away, the slot map changed, the whole client
      // reconnected) and sends its channels' SSUBSCRIBEs again, then says 'subscribersReady'. That event also
      // follows the first connect, when nothing was lost; only one after a loss is a reconnect.
      let lost = false;
      const lose = () => (lost = true);
      for (const e of ['-node', '-subscriber', 'reconnecting', 'close']) sub.on(e, lose);
      sub.on('subscribersReady', () => {
        if (!lost) return;
        lost = false;
        fn();
      });
    },
  };
}

/** How long start-up waits for a cluster to become ready (a reachable one is checked before: checkRedis). */
const CONNECT_WITHIN_MS = 10_000;

/**
 * Connects `cluster`. Its first attempt can fail on a busy node (CLUSTER SLOTS answered late: "None of startup
 * nodes is available") while ioredis goes on retrying (clusterRetryStrategy), so only no 'ready' within
 * `withinMs` is a failure, reported with the last attempt's error.
 */
function whenReady(cluster: Cluster, withinMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let last: unknown = new Error('the Redis Cluster did not become ready');
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      cluster.off('ready', onReady);
      reject(last);
    }, withinMs);
    cluster.once('ready', onReady);
    cluster.connect().catch((err: unknown) => (last = err));
  });
}

/**
 * Connects to the cluster `url` (and `seeds`, host:port) names: one client for commands, one with sharded
 * subscribers for the bus (it keeps its offline queue, so SSUBSCRIBEs wait out a reconnect).
 */
export async function openCluster(url: string, seeds: readonly string[], redisOptions: RedisOptions, observer: RedisObserver = {}): Promise<RedisConnections> {
  const retry = { clusterRetryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000) };
  // As on one Redis: fail fast while disconnected (callers fall back to Postgres), pipeline what goes out in
  // one tick, and time out a node that hangs.
  const main = clusterClient(url, seeds, { ...redisOptions, commandTimeout: 2_000 }, { ...retry, enableOfflineQueue: false, enableAutoPipelining: true });
  const sub = clusterClient(url, seeds, { ...redisOptions, maxRetriesPerRequest: null }, { ...retry, shardedSubscribers: true });
  // Errors surface to callers through rejected commands; the events only need a listener so they are not fatal.
  main.on('error', (err: Error) => observer.onError?.('main', err));
  sub.on('error', (err: Error) => observer.onError?.('sub', err));
  const kv = kvConnection(main);
  try {
    await Promise.all([whenReady(main, CONNECT_WITHIN_MS), whenReady(sub, CONNECT_WITHIN_MS)]);
  } catch (err) {
    main.disconnect();
    sub.disconnect();
    throw err;
  }
  return {
    kv,
    bus: busConnection(main, sub),
    close: () => {
      main.disconnect();
      sub.disconnect();
    },
  };
}
