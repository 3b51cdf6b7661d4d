import type { Cluster, Redis } from 'ioredis';
import { MAX_DELTA_LOG_ENTRIES, type DeltaLog } from '../ports/deltas.js';

/**
 * A session's deltas in flight as one Redis stream (one key, so a Cluster keeps it in the session's slot and
 * every script touches one key). Entries: `u` the utterance, `m` the delta's message; an end marker has `u`
 * and `x`. Ending an utterance drops every entry before the first one of an utterance still in flight, and
 * the whole stream when none is; the TTL is renewed by every append and end.
 */
const APPEND = `
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'u', ARGV[1], 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

const END = `
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'u', ARGV[1], 'x', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local ended = {}
for _, e in ipairs(entries) do
  local f = e[2]
  if f[3] == 'x' then ended[f[2]] = true end
end
for _, e in ipairs(entries) do
  if not ended[e[2][2]] then
    redis.call('XTRIM', KEYS[1], 'MINID', e[1])
    return 1
  end
end
redis.call('DEL', KEYS[1])
return 0
`;

type Scripted = (Redis | Cluster) & {
  parleyDeltaAppend(key: string, utteranceId: string, message: string, ttlMs: number, maxLen: number): Promise<number>;
  parleyDeltaEnd(key: string, utteranceId: string, ttlMs: number, maxLen: number): Promise<number>;
};

export class RedisDeltaLog implements DeltaLog {
  private readonly redis: Scripted;

  constructor(
    client: Redis | Cluster,
    private readonly prefix: string,
  ) {
    client.defineCommand('parleyDeltaAppend', { numberOfKeys: 1, lua: APPEND });
    client.defineCommand('parleyDeltaEnd', { numberOfKeys: 1, lua: END });
    this.redis = client as Scripted;
  }

  private key(sessionId: string): string {
    return `${this.prefix}genie:{${sessionId}}:deltas`;
  }

  async append(sessionId: string, utteranceId: string, message: string, ttlMs: number): Promise<void> {
    // One command per delta: the stream never exists without its TTL, even if a worker dies mid-utterance.
    await this.redis.parleyDeltaAppend(this.key(sessionId), utteranceId, message, ttlMs, MAX_DELTA_LOG_ENTRIES);
  }

  async end(sessionId: string, utteranceId: string, ttlMs: number): Promise<void> {
    await this.redis.parleyDeltaEnd(this.key(sessionId), utteranceId, ttlMs, MAX_DELTA_LOG_ENTRIES);
  }

  async inFlight(sessionId: string): Promise<Array<{ utteranceId: string; message: string }>> {
    const entries = await this.redis.xrange(this.key(sessionId), '-', '+');
    const ended = new Set<string>();
    for (const [, f] of entries) if (f[2] === 'x' && f[1] !== undefined) ended.add(f[1]);
    const out: Array<{ utteranceId: string; message: string }> = [];
    for (const [, f] of entries) {
      const [k1, utteranceId, k2, message] = f;
      if (k1 === 'u' && k2 === 'm' && utteranceId !== undefined && message !== undefined && !ended.has(utteranceId)) out.push({ utteranceId, message });
    }
    return out;
  }
}
