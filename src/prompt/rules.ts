/**
 * Pure validation and derivation rules for prompt sessions (Prompt, PromptHistory,
 * PromptToolCall, PromptPluginUsage).
 *
 * Nothing in this module performs I/O; the only side effect is drawing
 * random bytes in `newSessionKey()`.
 *
 * Every `validate*` function returns an error message, or `undefined` when the value is valid.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { quote } from '../errors.js';
import type { PromptPatch, PromptRow } from './store.js';

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/** Maximum length of a resource name accepted at the API (the reference manifest allows at most 50). */
export const PROMPT_NAME_MAX_LENGTH = 50;
/** Width of the `version` column. */
const VERSION_MAX_LENGTH = 255;
/** Version applied when none is given. */
export const DEFAULT_PROMPT_VERSION = '1.0.0';
/** Random bytes in a generated session key. */
const SESSION_KEY_BYTES = 32;
/** A session key is exactly this many hex characters (64, as in the reference). */
export const SESSION_KEY_LENGTH = SESSION_KEY_BYTES * 2;
/** Width of the `user_agent` column; longer values are truncated, not rejected. */
export const USER_AGENT_MAX_LENGTH = 255;
/** Width of the `url` column (Django URLField default). */
export const PROMPT_URL_MAX_LENGTH = 200;
/** Maximum tag length (django-taggit `Tag.name`). */
export const TAG_MAX_LENGTH = 100;
/** Maximum annotation key length (our limit; the reference has none). */
const ANNOTATION_KEY_MAX_LENGTH = 255;
/** Maximum length of a string annotation value. */
export const ANNOTATION_STRING_VALUE_MAX_LENGTH = 2048;
/** Width of `PromptToolCall.function_name`. */
export const TOOL_CALL_FUNCTION_NAME_MAX_LENGTH = 255;
/** Namespace for prompt-session cache keys (the reference used the bare session key). */
export const PROMPT_CACHE_KEY_PREFIX = 'parley:prompt:session:';

// ---------------------------------------------------------------------------
// Patterns (JS `$` without the `m` flag matches only at the true end of input,
// so unlike Python's re.match(...$) a trailing newline is never accepted).
// ---------------------------------------------------------------------------

/** camelCase: a lowercase ASCII letter, then ASCII letters and digits. */
const CAMEL_CASE_PATTERN = /^[a-z][a-zA-Z0-9]*$/;
/** Semantic version 2.0.0 (MAJOR.MINOR.PATCH[-prerelease][+build]). */
const SEMVER_PATTERN =
  /^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$/;
/** Account number: three groups of four ASCII digits, e.g. 3141-5926-5359. */
const ACCOUNT_NUMBER_PATTERN = /^[0-9]{4}-[0-9]{4}-[0-9]{4}$/;
/** Session key as accepted from clients: 64 hex characters. */
const SESSION_KEY_PATTERN = /^[0-9a-fA-F]{64}$/;
/** Tag characters: word characters, spaces and URL punctuation. */
const TAG_PATTERN = /^[\p{L}\p{N}_\-.~:/?#[\]@!$&'()*+,;= %]+$/u;
/** Annotation key characters: URL-friendly, no whitespace. */
const ANNOTATION_KEY_PATTERN = /^[A-Za-z0-9._~:/?#@=&-]+$/;
/** One DNS label (after URL parsing, which lowercases the host). */
const DNS_LABEL_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

// ---------------------------------------------------------------------------
// Name, version, description
// ---------------------------------------------------------------------------

function isCamelCase(value: string): boolean {
  return CAMEL_CASE_PATTERN.test(value);
}

/** A prompt (or any metadata resource) name: camelCase, 1..PROMPT_NAME_MAX_LENGTH characters. */
export function validatePromptName(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'name must be a string';
  if (name.length === 0) return 'name is required';
  if (name.length > PROMPT_NAME_MAX_LENGTH) {
    return `name must be at most ${PROMPT_NAME_MAX_LENGTH} characters`;
  }
  if (!isCamelCase(name)) {
    return `name ${quote(name)} must be camelCase: a lowercase letter followed by letters and digits only (e.g. "apiKey")`;
  }
  return undefined;
}

/** A default name for a prompt created implicitly for a session ("prompt" + first 8 hex chars of the key). */
export function defaultPromptName(sessionKey: string): string {
  return `prompt${sessionKey.slice(0, 8).toLowerCase()}`;
}

/** Strict semantic version check: the value must be present. */
function validateSemver(version: unknown): string | undefined {
  if (typeof version !== 'string') return 'version must be a string';
  if (version.length === 0) return 'version is required';
  if (version.length > VERSION_MAX_LENGTH) {
    return `version must be at most ${VERSION_MAX_LENGTH} characters`;
  }
  if (!SEMVER_PATTERN.test(version)) {
    return `version ${quote(version)} is not a valid semantic version (MAJOR.MINOR.PATCH, e.g. "1.0.0")`;
  }
  return undefined;
}

/** The optional `version` field: absent/empty is allowed (the default applies), otherwise semver. */
export function validatePromptVersion(version: unknown): string | undefined {
  if (version === undefined || version === null || version === '') return undefined;
  return validateSemver(version);
}

/** The stored version: the given one, or DEFAULT_PROMPT_VERSION when absent or empty. */
export function normalizePromptVersion(version: string | null | undefined): string {
  return version ? version : DEFAULT_PROMPT_VERSION;
}

/** Description is free text; whitespace-only or missing becomes undefined. */
export function normalizeDescription(description: string | null | undefined): string | undefined {
  if (typeof description !== 'string') return undefined;
  const trimmed = description.trim();
  return trimmed === '' ? undefined : trimmed;
}

// ---------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------

/** One tag. It is trimmed first; the trimmed value must be 1..TAG_MAX_LENGTH allowed characters. */
export function validateTag(tag: unknown): string | undefined {
  if (typeof tag !== 'string') return 'tag must be a string';
  const trimmed = tag.trim();
  if (trimmed.length === 0) return 'tag must not be empty';
  if (trimmed.length > TAG_MAX_LENGTH) return `tag must be at most ${TAG_MAX_LENGTH} characters`;
  if (!TAG_PATTERN.test(trimmed)) {
    return `tag ${quote(trimmed)} contains characters that are not URL friendly`;
  }
  return undefined;
}

/** Trimmed tags with exact duplicates removed, first occurrence kept (tags form a set). */
export function normalizeTags(tags: readonly string[] | null | undefined): string[] {
  if (!tags) return [];
  const out: string[] = [];
  const seen = new Set<string>();
  for (const tag of tags) {
    const t = tag.trim();
    if (!seen.has(t)) {
      seen.add(t);
      out.push(t);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Annotations: a list of objects, e.g. [{"example.com/project": "x"}, {"owner": "hr"}]
// ---------------------------------------------------------------------------

export function validateAnnotationKey(key: string): string | undefined {
  if (key.length === 0) return 'annotation key must not be empty';
  if (key.length > ANNOTATION_KEY_MAX_LENGTH) {
    return `annotation key must be at most ${ANNOTATION_KEY_MAX_LENGTH} characters`;
  }
  if (!ANNOTATION_KEY_PATTERN.test(key)) {
    return `annotation key ${quote(key)} contains characters that are not URL friendly`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Session keys
// ---------------------------------------------------------------------------

/**
 * A new session key: 32 bytes from the CSPRNG as 64 lowercase hex characters.
 * URL safe, and the same shape as the reference's keys (which were a SHA-256 of
 * guessable request data plus the clock).
 */
export function newSessionKey(): string {
  return randomBytes(SESSION_KEY_BYTES).toString('hex');
}

export function validateSessionKey(sessionKey: unknown): string | undefined {
  if (typeof sessionKey !== 'string') return 'session key must be a string';
  if (sessionKey.length === 0) return 'session key is required';
  if (!SESSION_KEY_PATTERN.test(sessionKey)) {
    return `session key must be exactly ${SESSION_KEY_LENGTH} hexadecimal characters`;
  }
  return undefined;
}

/** Canonical (lowercase) form of a valid session key, so "ABC…" and "abc…" are one session. */
export function normalizeSessionKey(sessionKey: string): string {
  return sessionKey.toLowerCase();
}

/**
 * Cache key under which a prompt session is stored (for the configured PARLEY_PROMPT_CACHE_TTL); the session key
 * is its hash tag, so a Redis Cluster keeps it in that session's slot.
 */
export function promptCacheKey(sessionKey: string): string {
  return `${PROMPT_CACHE_KEY_PREFIX}{${normalizeSessionKey(sessionKey)}}`;
}

// ---------------------------------------------------------------------------
// Account numbers and LLM-client URLs
// ---------------------------------------------------------------------------

/** An absolute http(s) URL, parsed; undefined for anything else. */
function httpUrl(url: string): URL | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed : undefined;
}

/**
 * Resolve a named LLM-client URL, `http(s)://<client>[-<username>].<NNNN-NNNN-NNNN>.<api domain>[:port]/...`.
 * The first host label names the client (text before its first hyphen, when it has one; the
 * remainder is the account username); the second label is the account number. Only the host is
 * examined: an account number in the path, query or fragment does not count.
 * Hosts are case-insensitive, so `llmClientName` is lowercase; compare names case-insensitively.
 */
export function parseLlmClientUrl(url: string): { llmClientName: string; accountNumber: string } | undefined {
  const parsed = httpUrl(url);
  if (!parsed) return undefined;
  let host = parsed.hostname;
  if (host.endsWith('.')) host = host.slice(0, -1);
  const labels = host.split('.');
  if (labels.length < 3) return undefined;
  const [first, account, ...rest] = labels as [string, string, ...string[]];
  if (!ACCOUNT_NUMBER_PATTERN.test(account)) return undefined;
  if (!DNS_LABEL_PATTERN.test(first)) return undefined;
  if (rest.some((label) => !DNS_LABEL_PATTERN.test(label))) return undefined;
  const hyphen = first.indexOf('-');
  const llmClientName = hyphen === -1 ? first : first.slice(0, hyphen);
  if (llmClientName === '') return undefined;
  return { llmClientName, accountNumber: account };
}

// ---------------------------------------------------------------------------
// Request metadata recorded on a Prompt (ip_address, user_agent, url)
// ---------------------------------------------------------------------------

/** The client address must be a literal IPv4 or IPv6 address. */
export function validateIpAddress(ip: unknown): string | undefined {
  if (typeof ip !== 'string' || ip.length === 0) return 'ip address is required';
  if (isIP(ip) === 0) return `${quote(ip)} is not an IPv4 or IPv6 address`;
  return undefined;
}

/** User agent as recorded: missing becomes "", longer values are cut to USER_AGENT_MAX_LENGTH. */
export function normalizeUserAgent(userAgent: string | null | undefined): string {
  if (!userAgent) return '';
  if (userAgent.length <= USER_AGENT_MAX_LENGTH) return userAgent;
  let cut = userAgent.slice(0, USER_AGENT_MAX_LENGTH);
  // do not leave half a surrogate pair at the end
  const last = cut.charCodeAt(cut.length - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1);
  return cut;
}

/**
 * URL as recorded on a prompt: http(s) only, without credentials, query string or fragment
 * (the query may carry the session key). Returns undefined when the URL is unusable.
 */
export function normalizePromptUrl(url: string): string | undefined {
  const parsed = httpUrl(url);
  return parsed && `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
}

export function validatePromptUrl(url: unknown): string | undefined {
  if (typeof url !== 'string' || url.length === 0) return 'url is required';
  const normalized = normalizePromptUrl(url);
  if (normalized === undefined) return `"${url}" is not an http(s) URL`;
  if (normalized.length > PROMPT_URL_MAX_LENGTH) {
    return `url must be at most ${PROMPT_URL_MAX_LENGTH} characters (without query string)`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Tool calls
// ---------------------------------------------------------------------------

/** PromptToolCall.function_name is optional; when present it is 1..255 characters. */
export function validateToolCallFunctionName(name: unknown): string | undefined {
  if (name === undefined || name === null) return undefined;
  if (typeof name !== 'string') return 'function name must be a string';
  if (name.length === 0) return 'function name must not be empty';
  if (name.length > TOOL_CALL_FUNCTION_NAME_MAX_LENGTH) {
    return `function name must be at most ${TOOL_CALL_FUNCTION_NAME_MAX_LENGTH} characters`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

/**
 * The message list shown for one PromptHistory entry: its `messages` when non-empty, else
 * `request.messages` when that is a list, else [].
 */
export function historyMessages(entry: {
  messages?: unknown;
  request?: unknown;
}): unknown[] {
  if (Array.isArray(entry.messages) && entry.messages.length > 0) return entry.messages;
  const req = entry.request;
  if (req && typeof req === 'object' && !Array.isArray(req) && 'messages' in req && Array.isArray(req.messages)) return req.messages as unknown[];
  return [];
}

// ---------------------------------------------------------------------------
// Updates
// ---------------------------------------------------------------------------

const sortedEntries = (o: Record<string, string>) => Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The part of `patch` that differs from `current`: a patch that changes nothing writes nothing (no revision,
 * no update time). Annotations compare as maps (key order does not count), tags as lists.
 */
export function changedFields(current: PromptRow, patch: PromptPatch): PromptPatch {
  const out: PromptPatch = {};
  if (patch.name !== undefined && patch.name !== current.name) out.name = patch.name;
  if (patch.description !== undefined && patch.description !== current.description) out.description = patch.description;
  if (patch.version !== undefined && patch.version !== current.version) out.version = patch.version;
  if (patch.annotations !== undefined && !sameJson(sortedEntries(patch.annotations), sortedEntries(current.annotations))) {
    out.annotations = patch.annotations;
  }
  if (patch.tags !== undefined && !sameJson(patch.tags, current.tags)) out.tags = patch.tags;
  if (patch.labels !== undefined && !sameJson(sortedEntries(patch.labels), sortedEntries(current.labels))) out.labels = patch.labels;
  return out;
}
