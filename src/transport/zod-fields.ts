import { z } from 'zod';
import { quote } from '../errors.js';
import { labelsOf, labelsProblem } from '../labels.js';

/** Proto3 has no null: an empty string means "not set". */
export const optionalString = z
  .string()
  .optional()
  .transform((s) => (s === '' || s === undefined ? undefined : s));

export const uuid = z.string().uuid('must be a UUID');

export const optionalUuid = optionalString.pipe(uuid.optional());

/**
 * What a request schema accepts, from the generated request type: every field optional at every depth, so a
 * schema names only the fields it reads, but each one with its generated name and type (`satisfies`).
 */
type RequestShape<T> = T extends Uint8Array
  ? Uint8Array
  : T extends Date
    ? T
    : T extends ReadonlyArray<infer E>
      ? Array<RequestShape<E>>
      : T extends object
        ? { [K in keyof T]?: RequestShape<T[K]> }
        : T;
export type RequestSchema<Req> = z.ZodType<unknown, RequestShape<Req>>;

/** The reason a size refusal carries (validate.ts reports it before any other violation). */
export const FIELD_TOO_LARGE = 'FIELD_TOO_LARGE';

const measure = { characters: (s: string) => [...s].length, bytes: (s: string) => Buffer.byteLength(s, 'utf8') };

/** A FIELD_TOO_LARGE issue; a limit in bytes also goes out as ErrorInfo metadata `max_bytes`. */
function tooLarge(input: unknown, message: string, maxBytes?: number): z.core.$ZodRawIssue {
  const metadata = maxBytes === undefined ? undefined : { max_bytes: String(maxBytes) };
  return { code: 'custom', input, message, params: { reason: FIELD_TOO_LARGE, metadata } };
}

/**
 * Text of at most `max` units, FIELD_TOO_LARGE past it. The unit is named in the message, because the limits
 * differ by service: admin fields count characters (Unicode code points), prompt and genie fields UTF-8 bytes.
 */
export function textOfAtMost(max: number, unit: 'characters' | 'bytes') {
  return z.string().check((ctx) => {
    // UTF-16 length bounds both counts from one side: no need to measure short strings.
    if (unit === 'characters' ? ctx.value.length <= max : ctx.value.length * 3 <= max) return;
    const n = measure[unit](ctx.value);
    if (n > max) ctx.issues.push(tooLarge(ctx.value, `is ${n} ${unit}; at most ${max} are allowed`, unit === 'bytes' ? max : undefined));
  });
}

/** Bytes (a proto `bytes` field) of at most `max`, FIELD_TOO_LARGE past it. */
export function bytesOfAtMost(max: number) {
  return z.instanceof(Uint8Array).check((ctx) => {
    if (ctx.value.length > max) ctx.issues.push(tooLarge(ctx.value, `is ${ctx.value.length} bytes; at most ${max} are allowed`, max));
  });
}

/**
 * The FIELD_TOO_LARGE issue for a JSON value (a Struct, a google.protobuf.Value, a whole resource) past
 * `maxBytes` as JSON, or undefined when it fits. For checks of values a schema builds (put a `path` on it).
 */
export function jsonSizeIssue(value: unknown, maxBytes: number): z.core.$ZodRawIssue | undefined {
  const bytes = Buffer.byteLength(JSON.stringify(value ?? null));
  return bytes > maxBytes ? tooLarge(value, `is ${bytes} bytes as JSON; at most ${maxBytes} are allowed`, maxBytes) : undefined;
}

/** A JSON value (google.protobuf.Value) of at most `maxBytes` as JSON, FIELD_TOO_LARGE past it. */
export function jsonOfAtMost(maxBytes: number) {
  return z.unknown().check((ctx) => {
    const issue = jsonSizeIssue(ctx.value, maxBytes);
    if (issue) ctx.issues.push(issue);
  });
}

/** The first object key longer than `max` characters anywhere in `value`. */
function longKey(value: unknown, max: number): string | undefined {
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) stack.push(...(v as unknown[]));
    else {
      for (const [k, child] of Object.entries(v)) {
        if (k.length > max) return k;
        stack.push(child);
      }
    }
  }
  return undefined;
}

/**
 * A Struct (user JSON) of at most `maxBytes` as JSON whose keys, at any depth, are at most `maxKeyChars`
 * UTF-16 units long; FIELD_TOO_LARGE past either.
 */
export function structOfAtMost(maxBytes: number, maxKeyChars: number) {
  return z.record(z.string(), z.unknown()).check((ctx) => {
    const issue = jsonSizeIssue(ctx.value, maxBytes);
    if (issue) return void ctx.issues.push(issue);
    const k = longKey(ctx.value, maxKeyChars);
    if (k !== undefined) ctx.issues.push(tooLarge(ctx.value, `has a key of ${k.length} characters (${quote(k, 40)}); keys are at most ${maxKeyChars}`));
  });
}

/** Longest end user id, in characters (Unicode code points). */
export const MAX_END_USER_ID_CHARS = 128;

/**
 * A gateway's end user id (CreateSession, OpenPrompt, the list filters, EraseEndUser): opaque to parley, so
 * only what keeps it an unambiguous key is checked: 1–128 characters, none of them a control character
 * (Unicode Cc: C0, DEL, C1), and no whitespace at either end (`" u1"` and `"u1"` would name different end
 * users by accident). Messages never repeat the id.
 */
export const endUserId = z
  .string()
  .min(1, 'is required')
  .check((ctx) => {
    const n = [...ctx.value].length;
    if (n > MAX_END_USER_ID_CHARS) ctx.issues.push({ code: 'custom', input: ctx.value, message: `is ${n} characters; at most ${MAX_END_USER_ID_CHARS} are allowed` });
    else if (/\p{Cc}/u.test(ctx.value)) ctx.issues.push({ code: 'custom', input: ctx.value, message: 'must not contain control characters' });
    else if (/^\s|\s$/u.test(ctx.value)) ctx.issues.push({ code: 'custom', input: ctx.value, message: 'must not start or end with whitespace' });
  });

/** An end user id where empty means none (undefined). */
export const optionalEndUserId = optionalString.pipe(endUserId.optional());

/**
 * A labels map (see src/labels.ts for the bounds) as a null-prototype object; absent is no labels. Refusals
 * name the map and never repeat a long key or value.
 */
export const labelsField = z
  .record(z.string(), z.string())
  .optional()
  .transform((l, ctx) => {
    const entries = Object.entries(l ?? {});
    const why = labelsProblem(entries);
    if (why) {
      ctx.issues.push({ code: 'custom', input: undefined, message: why });
      return z.NEVER;
    }
    return labelsOf(entries);
  });
