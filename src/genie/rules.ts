import type { Principal } from '../principal.js';
import { fingerprintOf } from '../fingerprint.js';
import type { RequestKey } from '../ports/unit-of-work.js';

/** GetSession, a ListDialogue page, a FormatDialogue rendering and a ListModelTypes page stay under this. */
export const MAX_READ_BYTES = 3 * 1024 * 1024;

/** The longest prefix of `items` whose sizes sum to at most MAX_READ_BYTES; never empty when `items` is not. */
export function withinBudget<T>(items: T[], size: (item: T) => number): T[] {
  let total = 0;
  let n = 0;
  for (const item of items) {
    total += size(item);
    if (n > 0 && total > MAX_READ_BYTES) break;
    n++;
  }
  return items.slice(0, n);
}

/**
 * What makes a GenieService write safe to retry. Request ids are per account (the same scope as
 * PromptService's): API keys of one account may retry each other's calls; other accounts can never collide
 * with (or probe) them. The fingerprint only tells a retry from a reused request id; without an id nothing
 * reads it.
 */
export function genieRequestKey(caller: Principal, rpc: string, requestId: string | undefined, request: unknown): RequestKey {
  return { scope: `account:${caller.accountId}`, method: `parley.genie.v1.GenieService/${rpc}`, requestId, fingerprint: requestId ? fingerprintOf(request) : '' };
}
