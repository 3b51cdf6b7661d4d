import type { Telemetry } from './ports/telemetry.js';

/**
 * The one rule for the work that follows a committed transaction (cache fences, bus messages), used by
 * every aggregate: it never fails the call. The change is durable once Postgres commits; reporting an error
 * now would make the caller retry a write that happened. Each step runs in order (a fence before the
 * message announcing the change, so a watcher that reads on the message misses the old copy) and each
 * failure is contained to its step. What a failed step leaves behind is recovered elsewhere: a failed
 * fence makes the store distrust its cache until it has re-validated (see KvStore.fence), and watchers
 * replay lost messages from Postgres. Deletions add one step before their transaction, which may fail the
 * call: see FencedCopies.evictBeforeDelete. A contained failure is still reported to `telemetry`
 * (counted, and logged now and then), so an outage of the cache or the bus is seen.
 */
export async function afterCommit(telemetry: Telemetry, ...steps: Array<() => Promise<unknown>>): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      // Contained by design (above); the store records what it must repair.
      telemetry.contained('after_commit', err);
    }
  }
}
