import { createHash, randomBytes } from 'node:crypto';
import { Redis, type Cluster } from 'ioredis';
import { CACHE_MISS, FENCE_TTL_MS, VERSIONED_MISS, type CachedRead, type Keep, type KvStore, type VersionedCopy, type VersionedRead } from '../ports/kv.js';
import { type Bus, type Subscription } from '../ports/bus.js';
import { type FastStore } from '../ports/fast-store.js';
import { LocalFanout } from './local-fanout.js';
import { openCluster } from './redis-cluster.js';
import { RedisDeltaLog } from './redis-deltas.js';

export const connectionOptions = {
  // Fail fast while disconnected instead of queueing: callers fall back to Postgres and health turns
  // NOT_SERVING, rather than requests hanging until Redis returns.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2_000,
  retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  lazyConnect: true,
};

// A cached copy is a hash: d (the copy), g (how many fences the key has had) and e (the epoch it was filled
// in). The epoch key names the current epoch as `<run id>:<random>`; a copy from any other epoch reads as a
// miss. Fills, fences and epoch changes are scripts (atomic in Redis); a read is two plain commands sent
// together (see readCached). Every script touches one key, so a Redis Cluster can run it (the copy's key
// carries its session's hash tag; the epoch key lives in a slot of its own). On a cluster the epoch names the run
// ids of every master (see validate, and redis-cluster.ts for what else ends trust there).
//
// A fill checks the generation only. It tags the copy with the epoch of its token rather than checking that
// epoch is still current: reads serve only copies of the current epoch, so a fill with an old token lands a
// copy nobody will serve, which is as good as refusing it.
const FILL = `
if (redis.call('HGET', KEYS[1], 'g') or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[3], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;
// A fence also drops a versioned copy's fields (its items are s<position>, between f and n); a tombstone (t)
// refuses every later fill and advance of the key until it expires.
const DROP_ITEMS = `
local function dropItems(k, f, n)
  if f and n then for s = f, n do redis.call('HDEL', k, 's' .. s) end end
end`;
const FENCE = `${DROP_ITEMS}
local held = redis.call('HMGET', KEYS[1], 'f', 'n')
dropItems(KEYS[1], tonumber(held[1]), tonumber(held[2]))
redis.call('HDEL', KEYS[1], 'd', 'e', 'r', 'f', 'n', 'b')
redis.call('HINCRBY', KEYS[1], 'g', 1)
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 't', '1') end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;
// Versioned copies (KvStore.readVersioned): d the head, r its revision, e its epoch, items s<f>..s<n> of b bytes
// in all. Every script below takes ARGV = epoch, (generation | after), revision, head, first, keep items, keep
// bytes, ttl, items..., and ends by storing them: the items at first.., the oldest dropped while more than
// \`keep\` are held or their bytes exceed the bound (the newest always stays), then the head.
const STORE_VERSIONED = `
local function store(k, f, appendFrom, b)
  local count = #ARGV - 8
  for i = 1, count do
    redis.call('HSET', k, 's' .. (appendFrom + i - 1), ARGV[8 + i])
    b = b + #ARGV[8 + i]
  end
  local n = appendFrom + count - 1
  local keep, maxBytes = tonumber(ARGV[6]), tonumber(ARGV[7])
  while f < n and (n - f + 1 > keep or b > maxBytes) do
    b = b - redis.call('HSTRLEN', k, 's' .. f)
    redis.call('HDEL', k, 's' .. f)
    f = f + 1
  end
  redis.call('HSET', k, 'd', ARGV[4], 'r', ARGV[3], 'e', ARGV[1], 'f', f, 'n', n, 'b', b)
  redis.call('PEXPIRE', k, ARGV[8])
end`;
const READ_VERSIONED = `
local v = redis.call('HMGET', KEYS[1], 'd', 'r', 'e', 'f', 'n', 'g')
local out = {v[1], v[2], v[3], v[4], v[5], v[6]}
local f, n = tonumber(v[4]), tonumber(v[5])
if not v[1] or not f or not n then return out end
local from = math.max(f, n - tonumber(ARGV[1]) + 1)
if from <= n then
  local fields = {}
  for s = from, n do fields[#fields + 1] = 's' .. s end
  local items = redis.call('HMGET', KEYS[1], unpack(fields))
  for i = 1, #items do out[6 + i] = items[i] end
end
return out`;
const FILL_VERSIONED = `${DROP_ITEMS}${STORE_VERSIONED}
local k = KEYS[1]
local v = redis.call('HMGET', k, 't', 'g', 'e', 'r', 'f', 'n')
if v[1] or (v[2] or '') ~= ARGV[2] then return 0 end
if v[3] == ARGV[1] and tonumber(v[4]) and tonumber(v[4]) >= tonumber(ARGV[3]) then return 0 end
dropItems(k, tonumber(v[5]), tonumber(v[6]))
store(k, tonumber(ARGV[5]), tonumber(ARGV[5]), 0)
return 1`;
// Appends when the copy is exactly at \`after\` and its items end right before the new ones; otherwise replaces
// it. Never moves a copy of this epoch back, and bumps the generation so no fill that read before lands.
const ADVANCE = `${DROP_ITEMS}${STORE_VERSIONED}
local k = KEYS[1]
local v = redis.call('HMGET', k, 't', 'e', 'r', 'f', 'n', 'b')
if v[1] then return 0 end
local current = v[2] == ARGV[1] and tonumber(v[3])
if current and current >= tonumber(ARGV[3]) then return 0 end
local first, f, n = tonumber(ARGV[5]), tonumber(v[4]), tonumber(v[5])
redis.call('HINCRBY', k, 'g', 1)
if current == tonumber(ARGV[2]) and f and n == first - 1 then
  store(k, f, first, tonumber(v[6]) or 0)
else
  dropItems(k, f, n)
  store(k, first, first, 0)
end
return 1`;
// Keeps the epoch when asked to and it was made by this very run of Redis; otherwise starts a new one.
const EPOCH = `
local cur = redis.call('GET', KEYS[1])
if ARGV[3] ~= '1' and cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return cur end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]`;

type Scripted = (Redis | Cluster) & {
  parleyFill(key: string, epoch: string, generation: string, value: string, ttlMs: number): Promise<number>;
  parleyFence(key: string, ttlMs: number, tombstone: '0' | '1'): Promise<number>;
  parleyReadVersioned(key: string, newest: number): Promise<Array<string | null>>;
  parleyFillVersioned(key: string, ...args: Array<string | number>): Promise<number>;
  parleyAdvance(key: string, ...args: Array<string | number>): Promise<number>;
  parleyEpoch(epochKey: string, runId: string, fresh: string, renew: '0' | '1'): Promise<string>;
};

/**
 * What RedisKv needs of its connection: one Redis (singleNode below) or a Redis Cluster (redis-cluster.ts).
 */
export interface KvConnection {
  /** Where keyed commands and scripts go: a Redis, or a Cluster that routes each by its key's slot. */
  readonly client: Redis | Cluster;
  /**
   * A connection to every master, for what must be asked of each (INFO, SCAN, PING); one for a single Redis.
   * `refresh`: first re-read which masters own the slots (a cluster). Rejects when some slot has no reachable
   * master.
   */
  masters(refresh: boolean): Promise<Redis[]>;
  /**
   * 'fault': the connection may have missed writes or lost keys (closed, a node lost, the topology changed);
   * 'ready': it is up (again).
   */
  on(event: 'fault' | 'ready', fn: () => void): void;
}

/** One Redis: a closed connection is the fault (a restart, a flush by failover, or a network cut all close it). */
function singleNode(redis: Redis): KvConnection {
  return {
    client: redis,
    masters: async () => [redis],
    on: (event, fn) => void redis.on(event === 'fault' ? 'close' : 'ready', fn),
  };
}

/** While it cannot vouch for its copies, the store retries re-validation this often. */
const REVALIDATE_RETRY_MS = 250;

export class RedisKv implements KvStore {
  private readonly redis: Scripted;
  /**
   * Whether copies may be served. Off from the moment the connection closes or a fence fails (a fence may
   * have been lost, or Redis may come back restarted, flushed, or restored from an old snapshot) until a
   * re-validation has started a new epoch, which turns every copy filled before it into a miss.
   */
  private trusted = false;
  /** The epoch last seen (made, or read beside a copy): what an advance tags its copy with. */
  private epoch: string | undefined;
  /** Faults seen so far; a re-validation restores trust only if none happened while it ran. */
  private faults = 0;
  private validating: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly conn: KvConnection,
    private readonly prefix: string,
  ) {
    const redis = conn.client;
    redis.defineCommand('parleyFill', { numberOfKeys: 1, lua: FILL });
    redis.defineCommand('parleyFence', { numberOfKeys: 1, lua: FENCE });
    redis.defineCommand('parleyEpoch', { numberOfKeys: 1, lua: EPOCH });
    redis.defineCommand('parleyReadVersioned', { numberOfKeys: 1, lua: READ_VERSIONED });
    redis.defineCommand('parleyFillVersioned', { numberOfKeys: 1, lua: FILL_VERSIONED });
    redis.defineCommand('parleyAdvance', { numberOfKeys: 1, lua: ADVANCE });
    this.redis = redis as Scripted;
    conn.on('fault', () => this.distrust());
    conn.on('ready', () => this.revalidate());
  }

  /** Establishes the epoch before the first read (keeping the current one if Redis has not restarted). */
  async start(): Promise<void> {
    // A busy server may let one of validation's commands time out (on a cluster there is an INFO per master);
    // a few attempts before start-up fails.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.validate(false);
        return;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  stop(): void {
    this.closed = true;
    clearTimeout(this.retry);
  }

  private get epochKey(): string {
    return `${this.prefix}cache:epoch`;
  }

  private distrust(): void {
    this.trusted = false;
    this.faults++;
    this.revalidate();
  }

  private revalidate(): void {
    if (this.closed || this.validating) return;
    this.validating = this.validate(true)
      .then(() => {}, () => {})
      .finally(() => {
        this.validating = undefined;
        if (!this.trusted && !this.closed) {
          clearTimeout(this.retry);
          this.retry = setTimeout(() => this.revalidate(), REVALIDATE_RETRY_MS).unref();
        }
      });
  }

  /**
   * `renew`: start a new epoch whatever the current one is (after any fault).
   *
   * The epoch names the run id of every master. On one Redis that is how a process starting up tells a Redis
   * that restarted (empty, or from an old snapshot) from the one the epoch was made on. On a cluster the epoch
   * key lives on one master, but the fences it vouches for live on all of them: a master that restarts empty
   * loses the fences of its slots while the epoch key, elsewhere, survives. So the epoch is kept only when every
   * master is still the very run it was made on; a restarted, replaced or failed-over master (a promoted
   * replica has a run id of its own) starts a new one, which voids every copy filled before.
   */
  private async validate(renew: boolean): Promise<string> {
    const faults = this.faults;
    const masters = await this.conn.masters(true);
    const infos = await Promise.all(masters.map((m) => m.info('server')));
    const runIds = infos.map((info) => /run_id:(\w+)/.exec(info)?.[1] ?? 'unknown').sort();
    // Several masters' ids, hashed to one id's length: the epoch is read (and stored in every copy) all the time.
    const runId = runIds.length === 1 ? runIds[0]! : createHash('sha256').update(runIds.join(',')).digest('hex').slice(0, 40);
    const epoch = await this.redis.parleyEpoch(this.epochKey, runId, `${runId}:${randomBytes(6).toString('hex')}`, renew ? '1' : '0');
    this.epoch = epoch;
    if (this.faults === faults) this.trusted = true;
    return epoch;
  }

  async readCached(key: string): Promise<CachedRead> {
    if (!this.trusted) return CACHE_MISS;
    // One round trip (auto-pipelining sends both in one write, and Redis runs them in order) and no script:
    // cheap plain commands on the hot path. Not atomic, and need not be: a copy tagged with the epoch read
    // first was filled in that epoch, so serving it is what an atomic read at the GET would have done.
    const [epoch, [value, generation, filledIn]] = await Promise.all([
      this.redis.get(this.epochKey),
      this.redis.hmget(this.prefix + key, 'd', 'g', 'e'),
    ]);
    if (epoch === null) {
      // No epoch: Redis was flushed under us (a restart closes the connection, which distrusts first). The
      // copies went with the fences, and tokens of the old epoch cannot fill; a new epoch is enough.
      return { value: null, token: `${await this.validate(false)}|` };
    }
    return { value: filledIn === epoch ? (value ?? null) : null, token: `${epoch}|${generation ?? ''}` };
  }

  async fill(key: string, value: string, token: string | undefined, ttlMs: number): Promise<boolean> {
    if (!this.trusted || token === undefined) return false;
    const bar = token.lastIndexOf('|');
    return (await this.redis.parleyFill(this.prefix + key, token.slice(0, bar), token.slice(bar + 1), value, ttlMs)) === 1;
  }

  async readVersioned(key: string, newest: number): Promise<VersionedRead> {
    if (!this.trusted) return VERSIONED_MISS;
    // As readCached: the epoch and the copy in one round trip (the script reads only the copy's key).
    const [epoch, reply] = await Promise.all([this.redis.get(this.epochKey), this.redis.parleyReadVersioned(this.prefix + key, newest)]);
    if (epoch === null) return { ...VERSIONED_MISS, token: `${await this.validate(false)}|` };
    this.epoch = epoch;
    const [head, revision, filledIn, f, n, generation, ...items] = reply;
    const token = `${epoch}|${generation ?? ''}`;
    const last = Number(n);
    const from = Math.max(Number(f), last - newest + 1);
    // A copy of another epoch is a miss; so is one whose items did not all come back (a broken copy).
    if (!head || filledIn !== epoch || items.length !== Math.max(0, last - from + 1) || items.some((i) => i === null)) {
      return { copy: undefined, heldFrom: 0, token };
    }
    return { copy: { head, revision: Number(revision), first: from, items: items as string[] }, heldFrom: Number(f), token };
  }

  async fillVersioned(key: string, copy: VersionedCopy, token: string | undefined, keep: Keep, ttlMs: number): Promise<boolean> {
    if (!this.trusted || token === undefined) return false;
    const bar = token.lastIndexOf('|');
    const args = [token.slice(0, bar), token.slice(bar + 1), copy.revision, copy.head, copy.first, keep.items, keep.bytes, ttlMs, ...copy.items];
    return (await this.redis.parleyFillVersioned(this.prefix + key, ...args)) === 1;
  }

  async advance(key: string, after: number, next: VersionedCopy, keep: Keep, ttlMs: number): Promise<void> {
    // Without an epoch it can vouch for, the store cannot tag a copy: it drops the old one instead.
    if (!this.trusted || this.epoch === undefined) return this.fence(key);
    try {
      await this.redis.parleyAdvance(this.prefix + key, this.epoch, after, next.revision, next.head, next.first, keep.items, keep.bytes, ttlMs, ...next.items);
    } catch (err) {
      // As a failed fence: the copy at `after` may still be there for every replica.
      this.distrust();
      throw err;
    }
  }

  async fence(key: string, opts: { tombstone?: boolean } = {}): Promise<void> {
    try {
      await this.redis.parleyFence(this.prefix + key, FENCE_TTL_MS, opts.tombstone ? '1' : '0');
    } catch (err) {
      // The old copy may still be there for every replica; stop serving copies until a new epoch voids it.
      this.distrust();
      throw err;
    }
  }

  async get(key: string): Promise<string | null> {
    return this.redis.get(this.prefix + key);
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    if (ttlMs) await this.redis.set(this.prefix + key, value, 'PX', ttlMs);
    else await this.redis.set(this.prefix + key, value);
  }

  async setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean> {
    const r = ttlMs
      ? await this.redis.set(this.prefix + key, value, 'PX', ttlMs, 'NX')
      : await this.redis.set(this.prefix + key, value, 'NX');
    return r === 'OK';
  }

  // One DEL per key: keys of different sessions sit in different cluster slots, and auto-pipelining still
  // sends them in one write.
  async del(...keys: string[]): Promise<void> {
    await Promise.all(keys.map((k) => this.redis.del(this.prefix + k)));
  }

  // A SCAN sees one node's keys: every master is scanned; deletes go through the client, which routes each.
  async clear(): Promise<void> {
    for (const master of await this.conn.masters(false)) {
      let cursor = '0';
      do {
        const [next, keys] = await master.scan(cursor, 'MATCH', `${this.prefix}*`, 'COUNT', 1000);
        cursor = next;
        await Promise.all(keys.map((k) => this.redis.del(k)));
      } while (cursor !== '0');
    }
  }

  /** Every master answers (on a cluster, a master that is down leaves its slots' sessions without a cache). */
  async ping(): Promise<void> {
    await Promise.all((await this.conn.masters(false)).map((m) => m.ping()));
  }
}

/**
 * What RedisBus needs of its connections: plain SUBSCRIBE/PUBLISH on one Redis (singleNodeBus below), sharded
 * SSUBSCRIBE/SPUBLISH on a cluster (redis-cluster.ts), where a plain PUBLISH would be broadcast to every node.
 */
export interface BusConnection {
  publish(channel: string, message: string): Promise<unknown>;
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  onMessage(fn: (channel: string, message: string) => void): void;
  /**
   * After subscriptions were lost (a reconnect, a lost node) and have been sent again; not on the first
   * connect. Messages published meanwhile are gone.
   */
  onResubscribed(fn: () => void): void;
}

function singleNodeBus(pub: Redis, sub: Redis): BusConnection {
  return {
    publish: (channel, message) => pub.publish(channel, message),
    subscribe: (channel) => sub.subscribe(channel),
    unsubscribe: (channel) => sub.unsubscribe(channel),
    onMessage: (fn) => void sub.on('message', fn),
    onResubscribed: (fn) => {
      // The bus may be built on a connection that is already up; only later 'ready's are reconnects. ioredis
      // re-subscribes on reconnect, and its 'ready' comes once those SUBSCRIBEs are sent.
      let connectedOnce = sub.status === 'ready';
      sub.on('ready', () => {
        if (connectedOnce) fn();
        connectedOnce = true;
      });
    },
  };
}

/** Marks a published message as tagged with its publisher (RedisBus.origin). */
const ORIGIN_MARK = 1;

/** One subscriber connection per process (per master on a cluster), fanned out in memory to every local listener. */
export class RedisBus implements Bus {
  // One Redis (S)SUBSCRIBE per channel, however many local subscribers it has.
  private readonly fanout = new LocalFanout({
    onFirst: (channel) => this.conn.subscribe(this.prefix + channel).then(() => undefined),
    onLast: (channel) => this.conn.unsubscribe(this.prefix + channel).then(() => undefined, () => undefined),
  });
  private readonly reconnectListeners = new Set<() => void>();
  /**
   * Prefixed to what this process publishes, so it skips Redis' copy of its own messages: a control
   * character no message starts with (every message is JSON or an id), then a random id of this bus.
   */
  private readonly origin = String.fromCharCode(ORIGIN_MARK) + randomBytes(9).toString('base64url') + '|';

  constructor(
    private readonly conn: BusConnection,
    private readonly prefix: string,
  ) {
    conn.onMessage((channel, tagged) => {
      // What this process published was delivered here when it was published; Redis' copy is for the others.
      let message = tagged;
      if (tagged.charCodeAt(0) === ORIGIN_MARK) {
        if (tagged.startsWith(this.origin)) return;
        message = tagged.slice(this.origin.length);
      }
      for (const s of this.fanout.subscribers(channel.slice(this.prefix.length))) s.onMessage(message);
    });
    // Once the channels are live again, a catch-up read cannot miss anything published from then on.
    conn.onResubscribed(() => {
      const resync = () => {
        for (const fn of [...this.reconnectListeners]) fn();
      };
      resync();
      // The re-sent (S)SUBSCRIBEs may not have taken effect yet when this is called; a second catch-up closes
      // that window.
      setTimeout(resync, 250).unref();
    });
  }

  onReconnect(fn: () => void): () => void {
    this.reconnectListeners.add(fn);
    return () => this.reconnectListeners.delete(fn);
  }

  /**
   * Local subscribers get the message at once, without a Redis round trip (asynchronously, as from Redis:
   * a publisher never runs subscriber code on its own stack); the other replicas get it through Redis.
   */
  async publish(channel: string, message: string): Promise<void> {
    for (const s of this.fanout.subscribers(channel)) queueMicrotask(() => s.onMessage(message));
    await this.conn.publish(this.prefix + channel, this.origin + message);
  }

  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription> {
    return this.fanout.subscribe(channel, onMessage, opts?.processWide === true);
  }

  subscribedChannels(): number {
    return this.fanout.subscribedChannels();
  }
}

/** What the store reports of its connections: `onError` hears every error event of either connection. */
export interface RedisObserver {
  onError?(connection: 'main' | 'sub', err: Error): void;
}

/** Where the store connects: one Redis at `url`, or a Redis Cluster that `url` (and `seeds`) are nodes of. */
export interface RedisTarget {
  cluster?: { seeds?: readonly string[] } | undefined;
  observer?: RedisObserver;
}

export async function redisStore(url: string, prefix: string, target: RedisTarget = {}): Promise<FastStore> {
  const observer = target.observer ?? {};
  const conns = target.cluster ? await openCluster(url, target.cluster.seeds ?? [], connectionOptions, observer) : await openSingleNode(url, observer);
  const kv = new RedisKv(conns.kv, prefix);
  try {
    await kv.start();
  } catch (err) {
    kv.stop();
    conns.close();
    throw err;
  }
  return {
    kind: 'redis',
    kv,
    bus: new RedisBus(conns.bus, prefix),
    deltas: new RedisDeltaLog(conns.kv.client, prefix),
    close: async () => {
      kv.stop();
      conns.close();
    },
  };
}

/** The connections a store is built on, single node or cluster. */
export interface RedisConnections {
  kv: KvConnection;
  bus: BusConnection;
  close(): void;
}

async function openSingleNode(url: string, observer: RedisObserver): Promise<RedisConnections> {
  // Auto-pipelining: commands issued in the same tick (many concurrent calls' GETs, SETs and PUBLISHes)
  // go out in one socket write instead of one write each; order and replies are unchanged.
  // A command timeout, so a Redis that hangs (rather than refuses) fails calls over to Postgres too.
  const main = new Redis(url, { ...connectionOptions, enableAutoPipelining: true, commandTimeout: 2_000 });
  // A subscriber connection must queue its SUBSCRIBE commands across reconnects, so it keeps the offline queue.
  const sub = new Redis(url, { ...connectionOptions, enableOfflineQueue: true, maxRetriesPerRequest: null });
  // Errors surface to callers through rejected commands; the event only needs a listener so it is not fatal.
  main.on('error', (err: Error) => observer.onError?.('main', err));
  sub.on('error', (err: Error) => observer.onError?.('sub', err));
  await Promise.all([main.connect(), sub.connect()]);
  return {
    kv: singleNode(main),
    bus: singleNodeBus(main, sub),
    close: () => {
      main.disconnect();
      sub.disconnect();
    },
  };
}
