import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { invalidArgument } from '../errors.js';

/**
 * Opaque keyset cursors (AIP-158). A token carries a digest of the request's filters, so reusing it with
 * different filters is INVALID_ARGUMENT rather than a silently wrong page.
 */
export function encodePageToken(position: unknown, filters: unknown): string {
  return Buffer.from(JSON.stringify({ p: position, f: digest(filters) })).toString('base64url');
}

export function decodePageToken<S extends z.ZodType>(token: string | undefined, schema: S, filters: unknown): z.infer<S> | undefined {
  if (!token) return undefined;
  const bad = () => invalidArgument('page_token', 'is not a token this list returned (or the filters changed)');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (typeof parsed !== 'object' || parsed === null || (parsed as { f?: unknown }).f !== digest(filters)) throw bad();
  const r = schema.safeParse((parsed as { p?: unknown }).p);
  if (!r.success) throw bad();
  return r.data;
}

function digest(filters: unknown): string {
  return createHash('sha256').update(JSON.stringify(filters ?? null)).digest('base64url').slice(0, 16);
}
