import { performance } from 'node:perf_hooks';
import { resourceExhausted, type AppError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

/** Milliseconds on a clock that never goes back; tests inject their own. */
export type Clock = () => number;

/** Stable ErrorInfo reasons of the limits, one per limit. */
export const Reason = {
  STREAM_LIMIT: 'STREAM_LIMIT',
  RATE_LIMIT: 'RATE_LIMIT',
  UTTERANCE_BYTES_LIMIT: 'UTTERANCE_BYTES_LIMIT',
  UTTERANCE_SIZE_LIMIT: 'UTTERANCE_SIZE_LIMIT',
  UTTERANCE_CHUNK_LIMIT: 'UTTERANCE_CHUNK_LIMIT',
  CLIENT_STREAM_IDLE: 'CLIENT_STREAM_IDLE',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export interface LimitsConfig {
  /** Open streaming calls per account (WatchSession, WatchPrompt, StreamUtterance, Chat). */
  streamsPerAccount: number;
  /** Bytes of utterance text received and not yet committed, summed over an account's open utterances. */
  utteranceBytesPerAccount: number;
  /** Bytes of text of one utterance. */
  utteranceBytesPerUtterance: number;
  /** How long a client stream may go without a message before the server ends it. */
  clientStreamIdleMs: number;
  /** Token bucket per account: tokens (requests) added per second, and how many it holds. */
  requestsPerSecond: number;
  requestBurst: number;
  /** Accounts whose buckets are kept; the least recently seen go first. */
  rateBuckets?: number;
}

/**
 * A token bucket: `burst` tokens, refilled at `rate` per second. Time comes in as an argument, so it is as
 * deterministic as its caller's clock.
 */
export class TokenBucket {
  private tokens: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private at: number,
  ) {
    this.tokens = burst;
  }

  /** Takes one token: 0 when there was one, else the milliseconds until there will be. */
  take(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }

  private refill(now: number): void {
    if (now <= this.at) return;
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
  }
}

/**
 * One token bucket per key, at most `maxKeys` of them: the least recently used bucket is dropped first, so
 * memory stays bounded however many accounts call. A dropped bucket that was not full gives its account a
 * fresh burst when it comes back; that takes more than `maxKeys` other accounts calling in between.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly maxKeys: number,
    private readonly now: Clock,
  ) {}

  /** 0 when `key` may go ahead, else the milliseconds until it may. */
  take(key: string): number {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b) this.buckets.delete(key);
    else b = new TokenBucket(this.rate, this.burst, now);
    // Most recently used last: Map iteration order is insertion order.
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next();
      if (!oldest.done) this.buckets.delete(oldest.value);
    }
    return b.take(now);
  }

  get size(): number {
    return this.buckets.size;
  }
}

/** What one account holds now. */
interface Usage {
  streams: number;
  utteranceBytes: number;
}

/** One open stream's slot; releasing it twice releases it once. */
export class StreamLease {
  private released = false;

  constructor(
    private readonly limits: Limits,
    private readonly accountId: string,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.limits.releaseStream(this.accountId);
  }
}

/** The bytes one utterance holds against its account; released all at once when it commits or fails. */
/**
 * Chunks with text one utterance may have. Each is a delta kept while the utterance is in flight (so a
 * watcher joining mid-utterance gets them all), which bounds what that costs: at 4 bytes a token, an LLM
 * streaming one token per chunk reaches it at about 80 KB.
 */
export const MAX_UTTERANCE_CHUNKS = 20_000;

export class UtteranceBudget {
  private bytes = 0;
  private chunks = 0;
  private released = false;

  constructor(
    private readonly limits: Limits,
    private readonly accountId: string,
    private readonly method: string,
  ) {}

  /** Counts `n` more bytes received; throws RESOURCE_EXHAUSTED when this utterance or its account would go over. */
  add(n: number): void {
    if (this.released) throw new Error('utterance budget used after release');
    if (n > 0 && ++this.chunks > MAX_UTTERANCE_CHUNKS) this.limits.tooManyChunks(this.accountId, this.method);
    this.limits.reserveUtteranceBytes(this.accountId, this.method, this.bytes, n);
    this.bytes += n;
  }

  get held(): number {
    return this.released ? 0 : this.bytes;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.limits.releaseUtteranceBytes(this.accountId, this.bytes);
  }
}

/**
 * Per-account limits of one replica, all in process: concurrent streams, utterance bytes in flight, a
 * request rate, and the idle time of client streams. Every refusal is RESOURCE_EXHAUSTED with an ErrorInfo
 * naming the limit, is counted by reason (parley_limit_refusals_total) and is logged at warn, at most about once a second
 * (each line says how many refusals went unlogged before it).
 *
 * Being per replica, a client spread over N replicas by a load balancer gets up to N times each limit.
 */
export class Limits {
  private readonly usage = new Map<string, Usage>();
  private readonly rate: RateLimiter;
  private readonly logBucket: TokenBucket;
  private unlogged = 0;
  private readonly now: Clock;

  constructor(
    readonly config: LimitsConfig,
    private readonly deps: { logger: Logger; metrics: Pick<Metrics, 'refused'>; now?: Clock },
  ) {
    this.now = deps.now ?? (() => performance.now());
    this.rate = new RateLimiter(config.requestsPerSecond, config.requestBurst, config.rateBuckets ?? 10_000, this.now);
    this.logBucket = new TokenBucket(LOG_LINES_PER_SECOND, LOG_BURST, this.now());
  }

  get clientStreamIdleMs(): number {
    return this.config.clientStreamIdleMs;
  }

  /** One request of `accountId` (an RPC, or a request on a Chat stream); throws RATE_LIMIT when over. */
  admit(accountId: string, method: string): void {
    const waitMs = this.rate.take(accountId);
    if (waitMs === 0) return;
    const { requestsPerSecond, requestBurst } = this.config;
    throw this.refuse(
      Reason.RATE_LIMIT,
      accountId,
      method,
      `too many requests for this account: at most ${requestsPerSecond} per second (bursts of ${requestBurst})`,
      new Map([
        ['requests_per_second', String(requestsPerSecond)],
        ['burst', String(requestBurst)],
      ]),
      waitMs,
    );
  }

  /** A slot for one streaming call of `accountId`; throws STREAM_LIMIT when the account has them all. */
  openStream(accountId: string, method: string): StreamLease {
    const u = this.usageOf(accountId);
    const max = this.config.streamsPerAccount;
    if (u.streams >= max) {
      throw this.refuse(Reason.STREAM_LIMIT, accountId, method, `too many open streams for this account: at most ${max}`, new Map([['max_streams', String(max)]]));
    }
    u.streams++;
    return new StreamLease(this, accountId);
  }

  /** A byte budget for one streamed utterance; release it when the utterance commits or fails. */
  utterance(accountId: string, method: string): UtteranceBudget {
    return new UtteranceBudget(this, accountId, method);
  }

  /** The error that ends a client stream that sent nothing for clientStreamIdleMs, counted and logged. */
  idle(accountId: string, method: string): AppError {
    const ms = this.config.clientStreamIdleMs;
    return this.refuse(Reason.CLIENT_STREAM_IDLE, accountId, method, `the stream sent no message for ${ms} ms`, new Map([['idle_timeout_ms', String(ms)]]));
  }

  /** Open streams of an account. */
  streamsOf(accountId: string): number {
    return this.usage.get(accountId)?.streams ?? 0;
  }

  /** Utterance bytes an account holds in flight. */
  utteranceBytesOf(accountId: string): number {
    return this.usage.get(accountId)?.utteranceBytes ?? 0;
  }

  /** Accounts holding anything now (an account that holds nothing is forgotten). */
  get accountsHolding(): number {
    return this.usage.size;
  }

  /** @internal StreamLease's side. */
  releaseStream(accountId: string): void {
    const u = this.usage.get(accountId);
    if (!u) return;
    u.streams--;
    this.forgetIfIdle(accountId, u);
  }

  /** @internal UtteranceBudget's side. */
  tooManyChunks(accountId: string, method: string): never {
    throw this.refuse(Reason.UTTERANCE_CHUNK_LIMIT, accountId, method, `the utterance has more than ${MAX_UTTERANCE_CHUNKS} chunks with text`, new Map([['max_chunks', String(MAX_UTTERANCE_CHUNKS)]]));
  }

  /** @internal UtteranceBudget's side: `held` is what the utterance already holds. */
  reserveUtteranceBytes(accountId: string, method: string, held: number, n: number): void {
    const perUtterance = this.config.utteranceBytesPerUtterance;
    if (held + n > perUtterance) {
      throw this.refuse(Reason.UTTERANCE_SIZE_LIMIT, accountId, method, `the utterance exceeds ${perUtterance} bytes`, new Map([['max_bytes', String(perUtterance)]]));
    }
    const u = this.usageOf(accountId);
    const perAccount = this.config.utteranceBytesPerAccount;
    if (u.utteranceBytes + n > perAccount) {
      this.forgetIfIdle(accountId, u);
      throw this.refuse(
        Reason.UTTERANCE_BYTES_LIMIT,
        accountId,
        method,
        `this account's utterances in flight would exceed ${perAccount} bytes`,
        new Map([['max_bytes', String(perAccount)]]),
      );
    }
    u.utteranceBytes += n;
  }

  /** @internal */
  releaseUtteranceBytes(accountId: string, n: number): void {
    const u = this.usage.get(accountId);
    if (!u) return;
    u.utteranceBytes -= n;
    this.forgetIfIdle(accountId, u);
  }

  private usageOf(accountId: string): Usage {
    let u = this.usage.get(accountId);
    if (!u) this.usage.set(accountId, (u = { streams: 0, utteranceBytes: 0 }));
    return u;
  }

  private forgetIfIdle(accountId: string, u: Usage): void {
    if (u.streams <= 0 && u.utteranceBytes <= 0) this.usage.delete(accountId);
  }

  private refuse(reason: Reason, accountId: string, method: string, message: string, metadata: Map<string, string>, retryDelayMs?: number): AppError {
    this.deps.metrics.refused(reason);
    // A flood of refusals must not become a flood of log lines: the counter has the totals.
    if (this.logBucket.take(this.now()) === 0) {
      this.deps.logger.warn('limit refused a call', { reason, account: accountId, method, ...Object.fromEntries(metadata), unloggedBefore: this.unlogged });
      this.unlogged = 0;
    } else {
      this.unlogged++;
    }
    return resourceExhausted(reason, message, metadata, retryDelayMs);
  }
}

const LOG_LINES_PER_SECOND = 1;
const LOG_BURST = 10;
