import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { AppError, clip, clipBytes, MAX_PUBLIC_MESSAGE_BYTES, type ErrorCode } from '../errors.js';
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
const MAX_REASON_CHARS = 64;
const MAX_METADATA_ENTRIES = 6;
const MAX_METADATA_KEY_CHARS = 64;
const MAX_METADATA_VALUE_CHARS = 128;

function any(w: BinaryWriter, type: string, value: Uint8Array): void {
  w.uint32(26).fork().uint32(10).string(TYPE_PREFIX + type).uint32(18).bytes(value).join();
}

/** google.rpc.BadRequest: field violations in order, as many as fit the budget. */
function badRequest(err: AppError): Uint8Array {
  const w = new BinaryWriter();
  let size = 0;
  for (const v of err.violations) {
    const one = new BinaryWriter().uint32(10).string(clip(v.field, MAX_FIELD_CHARS)).uint32(18).string(clip(v.description, MAX_DESCRIPTION_CHARS)).finish();
    if (size + one.length > MAX_BAD_REQUEST_BYTES) break;
    size += one.length;
    w.uint32(10).bytes(one);
  }
  return w.finish();
}

/** google.rpc.ErrorInfo { reason = 1; domain = 2; map<string, string> metadata = 3; } */
function errorInfo(reason: string, metadata: ReadonlyMap<string, string>): Uint8Array {
  const w = new BinaryWriter().uint32(10).string(clip(reason, MAX_REASON_CHARS)).uint32(18).string(ERROR_DOMAIN);
  let n = 0;
  for (const [k, v] of metadata) {
    if (n++ === MAX_METADATA_ENTRIES) break;
    w.uint32(26).fork().uint32(10).string(clip(k, MAX_METADATA_KEY_CHARS)).uint32(18).string(clip(v, MAX_METADATA_VALUE_CHARS)).join();
  }
  return w.finish();
}

/** google.rpc.RetryInfo { google.protobuf.Duration retry_delay = 1; } */
function retryInfo(ms: number): Uint8Array {
  const whole = Math.max(0, Math.ceil(ms));
  return new BinaryWriter()
    .uint32(10)
    .fork()
    .uint32(8)
    .int64(Math.floor(whole / 1000))
    .uint32(16)
    .int32((whole % 1000) * 1_000_000)
    .join()
    .finish();
}

/**
 * google.rpc.Status (AIP-193), encoded by hand: always an ErrorInfo (its reason is the code's name when the
 * domain gave none), a BadRequest when fields were wrong, a RetryInfo when a retry may succeed later.
 */
function statusDetails(code: Status, codeName: string, message: string, err: AppError | undefined): Buffer {
  const w = new BinaryWriter().uint32(8).int32(code).uint32(18).string(clipBytes(message, MAX_DETAILS_MESSAGE_BYTES));
  if (err?.violations.length) any(w, 'BadRequest', badRequest(err));
  any(w, 'ErrorInfo', errorInfo(err?.reason ?? codeName, err?.metadata ?? new Map()));
  if (err?.retryDelayMs !== undefined) any(w, 'RetryInfo', retryInfo(err.retryDelayMs));
  return Buffer.from(w.finish());
}

/** Turns any thrown value into a gRPC error; unknown errors become INTERNAL without leaking internals. */
export function toServiceError(err: unknown): ServiceError {
  if (isServiceError(err)) return err;
  const metadata = new Metadata();
  if (err instanceof AppError) {
    const code = codes[err.code];
    // grpc-message travels in the trailers too: a domain message quoting a caller's value is cut short.
    const message = clipBytes(err.message, MAX_PUBLIC_MESSAGE_BYTES);
    metadata.set('grpc-status-details-bin', statusDetails(code, err.code, message, err));
    return Object.assign(new Error(message), { code, details: message, metadata });
  }
  // Postgres unreachable: retryable, and a retry with the same request_id cannot apply a write twice.
  const [code, reason, message] = isOutage(err)
    ? [Status.UNAVAILABLE, 'UNAVAILABLE', 'the database is unavailable; retry with the same request_id']
    : [Status.INTERNAL, 'INTERNAL', 'internal error'];
  metadata.set('grpc-status-details-bin', statusDetails(code, reason, message, undefined));
  return Object.assign(new Error(message), { code, details: message, metadata });
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'metadata' in err;
}
