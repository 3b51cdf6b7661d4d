import { createHash, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import type { Principal } from '../principal.js';
import { permissionDenied, unauthenticated } from '../errors.js';
import type { Authenticate } from './rpc.js';

/** The token of an `authorization: Bearer <token>` header. */
function bearerToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m?.[1];
}

/** Compares in constant time (over digests, so the lengths leak nothing either). */
function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

const header = (md: Metadata) => {
  const v = md.get('authorization')[0];
  return typeof v === 'string' ? v : undefined;
};

/** AdminService: the bearer token must equal PARLEY_ADMIN_TOKEN; with none configured, admin is closed. */
export function adminAuth(adminToken: string | undefined): Authenticate {
  return async (md) => {
    const token = bearerToken(header(md));
    if (!token) throw unauthenticated('missing authorization: Bearer <PARLEY_ADMIN_TOKEN>', 'CREDENTIALS_MISSING');
    if (!adminToken) throw permissionDenied('AdminService is disabled: the server has no PARLEY_ADMIN_TOKEN', 'ADMIN_DISABLED');
    if (!sameSecret(token, adminToken)) throw unauthenticated('invalid admin token', 'ADMIN_TOKEN_INVALID');
    return undefined;
  };
}

/** PromptService and GenieService: the bearer secret must be a live API key. */
export function apiKeyAuth(principalOf: (secret: string) => Promise<Principal | undefined>): Authenticate {
  return async (md) => {
    const token = bearerToken(header(md));
    if (!token) throw unauthenticated('missing authorization: Bearer <api key>', 'CREDENTIALS_MISSING');
    const principal = await principalOf(token);
    if (!principal) throw unauthenticated('unknown or revoked API key', 'API_KEY_INVALID');
    return principal;
  };
}

/** The principal of an API-key call; handlers of API-key services may rely on it. */
export function callerOf(ctx: { principal: Principal | undefined }): Principal {
  if (!ctx.principal) throw unauthenticated('no caller');
  return ctx.principal;
}
