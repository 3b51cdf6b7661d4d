/** Failures the domain reports; transport maps each code to the gRPC status of the same name. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'CANCELLED'
  | 'INTERNAL';

export interface FieldViolation {
  /** The proto field path, snake_case, e.g. `prompt.name`. */
  field: string;
  description: string;
}

/** Machine-readable detail of an error, sent as google.rpc.ErrorInfo (and RetryInfo) beside the status. */
export interface ErrorDetail {
  /** A stable UPPER_SNAKE_CASE name of the cause, e.g. STREAM_LIMIT; absent: the code's name. */
  reason?: string;
  /** Facts a client may act on, e.g. the limit that was hit. Keys are ours, never the caller's input. */
  metadata?: ReadonlyMap<string, string>;
  /** When retrying may succeed (rate limits). */
  retryDelayMs?: number;
}

const noMetadata: ReadonlyMap<string, string> = new Map();

export class AppError extends Error {
  readonly reason: string | undefined;
  readonly metadata: ReadonlyMap<string, string>;
  readonly retryDelayMs: number | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly violations: FieldViolation[] = [],
    detail: ErrorDetail = {},
  ) {
    super(message);
    this.name = 'AppError';
    this.reason = detail.reason;
    this.metadata = detail.metadata ?? noMetadata;
    this.retryDelayMs = detail.retryDelayMs;
  }
}

/**
 * A user-supplied value shortened for an error message: JSON-quoted, at most `max` characters of it, so a
 * message never echoes input at length (and never carries control characters raw).
 */
export function quote(value: string, max = 64): string {
  return JSON.stringify(clip(value, max));
}

// Status messages and details travel in HTTP/2 trailers, whose size peers limit (often 8–16 KiB); a status
// past that limit hangs the call and can break the connection. Both are capped well below it.
const MAX_DETAILED_VIOLATIONS = 20;
const MAX_MESSAGE_VIOLATIONS = 3;
const MAX_FIELD_CHARS = 200;
const MAX_DESCRIPTION_CHARS = 300;

/** At most `max` UTF-16 units of `s`, never splitting a surrogate pair, marked with … when cut. */
export function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max - 1;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}

/**
 * At most `maxBytes` bytes of `s` in UTF-8, never splitting a character, marked with … when cut. Status
 * messages are capped in bytes: that is what travels in the trailers (and what peers limit), and a string of
 * 1,024 UTF-16 units can take 3 KiB.
 */
export function clipBytes(s: string, maxBytes: number): string {
  if (Buffer.byteLength(s, 'utf8') <= maxBytes) return s;
  const budget = maxBytes - Buffer.byteLength('…', 'utf8');
  let bytes = 0;
  let end = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > budget) break;
    bytes += n;
    end += ch.length;
  }
  return `${s.slice(0, end)}…`;
}

/** Longest message a client is sent, in UTF-8 bytes (status message, Chat error, aborted utterance). */
export const MAX_PUBLIC_MESSAGE_BYTES = 1024;

export function invalidArgument(field: string, description: string): AppError;
export function invalidArgument(violations: FieldViolation[]): AppError;
export function invalidArgument(a: string | FieldViolation[], description?: string): AppError {
  const all = typeof a === 'string' ? [{ field: a, description: description ?? 'is invalid' }] : a;
  const violations = all
    .slice(0, MAX_DETAILED_VIOLATIONS)
    .map((v) => ({ field: clip(v.field, MAX_FIELD_CHARS), description: clip(v.description, MAX_DESCRIPTION_CHARS) }));
  const named = violations.slice(0, MAX_MESSAGE_VIOLATIONS).map((v) => `${v.field}: ${v.description}`);
  const more = all.length - named.length;
  const message = more > 0 ? `${named.join('; ')}; and ${more} more` : named.join('; ');
  return new AppError('INVALID_ARGUMENT', message, violations);
}

/**
 * The text a client may see for any thrown value: an AppError's own message, and for anything else (a
 * database or network error, a bug) a fixed phrase — its text can name tables, statements and values of
 * other tenants. Every client-visible message goes through here or through the transport's status mapping.
 */
export function publicMessage(err: unknown): string {
  return err instanceof AppError ? clipBytes(err.message, MAX_PUBLIC_MESSAGE_BYTES) : 'internal error';
}

/**
 * A message naming what a caller asked for, as a tagged template: each interpolated value (an id, a name,
 * a key: the caller's input) is cut to a few dozen characters, so no message echoes input at length.
 */
export function naming(strings: TemplateStringsArray, ...values: unknown[]): string {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? clip(String(values[i]), MAX_NAMED_CHARS) : ''), '');
}
const MAX_NAMED_CHARS = 64;

/** `notFound\`session ${id}\`` (values cut short, see naming) or `notFound('extension')`. */
export function notFound(what: string | TemplateStringsArray, ...values: unknown[]): AppError {
  return new AppError('NOT_FOUND', `${typeof what === 'string' ? what : naming(what, ...values)} not found`);
}
export function alreadyExists(what: string | TemplateStringsArray, ...values: unknown[]): AppError {
  return new AppError('ALREADY_EXISTS', `${typeof what === 'string' ? what : naming(what, ...values)} already exists`);
}
export const failedPrecondition = (message: string) => new AppError('FAILED_PRECONDITION', message);
export const aborted = (message: string) => new AppError('ABORTED', message);
export const unauthenticated = (message: string) => new AppError('UNAUTHENTICATED', message);
export const permissionDenied = (message: string) => new AppError('PERMISSION_DENIED', message);

/** A per-account or per-call limit refused the request; `reason` says which, `metadata` carries its value. */
export const resourceExhausted = (reason: string, message: string, metadata: ReadonlyMap<string, string>, retryDelayMs?: number) =>
  new AppError('RESOURCE_EXHAUSTED', message, [], { reason, metadata, retryDelayMs });
