import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { invalidArgument } from './errors.js';

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
 */
export function encodePageToken(list: string, filters: unknown, cursor: unknown): string {
  return Buffer.from(JSON.stringify({ l: list, f: filterHash(filters), c: cursor })).toString('base64url');
}

/** A cursor guard from a zod schema, for lists that describe their cursor that way. */
export function cursorOf<S extends z.ZodType>(schema: S): (c: unknown) => c is z.infer<S> {
  return (c: unknown): c is z.infer<S> => schema.safeParse(c).success;
}

export function decodePageToken<C>(token: string | undefined, list: string, filters: unknown, isCursor: (c: unknown) => c is C): C | undefined {
  if (!token) return undefined;
  let doc: { l?: unknown; f?: unknown; c?: unknown };
  try {
    doc = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as typeof doc;
  } catch {
    throw invalidArgument('page_token', 'is not a page token this server issued');
  }
  if (!doc || typeof doc !== 'object' || doc.l !== list || !isCursor(doc.c)) {
    throw invalidArgument('page_token', 'is not a page token of this list');
  }
  if (doc.f !== filterHash(filters)) throw invalidArgument('page_token', 'was issued for different request parameters');
  return doc.c;
}

function filterHash(filters: unknown): string {
  return createHash('sha256').update(JSON.stringify(filters ?? null)).digest('base64url').slice(0, 16);
}

/** Fetch one row more than the page holds: its presence says whether a next page exists. */
export function splitPage<T>(rows: T[], size: number): { page: T[]; more: boolean } {
  return rows.length > size ? { page: rows.slice(0, size), more: true } : { page: rows, more: false };
}
