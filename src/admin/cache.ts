import type { KvStore } from '../ports/kv.js';
import { FencedCopies } from '../fenced-copies.js';
import type { Bus } from '../ports/bus.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { afterCommit } from '../after-commit.js';
import { decodeJson, encodeJson, zodCodec } from '../json-codec.js';
import { INVALIDATE_ALL, invalidateOnBus, LocalCache } from '../local-cache.js';
import { principalSchema, type Principal } from '../principal.js';
import { ADMIN_EVENTS_CHANNEL, adminEventCodec, type AdminEvent } from './events.js';

/**
 * How long a principal read from Postgres may be served from Redis. Short, because it bounds how long a
 * revoked key can keep working when a revocation's fence is lost (see REVOCATION_BOUND_MS); one Postgres
 * read per key per 10 s across all replicas is cheap.
 */
export const PRINCIPAL_TTL_MS = 10_000;
/**
 * The in-process principal cache (first level; Redis is the second). Safe because a key's principal never
 * changes, only its revocation or deletion: the process doing it drops the entry at once, the others on the
 * admin event (bus latency), and should that message be lost (the bus is at-most-once),
 * LOCAL_PRINCIPAL_TTL_MS bounds how long another replica may still accept the key.
 */
export const LOCAL_PRINCIPAL_TTL_MS = 5_000;
/**
 * The longest a revoked or deleted key keeps working on any replica, whatever Redis and the bus do: a
 * principal is validated against Postgres at most PRINCIPAL_TTL_MS before it enters a process, which keeps
 * it at most LOCAL_PRINCIPAL_TTL_MS more. With Redis and the bus healthy it is the bus latency (the fence
 * voids the Redis copy, the message the local ones). On the server that revoked or deleted it: none.
 */
export const REVOCATION_BOUND_MS = PRINCIPAL_TTL_MS + LOCAL_PRINCIPAL_TTL_MS;
const LOCAL_PRINCIPAL_MAX = 10_000;

const principalKey = (secretHash: string) => `apikey:${secretHash}`;
const principalCodec = zodCodec(principalSchema);

/** The keys an admin event drops; a message that is no admin event (another version) drops everything. */
function keysOf(message: string): readonly string[] | typeof INVALIDATE_ALL {
  try {
    return [decodeJson(adminEventCodec, message).secretHash];
  } catch {
    return INVALIDATE_ALL;
  }
}

export interface PrincipalCacheOptions {
  localTtlMs?: number;
  localMaxEntries?: number;
  now?: () => number;
  telemetry?: Telemetry;
}

/**
 * API key (by secret hash) → principal, read on every call of PromptService and GenieService: in process
 * (a few seconds), then in Redis (fenced fills, PRINCIPAL_TTL_MS), then the store. A revoke or delete evicts
 * both levels (see REVOCATION_BOUND_MS).
 */
export class PrincipalCache {
  private readonly local: LocalCache<Principal>;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly telemetry: Telemetry;
  private readonly copies: FencedCopies<Principal>;

  constructor(
    kv: KvStore,
    private readonly bus: Bus | undefined,
    opts: PrincipalCacheOptions = {},
  ) {
    this.local = new LocalCache({
      ttlMs: opts.localTtlMs ?? LOCAL_PRINCIPAL_TTL_MS,
      maxEntries: opts.localMaxEntries ?? LOCAL_PRINCIPAL_MAX,
      now: opts.now,
    });
    this.telemetry = opts.telemetry ?? noTelemetry;
    this.copies = new FencedCopies(kv, principalKey, principalCodec, 'principal', this.telemetry);
  }

  /** Subscribes to revocations made by other processes; call once before serving. */
  async start(): Promise<void> {
    if (this.bus && !this.unsubscribe) this.unsubscribe = await invalidateOnBus(this.bus, ADMIN_EVENTS_CHANNEL, this.local, keysOf);
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** The principal of `hash`; `load` reads the store on a miss of both levels. A Redis failure reads as a miss. */
  async get(hash: string, load: () => Promise<Principal | undefined>): Promise<Principal | undefined> {
    const local = this.local.get(hash);
    if (local) {
      this.telemetry.cacheRead('principal', true);
      return local;
    }
    const token = this.local.token();
    const cached = await this.copies.get(hash);
    if (cached.value) {
      this.local.set(hash, cached.value, token);
      return cached.value;
    }
    const principal = await load();
    if (!principal) return undefined;
    await this.copies.put(hash, principal, cached.token, PRINCIPAL_TTL_MS);
    this.local.set(hash, principal, token);
    return principal;
  }

  /**
   * After a revoke or delete committed (the after-commit rule): from the moment this returns this process
   * refuses those keys (local entries dropped before and after the Redis fence, so no fill racing the fence
   * survives), other replicas once the event arrives.
   */
  async forget(events: readonly AdminEvent[]): Promise<void> {
    for (const event of events) {
      const hash = event.secretHash;
      this.local.delete(hash);
      await afterCommit(
        this.telemetry,
        () => this.copies.evict(hash),
        async () => this.local.delete(hash),
        () => this.bus?.publish(ADMIN_EVENTS_CHANNEL, encodeJson(adminEventCodec, event)) ?? Promise.resolve(),
      );
    }
  }
}
