import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Who is calling: the user profile (and its account) an API key belongs to. */
export interface Principal {
  apiKeyId: string;
  userProfileId: string;
  accountId: string;
}

/** `pk_` + 32 random bytes, base64url: unguessable and safe in a header. */
export function newApiKeySecret(): string {
  return `pk_${randomBytes(32).toString('base64url')}`;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function bearerToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m?.[1];
}

export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
