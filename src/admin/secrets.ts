import { createHash, randomBytes } from 'node:crypto';

/** `pk_` + 32 random bytes, base64url: unguessable and safe in a header. */
export function newApiKeySecret(): string {
  return `pk_${randomBytes(32).toString('base64url')}`;
}

/** What is stored of a secret, and what a presented one is looked up by (the secret itself never is). */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
