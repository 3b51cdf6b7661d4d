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
