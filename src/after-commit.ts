/**
 * The one rule for the work that follows a committed transaction (cache fences, bus messages), used by
 * every aggregate: it never fails the call. The change is durable once Postgres commits; reporting an error
 * now would make the caller retry a write that happened. Each step runs in order (a fence before the
 * message announcing the change, so a watcher that reads on the message misses the old copy) and each
 * failure is contained to its step. What a failed step leaves behind is recovered elsewhere: a failed
 * fence makes the store distrust its cache until it has re-validated (see KvStore.fence), and watchers
 * replay lost messages from Postgres. Deletions add one step before their transaction, which may fail the
 * call: see FencedCopies.evictBeforeDelete.
 */
export async function afterCommit(...steps: Array<() => Promise<unknown>>): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch {
      // Contained by design (above); the store records what it must repair.
    }
  }
}
