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

export function invalidArgument(field: string, description: string): AppError;
export function invalidArgument(violations: FieldViolation[]): AppError;
export function invalidArgument(a: string | FieldViolation[], description?: string): AppError {
  const violations = typeof a === 'string' ? [{ field: a, description: description ?? 'is invalid' }] : a;
  return new AppError('INVALID_ARGUMENT', violations.map((v) => `${v.field}: ${v.description}`).join('; '), violations);
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
