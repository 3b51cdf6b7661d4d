import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { AppError, type ErrorCode, type FieldViolation } from '../errors.js';
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

/** google.rpc.Status with one google.rpc.BadRequest detail, encoded by hand (AIP-193). */
function statusDetails(code: Status, message: string, violations: FieldViolation[]): Buffer {
  const badRequest = new BinaryWriter();
  for (const v of violations) badRequest.uint32(10).fork().uint32(10).string(v.field).uint32(18).string(v.description).join();
  const w = new BinaryWriter().uint32(8).int32(code).uint32(18).string(message);
  w.uint32(26).fork().uint32(10).string('type.googleapis.com/google.rpc.BadRequest').uint32(18).bytes(badRequest.finish()).join();
  return Buffer.from(w.finish());
}

/** Turns any thrown value into a gRPC error; unknown errors become INTERNAL without leaking internals. */
export function toServiceError(err: unknown): ServiceError {
  if (isServiceError(err)) return err;
  if (err instanceof AppError) {
    const code = codes[err.code];
    const metadata = new Metadata();
    if (err.violations.length) metadata.set('grpc-status-details-bin', statusDetails(code, err.message, err.violations));
    return Object.assign(new Error(err.message), { code, details: err.message, metadata });
  }
  if (isOutage(err)) return outage();
  return Object.assign(new Error('internal error'), { code: Status.INTERNAL, details: 'internal error', metadata: new Metadata() });
}

/** Postgres unreachable (see isOutage): retryable, and a retry with the same request_id cannot apply a write twice. */
function outage(): ServiceError {
  const message = 'the database is unavailable; retry with the same request_id';
  return Object.assign(new Error(message), { code: Status.UNAVAILABLE, details: message, metadata: new Metadata() });
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'metadata' in err;
}
