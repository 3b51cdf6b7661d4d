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

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly violations: FieldViolation[] = [],
  ) {
    super(message);
    this.name = 'AppError';
  }
}

/**
 * A user-supplied value shortened for an error message: JSON-quoted, at most `max` characters of it, so a
 * message never echoes input at length (and never carries control characters raw).
 */
export function quote(value: string, max = 64): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(cut);
}

// Status messages and details travel in HTTP/2 trailers, whose size peers limit (often 8–16 KiB); a status
// past that limit hangs the call and can break the connection. Both are capped well below it.
const MAX_DETAILED_VIOLATIONS = 20;
const MAX_MESSAGE_VIOLATIONS = 3;
const MAX_FIELD_CHARS = 200;
const MAX_DESCRIPTION_CHARS = 300;

const clip = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

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
