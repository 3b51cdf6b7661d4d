import { randomInt } from 'node:crypto';

/** `3141-5926-5359`: the account number that appears in LLM client URLs. */
export const ACCOUNT_NUMBER = /^\d{4}-\d{4}-\d{4}$/;

/**
 * LLM client names are the first label of the client's URL host, up to its first hyphen (what follows a
 * hyphen names a user), so: lower case (hosts are case-insensitive) letters and digits only.
 */
export const LLM_CLIENT_NAME = /^[a-z][a-z0-9]{0,62}$/;

/** Plugin names are identifiers LLM tool calls refer to. */
export const PLUGIN_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/**
 * How many leading characters of an API key's secret are kept in clear (`pk_` and 5 random characters, 30
 * bits): enough to tell keys apart in ListApiKeys, far from enough to guess the other 250 bits.
 */
export const API_KEY_PREFIX_LENGTH = 8;

export const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$/;

export function newAccountNumber(): string {
  const block = () => String(randomInt(0, 10_000)).padStart(4, '0');
  return `${block()}-${block()}-${block()}`;
}
