/**
 * What the domain reports about itself: cache reads, failures it contains by design (a cache or bus that
 * failed never fails a call), and its watchers. Every argument is a name fixed by the code that reports it,
 * never a request's value, so whatever records these keeps a bounded number of series. The composition
 * root plugs in the real recorder (src/metrics.ts); unit tests leave the no-op default.
 */

/** The caches whose reads are counted. */
export const CACHE_NAMES = ['prompt', 'genie_session', 'principal', 'model_type'] as const;
export type CacheName = (typeof CACHE_NAMES)[number];

/** What failed, when a failure is contained rather than passed to the caller. */
export const CONTAINED_FAILURES = ['cache_read', 'cache_fill', 'after_commit', 'bus_publish_ephemeral', 'delta_log'] as const;
export type ContainedFailure = (typeof CONTAINED_FAILURES)[number];

export const WATCHER_KINDS = ['prompt', 'genie'] as const;
export type WatcherKind = (typeof WATCHER_KINDS)[number];

/** Why a watcher was cut off by the server (its client's own end is the call's business). */
export type CutOffReason = 'too_slow';

export interface Telemetry {
  cacheRead(cache: CacheName, hit: boolean): void;
  /** A failure swallowed by design: counted every time, logged only now and then (see the recorder). */
  contained(what: ContainedFailure, err: unknown): void;
  watcherOpened(kind: WatcherKind): void;
  watcherClosed(kind: WatcherKind): void;
  /** A live update was buffered for a watcher that now has `buffered` undelivered updates. */
  watcherBuffered(kind: WatcherKind, buffered: number): void;
  watcherCutOff(kind: WatcherKind, reason: CutOffReason): void;
}

const nothing = () => {};

/** Records nothing: the default of every component that takes a Telemetry. */
export const noTelemetry: Telemetry = Object.freeze({
  cacheRead: nothing,
  contained: nothing,
  watcherOpened: nothing,
  watcherClosed: nothing,
  watcherBuffered: nothing,
  watcherCutOff: nothing,
});
