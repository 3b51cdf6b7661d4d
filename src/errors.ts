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

/** A condition the request depended on that did not hold; sent as a google.rpc.PreconditionFailure violation. */
export interface PreconditionViolation {
  /** What kind of condition, e.g. `TRANSITION`. */
  type: string;
  /** What it was about, e.g. `state/draft/event/submit`. */
  subject: string;
  description: string;
}

/** The resource a NOT_FOUND or ALREADY_EXISTS is about; sent as google.rpc.ResourceInfo. */
export interface ResourceRef {
  /** Lower-case words, e.g. `session`, `model type`. */
  type: string;
  /** The id or name the caller gave (cut short). */
  name: string;
}

/** Machine-readable detail of an error, sent as google.rpc.ErrorInfo (and RetryInfo…) beside the status. */
export interface ErrorDetail {
  /** A stable UPPER_SNAKE_CASE name of the cause, e.g. STREAM_LIMIT; absent: the code's name. */
  reason?: string;
  /** Facts a client may act on, e.g. the limit that was hit. Keys are ours, never the caller's input. */
  metadata?: ReadonlyMap<string, string>;
  /** When retrying may succeed (rate limits). */
  retryDelayMs?: number;
  preconditions?: readonly PreconditionViolation[];
  resource?: ResourceRef;
}

const noMetadata: ReadonlyMap<string, string> = new Map();

export class AppError extends Error {
  readonly reason: string | undefined;
  readonly metadata: ReadonlyMap<string, string>;
  readonly retryDelayMs: number | undefined;
  readonly preconditions: readonly PreconditionViolation[];
  readonly resource: ResourceRef | undefined;

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
    this.preconditions = detail.preconditions ?? [];
    this.resource = detail.resource;
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

/**
 * INVALID_ARGUMENT with a google.rpc.BadRequest naming each field; `reason` (ErrorInfo) defaults to
 * INVALID_ARGUMENT, or names a cause callers may branch on (e.g. FIELD_TOO_LARGE, REQUEST_ID_REUSED).
 */
export function invalidArgument(field: string, description: string, reason?: string): AppError;
export function invalidArgument(violations: FieldViolation[], reason?: string): AppError;
export function invalidArgument(a: string | FieldViolation[], b?: string, c?: string): AppError {
  const [description, reason] = typeof a === 'string' ? [b, c] : [undefined, b];
  const all = typeof a === 'string' ? [{ field: a, description: description ?? 'is invalid' }] : a;
  const violations = all
    .slice(0, MAX_DETAILED_VIOLATIONS)
    .map((v) => ({ field: clip(v.field, MAX_FIELD_CHARS), description: clip(v.description, MAX_DESCRIPTION_CHARS) }));
  const named = violations.slice(0, MAX_MESSAGE_VIOLATIONS).map((v) => `${v.field}: ${v.description}`);
  const more = all.length - named.length;
  const message = more > 0 ? `${named.join('; ')}; and ${more} more` : named.join('; ');
  return new AppError('INVALID_ARGUMENT', message, violations, { reason });
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

/** The ErrorInfo reason for a resource type: `model type` → `MODEL_TYPE`. */
function reasonOf(type: string): string {
  return type.toUpperCase().replace(/[^A-Z0-9]+/g, '_').replace(/^_|_$/g, '');
}

/**
 * `notFound\`session ${id}\`` (values cut short, see naming): the words before the first value are the resource
 * type, so the ErrorInfo reason is `SESSION_NOT_FOUND` and a ResourceInfo names the type and the id. The plain
 * form `notFound('extension')` has the reason NOT_FOUND.
 */
export function notFound(what: string | TemplateStringsArray, ...values: unknown[]): AppError {
  return resourceError('NOT_FOUND', 'not found', what, values);
}
/** `alreadyExists\`plugin ${name} in account ${id}\``: reason `PLUGIN_ALREADY_EXISTS`, as notFound. */
export function alreadyExists(what: string | TemplateStringsArray, ...values: unknown[]): AppError {
  return resourceError('ALREADY_EXISTS', 'already exists', what, values);
}

function resourceError(code: 'NOT_FOUND' | 'ALREADY_EXISTS', suffix: string, what: string | TemplateStringsArray, values: unknown[]): AppError {
  if (typeof what === 'string') return new AppError(code, `${what} ${suffix}`);
  const type = what[0]!.trim();
  const detail: ErrorDetail =
    type && values.length
      ? { reason: `${reasonOf(type)}_${code}`, resource: { type, name: clip(String(values[0]), MAX_NAMED_CHARS) } }
      : {};
  return new AppError(code, `${naming(what, ...values)} ${suffix}`, [], detail);
}

/**
 * FAILED_PRECONDITION: the request is valid but the resource is not in a state that allows it. `reason` is
 * the stable ErrorInfo reason (e.g. TRANSITION_NOT_ALLOWED); `violations` travel as a PreconditionFailure.
 */
export const failedPrecondition = (
  message: string,
  reason = 'FAILED_PRECONDITION',
  violations: readonly PreconditionViolation[] = [],
  metadata?: ReadonlyMap<string, string>,
) => new AppError('FAILED_PRECONDITION', message, [], { reason, preconditions: violations, metadata });

/** ABORTED REVISION_MISMATCH: an expected_revision did not match; metadata `current_revision` says what is. */
export const revisionMismatch = (current: number, message = `the resource is at revision ${current}; nothing was written`) =>
  new AppError('ABORTED', message, [], { reason: 'REVISION_MISMATCH', metadata: new Map([['current_revision', String(current)]]) });
export const unauthenticated = (message: string, reason = 'UNAUTHENTICATED') => new AppError('UNAUTHENTICATED', message, [], { reason });
export const permissionDenied = (message: string, reason = 'PERMISSION_DENIED') => new AppError('PERMISSION_DENIED', message, [], { reason });
/** UNAVAILABLE: retryable; `reason` names what was unreachable (DATABASE_UNAVAILABLE, CACHE_UNAVAILABLE…). */
export const unavailable = (message: string, reason = 'UNAVAILABLE') => new AppError('UNAVAILABLE', message, [], { reason });

/** INVALID_ARGUMENT FIELD_TOO_LARGE naming `field`; `metadata` may carry the limit (e.g. `max_bytes`). */
export function fieldTooLarge(field: string, description: string, metadata?: ReadonlyMap<string, string>): AppError {
  const e = invalidArgument(field, description, 'FIELD_TOO_LARGE');
  return metadata ? new AppError(e.code, e.message, e.violations, { reason: e.reason, metadata }) : e;
}

/** A per-account or per-call limit refused the request; `reason` says which, `metadata` carries its value. */
export const resourceExhausted = (reason: string, message: string, metadata: ReadonlyMap<string, string>, retryDelayMs?: number) =>
  new AppError('RESOURCE_EXHAUSTED', message, [], { reason, metadata, retryDelayMs });
