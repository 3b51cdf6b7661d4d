import type { ExecutionContext } from 'ava';
import type { ServiceError, status } from '@grpc/grpc-js';
import { Status as RpcStatus } from '../../src/gen/google/rpc/status.js';
import { BadRequest, ErrorInfo, PreconditionFailure, ResourceInfo, RetryInfo } from '../../src/gen/google/rpc/error_details.js';

/** An error's google.rpc.Status from grpc-status-details-bin, its known details decoded as a client would. */
export interface DecodedError {
  error: ServiceError;
  rpcStatus: RpcStatus | undefined;
  errorInfo: ErrorInfo | undefined;
  badRequest: BadRequest | undefined;
  preconditionFailure: PreconditionFailure | undefined;
  resourceInfo: ResourceInfo | undefined;
  retryInfo: RetryInfo | undefined;
}

const PREFIX = 'type.googleapis.com/google.rpc.';

/** Decodes an error's details (the google.rpc.Status in grpc-status-details-bin). */
export function decodeError(error: ServiceError): DecodedError {
  const raw = error.metadata?.get('grpc-status-details-bin')[0];
  const rpcStatus = raw && typeof raw !== 'string' ? RpcStatus.decode(raw) : undefined;
  return { error, rpcStatus, ...decodeDetails(rpcStatus) };
}

/** The known details of a google.rpc.Status (a ChatError's, or one decoded from the trailers). */
export function decodeDetails(s: RpcStatus | undefined): Omit<DecodedError, 'error' | 'rpcStatus'> {
  const one = <T>(type: string, decode: (b: Uint8Array) => T): T | undefined => {
    const any = s?.details.find((d) => d.typeUrl === PREFIX + type);
    return any ? decode(any.value) : undefined;
  };
  return {
    errorInfo: one('ErrorInfo', (b) => ErrorInfo.decode(b)),
    badRequest: one('BadRequest', (b) => BadRequest.decode(b)),
    preconditionFailure: one('PreconditionFailure', (b) => PreconditionFailure.decode(b)),
    resourceInfo: one('ResourceInfo', (b) => ResourceInfo.decode(b)),
    retryInfo: one('RetryInfo', (b) => RetryInfo.decode(b)),
  };
}

/**
 * Awaits a call that must fail with `code` and an ErrorInfo of domain `parley` and reason `reason`; returns
 * the decoded details for further asserts. The status in the details must agree with the call's status.
 */
export async function expectError(t: ExecutionContext, call: Promise<unknown>, code: status, reason: string): Promise<DecodedError> {
  const error = (await t.throwsAsync(call)) as ServiceError;
  const decoded = decodeError(error);
  t.is(error.code, code, `status ${error.code} (${error.details}), not ${code}`);
  t.is(decoded.rpcStatus?.code, error.code, 'google.rpc.Status.code matches the call status');
  t.is(decoded.errorInfo?.domain, 'parley');
  t.is(decoded.errorInfo?.reason, reason, `reason of: ${error.details}`);
  return decoded;
}
