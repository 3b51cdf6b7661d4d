import { createHash } from 'node:crypto';
import { z } from 'zod';
import { invalidArgument } from './errors.js';
import { isReservedKey } from './keys.js';

export interface PageRequest {
  pageSize: number;
  pageToken?: string | undefined;
}

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

/** AIP-158: 0 means the default, larger than the maximum is capped, negative is an error. */
export function pageSizeOf(requested: number): number {
  if (!Number.isInteger(requested) || requested < 0) throw invalidArgument('page_size', 'must not be negative');
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}

/**
 * Page tokens are opaque to clients: base64url of a small JSON document holding the list it belongs to,
 * a hash of the request's filters and the keyset cursor. A token from another list, or with other
 * filters, or tampered with, is INVALID_ARGUMENT on page_token rather than a silently wrong page.
 *
 * Tokens are not signed (no secret every replica shares is configured), so a client can forge any cursor.
 * Every token is therefore checked in full before its cursor reaches a query: here, that the token is short
 * and its cursor holds only short well-formed strings (no NUL, no lone surrogate) and safe integers; then by
 * the list's own schema, that each value is one the list's query can take (a name of the right shape, an
 * integer in its column's range, a real timestamp). Nothing a forged token holds may reach Postgres as a
 * value it refuses, which would surface as INTERNAL.
 */
export function encodePageToken(list: string, filters: unknown, cursor: unknown): string {
  return Buffer.from(JSON.stringify({ l: list, f: filterHash(filters), c: cursor })).toString('base64url');
}

/** Longest page token accepted, in characters; the tokens this server issues are far shorter. */
export const MAX_PAGE_TOKEN_CHARS = 1024;
/** Longest string a cursor may hold (the longest is a secondary storage key, 256 characters). */
const MAX_CURSOR_STRING = 256;

/** A cursor guard from a zod schema; every list describes its cursor this way. */
export function cursorOf<S extends z.ZodType>(schema: S): (c: unknown) => c is z.infer<S> {
  return (c: unknown): c is z.infer<S> => schema.safeParse(c).success;
}


/** A string a cursor may carry to a query: well-formed, no NUL, short. */
export const cursorString = (max = MAX_CURSOR_STRING) =>
  z
    .string()
    .max(max)
    .refine((s) => s.isWellFormed() && !s.includes('\u0000'));

/** An integer a cursor may carry: safe, within [min, max] (a Postgres integer column: max 2^31 - 1). */
export const cursorInt = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

export const PG_INTEGER_MAX = 2 ** 31 - 1;

/**
 * Postgres' timestamptz text (`2025-01-31 12:00:00.123456+00`) for a real instant in 0001..9999: every field in
 * its range and the day one the month has, so Postgres cannot refuse it.
 */
export function isTimestampText(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?(?:([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?|Z)$/.exec(s);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return false;
  const probe = new Date(Date.UTC(2000, month - 1, day));
  probe.setUTCFullYear(year);
  if (probe.getUTCDate() !== day) return false; // 31 April, 29 February of a common year
  const [offHours, offMinutes, offSeconds] = [m[8], m[9], m[10]].map((x) => Number(x ?? 0)) as [number, number, number];
  return offHours <= 15 && offMinutes <= 59 && offSeconds <= 59;
}

/** Is `value` plain JSON of the shapes cursors take, with only short well-formed strings and safe integers? */
function isSafeCursorValue(value: unknown, depth = 0): boolean {
  switch (typeof value) {
    case 'string':
      return cursorString().safeParse(value).success;
    case 'number':
      return Number.isSafeInteger(value);
    case 'object': {
      if (value === null || Array.isArray(value) || depth > 0) return false;
      const entries = Object.entries(value);
      return entries.length <= 4 && entries.every(([k, v]) => !isReservedKey(k) && /^[A-Za-z]{1,16}$/.test(k) && isSafeCursorValue(v, depth + 1));
    }
    default:
      return false;
  }
}

export function decodePageToken<C>(token: string | undefined, list: string, filters: unknown, isCursor: (c: unknown) => c is C): C | undefined {
  if (!token) return undefined;
  if (token.length > MAX_PAGE_TOKEN_CHARS) throw invalidArgument('page_token', 'is not a page token this server issued');
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw invalidArgument('page_token', 'is not a page token this server issued');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw invalidArgument('page_token', 'is not a page token this server issued');
  const { l, f, c } = doc as { l?: unknown; f?: unknown; c?: unknown };
  if (l !== list || !isSafeCursorValue(c) || !isCursor(c)) throw invalidArgument('page_token', 'is not a page token of this list');
  if (f !== filterHash(filters)) throw invalidArgument('page_token', 'was issued for different request parameters');
  return c;
}

function filterHash(filters: unknown): string {
  return createHash('sha256').update(JSON.stringify(filters ?? null)).digest('base64url').slice(0, 16);
}

/** Fetch one row more than the page holds: its presence says whether a next page exists. */
export function splitPage<T>(rows: T[], size: number): { page: T[]; more: boolean } {
  return rows.length > size ? { page: rows.slice(0, size), more: true } : { page: rows, more: false };
}
