/**
 * Whether a thrown value means "the database is unreachable right now" rather than "this request failed":
 * the connection was refused, reset or terminated, the pool could not hand out a connection in time, or
 * the embedded database is closed. Such a call may have done nothing, or (if the failure hit the commit)
 * may have committed; either way the caller's remedy is to retry with the same request_id, so transport
 * reports it as UNAVAILABLE instead of INTERNAL.
 */
export function isOutage(err: unknown, depth = 0): boolean {
  if (typeof err !== 'object' || err === null || depth > 3) return false;
  const e = err as { code?: unknown; name?: unknown; message?: unknown; errors?: unknown; cause?: unknown };
  if (typeof e.code === 'string' && (NETWORK_CODES.has(e.code) || OUTAGE_SQLSTATES.has(e.code) || e.code.startsWith('08'))) return true;
  if (e.name === 'KnexTimeoutError') return true;
  if (typeof e.message === 'string' && OUTAGE_MESSAGES.some((m) => (e.message as string).includes(m))) return true;
  // A connect to a name with several addresses fails with an AggregateError of per-address errors.
  if (Array.isArray(e.errors) && e.errors.some((x) => isOutage(x, depth + 1))) return true;
  return isOutage(e.cause, depth + 1);
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections (SQLSTATE class 08 is tested apart). */
const OUTAGE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

const OUTAGE_MESSAGES = [
  // node-postgres, when the server or the network drops a connection mid-query
  'Connection terminated',
  // knex, when the pool cannot hand out a connection in time
  'Timeout acquiring a connection',
  // PGlite, once it is closed (the embedded default shutting down or crashed)
  'PGlite is closed',
];
