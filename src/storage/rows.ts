/** Postgres timestamps come back as Date from pg and PGlite alike; this keeps call sites honest. */
export function asDate(v: unknown): Date {
  return v instanceof Date ? v : new Date(String(v));
}

export function asDateOrUndefined(v: unknown): Date | undefined {
  return v === null || v === undefined ? undefined : asDate(v);
}

/** jsonb arrives parsed from pg but may arrive as text from other drivers. */
export function asJson<T>(v: unknown): T {
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}
