import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { AppError, clip, clipBytes, MAX_PUBLIC_MESSAGE_BYTES, type ErrorCode } from '../errors.js';
import { Status as RpcStatus } from '../gen/google/rpc/status.js';
import { BadRequest, ErrorInfo, PreconditionFailure, ResourceInfo, RetryInfo } from '../gen/google/rpc/error_details.js';
import type { Any } from '../gen/google/protobuf/any.js';
import { isOutage } from '../storage/outage.js';

const codes: Record<ErrorCode, Status> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  NOT_FOUND: Status.NOT_FOUND,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  ABORTED: Status.ABORTED,
  PERMISSION_DENIED: Status.PERMISSION_DENIED,
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: Status.UNAVAILABLE,
  CANCELLED: Status.CANCELLED,
  INTERNAL: Status.INTERNAL,
};

/** google.rpc.ErrorInfo.domain of every error parley produces. */
export const ERROR_DOMAIN = 'parley';

const TYPE_PREFIX = 'type.googleapis.com/google.rpc.';

// The details travel base64-encoded in the HTTP/2 trailers, next to grpc-message: each part is clipped so
// that the whole stays under 4 KiB however many fields a request got wrong or however long they were.
const MAX_DETAILS_MESSAGE_BYTES = 512;
const MAX_FIELD_CHARS = 200;
const MAX_DESCRIPTION_CHARS = 300;
const MAX_BAD_REQUEST_BYTES = 1536;
const MAX_PRECONDITIONS = 5;
const MAX_REASON_CHARS = 63;
const MAX_METADATA_ENTRIES = 6;
const MAX_METADATA_KEY_CHARS = 64;
const MAX_METADATA_VALUE_CHARS = 128;

function packed(type: string, value: Uint8Array): Any {
  return { typeUrl: TYPE_PREFIX + type, value: Buffer.from(value) };
}

/** google.rpc.BadRequest: field violations in order, as many as fit the budget. */
function badRequest(err: AppError): BadRequest {
  const fieldViolations: BadRequest['fieldViolations'] = [];
  let size = 0;
  for (const v of err.violations) {
    const one = { field: clip(v.field, MAX_FIELD_CHARS), description: clip(v.description, MAX_DESCRIPTION_CHARS), reason: '', localizedMessage: undefined };
    size += Buffer.byteLength(one.field) + Buffer.byteLength(one.description) + 8;
    if (size > MAX_BAD_REQUEST_BYTES) break;
    fieldViolations.push(one);
  }
  return { fieldViolations };
}

function errorInfo(reason: string, metadata: ReadonlyMap<string, string>): ErrorInfo {
  // Keys are ours (never a caller's), but the map is kept free of a prototype all the same.
  const entries: { [key: string]: string } = Object.create(null);
  let n = 0;
  for (const [k, v] of metadata) {
    if (n++ === MAX_METADATA_ENTRIES) break;
    entries[clip(k, MAX_METADATA_KEY_CHARS)] = clip(v, MAX_METADATA_VALUE_CHARS);
  }
  return { reason: clip(reason, MAX_REASON_CHARS), domain: ERROR_DOMAIN, metadata: entries };
}

function retryInfo(ms: number): RetryInfo {
  const whole = Math.max(0, Math.ceil(ms));
  return { retryDelay: { seconds: Math.floor(whole / 1000), nanos: (whole % 1000) * 1_000_000 } };
}

/**
 * The google.rpc.Status (AIP-193) of an error: always an ErrorInfo (its reason is the code's name when the
 * domain gave none); a BadRequest when fields were wrong; a PreconditionFailure, ResourceInfo or RetryInfo
 * when the error has one. The same value travels in `grpc-status-details-bin` and in a Chat stream's ChatError.
 */
export function rpcStatusOf(err: unknown, signal?: AbortState): RpcStatus {
  const e = normalize(err, signal);
  const details: Any[] = [];
  if (e.app?.violations.length) details.push(packed('BadRequest', BadRequest.encode(badRequest(e.app)).finish()));
  details.push(packed('ErrorInfo', ErrorInfo.encode(errorInfo(e.app?.reason ?? e.reason, e.app?.metadata ?? new Map())).finish()));
  if (e.app?.preconditions.length) {
    const violations = e.app.preconditions.slice(0, MAX_PRECONDITIONS).map((v) => ({
      type: clip(v.type, MAX_METADATA_KEY_CHARS),
      subject: clip(v.subject, MAX_FIELD_CHARS),
      description: clip(v.description, MAX_DESCRIPTION_CHARS),
    }));
    details.push(packed('PreconditionFailure', PreconditionFailure.encode({ violations }).finish()));
  }
  if (e.app?.resource) {
    const info = { resourceType: e.app.resource.type, resourceName: clip(e.app.resource.name, MAX_METADATA_VALUE_CHARS), owner: '', description: '' };
    details.push(packed('ResourceInfo', ResourceInfo.encode(info).finish()));
  }
  if (e.app?.retryDelayMs !== undefined) details.push(packed('RetryInfo', RetryInfo.encode(retryInfo(e.app.retryDelayMs)).finish()));
  return { code: e.code, message: clipBytes(e.message, MAX_DETAILS_MESSAGE_BYTES), details };
}

/**
 * The reason a call's signal aborts when its client cancels the call. Named AbortError, as fetch and Node's
 * abortable APIs name what they throw on an aborted signal, so one rule maps both to CANCELLED.
 */
export class CallCancelled extends Error {
  constructor(message = 'cancelled by client') {
    super(message);
    this.name = 'AbortError';
  }
}

/** The reason a call's signal aborts when its deadline passes; named as AbortSignal.timeout() names its reason. */
export class DeadlineExceeded extends Error {
  constructor(message = 'deadline exceeded') {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** What the normaliser reads of a call's signal: an AbortSignal, or a call that makes its signal lazily. */
export interface AbortState {
  readonly aborted: boolean;
  readonly reason?: unknown;
}

const nameOf = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'name' in err ? err.name : undefined);

/**
 * The status of a call that ended because it was cancelled or ran out of time, whatever the handler threw
 * then (a query cut short, an AbortError from an abortable wait); undefined for any other error.
 */
function abortCode(err: unknown, signal: AbortState | undefined): Status | undefined {
  const reason = signal?.aborted ? signal.reason : undefined;
  if (reason instanceof CallCancelled || nameOf(err) === 'AbortError') return Status.CANCELLED;
  if (reason instanceof DeadlineExceeded || nameOf(err) === 'TimeoutError') return Status.DEADLINE_EXCEEDED;
  return undefined;
}

interface Normalized {
  code: Status;
  reason: string;
  /** The public message: an AppError's own (capped), or a fixed phrase that names nothing internal. */
  message: string;
  app: AppError | undefined;
}

function normalize(err: unknown, signal?: AbortState): Normalized {
  const aborted = abortCode(err, signal);
  if (aborted === Status.CANCELLED) return { code: aborted, reason: 'CANCELLED', message: 'cancelled', app: undefined };
  if (aborted === Status.DEADLINE_EXCEEDED) return { code: aborted, reason: 'DEADLINE_EXCEEDED', message: 'deadline exceeded', app: undefined };
  if (err instanceof AppError) {
    // grpc-message travels in the trailers too: a domain message quoting a caller's value is cut short.
    return { code: codes[err.code], reason: err.code, message: clipBytes(err.message, MAX_PUBLIC_MESSAGE_BYTES), app: err };
  }
  // Postgres unreachable: retryable, and a retry with the same request_id cannot apply a write twice.
  if (isOutage(err)) {
    return { code: Status.UNAVAILABLE, reason: 'DATABASE_UNAVAILABLE', message: 'the database is unavailable; retry with the same request_id', app: undefined };
  }
  return { code: Status.INTERNAL, reason: 'INTERNAL', message: 'internal error', app: undefined };
}

/**
 * The status code `toServiceError` gives `err`, without building its details: what a log line needs.
 * `signal` is the call's: when the client cancelled or the deadline passed, that is the call's status.
 */
export function statusCodeOf(err: unknown, signal?: AbortState): Status {
  if (isServiceError(err)) return err.code;
  return normalize(err, signal).code;
}

/**
 * What a log line may say of a failure besides its code: the ErrorInfo reason the client got, and the path
 * of the first field it got wrong — never a value of the request.
 */
export function failureOf(err: unknown, signal?: AbortState): { reason: string; field: string | undefined } {
  if (isServiceError(err)) return { reason: Status[err.code] ?? 'UNKNOWN', field: undefined };
  const e = normalize(err, signal);
  return { reason: clip(e.app?.reason ?? e.reason, MAX_REASON_CHARS), field: e.app?.violations[0] && clip(e.app.violations[0].field, MAX_FIELD_CHARS) };
}

/**
 * Turns any thrown value into a gRPC error; unknown errors become INTERNAL without leaking internals. A
 * call that was cancelled (an AbortError, or its signal aborted by the client) is CANCELLED, one whose
 * deadline passed DEADLINE_EXCEEDED, whatever was thrown; a ServiceError is a status already.
 */
export function toServiceError(err: unknown, signal?: AbortState): ServiceError {
  if (isServiceError(err)) return err;
  const { code, message } = normalize(err, signal);
  const metadata = new Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from(RpcStatus.encode(rpcStatusOf(err, signal)).finish()));
  return Object.assign(new Error(message), { code, details: message, metadata });
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'metadata' in err;
}
