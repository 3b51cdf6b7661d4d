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
  return err instanceof AppError ? err.message : 'internal error';
}

export const notFound = (what: string) => new AppError('NOT_FOUND', `${what} not found`);
export const alreadyExists = (what: string) => new AppError('ALREADY_EXISTS', `${what} already exists`);
export const failedPrecondition = (message: string) => new AppError('FAILED_PRECONDITION', message);
export const aborted = (message: string) => new AppError('ABORTED', message);
export const unauthenticated = (message: string) => new AppError('UNAUTHENTICATED', message);
export const permissionDenied = (message: string) => new AppError('PERMISSION_DENIED', message);

/** A per-account or per-call limit refused the request; `reason` says which, `metadata` carries its value. */
export const resourceExhausted = (reason: string, message: string, metadata: ReadonlyMap<string, string>, retryDelayMs?: number) =>
  new AppError('RESOURCE_EXHAUSTED', message, [], { reason, metadata, retryDelayMs });
