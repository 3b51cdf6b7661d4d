/**
 * The checks every request passes before any handler sees it, driven by the messages' descriptors so no
 * field of any RPC can be forgotten:
 *
 * - strings (fields, map keys, Struct keys and values, mask paths) hold valid UTF-8 and no NUL — Postgres
 *   stores neither, and a silently substituted U+FFFD is data loss;
 * - Struct/Value/ListValue hold finite numbers (JSON has no NaN or Infinity) and nest at most
 *   MAX_JSON_DEPTH levels, and no key is `__proto__` (the one key JavaScript cannot hold as data);
 * - timestamps lie in 0001-01-01..9999-12-31, the range google.protobuf.Timestamp defines;
 * - enum fields hold a value the contract defines.
 *
 * A problem is INVALID_ARGUMENT naming the field by its proto path (`session.fields.a.b`, `messages[2].content`).
 * A request that cannot be decoded at all (nesting past the decoder's recursion limit, truncated bytes) is
 * INVALID_ARGUMENT too, never INTERNAL, naming the field where the nesting goes too deep when it can.
 */
import { createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { BinaryReader, WireType, configureTextEncoding, getTextEncoding } from '@bufbuild/protobuf/wire';
import type { FieldViolation } from '../errors.js';
import { quote } from '../errors.js';
import { isReservedKey } from '../keys.js';

/** Deepest Struct/ListValue nesting accepted, counting the outermost object as 1. */
export const MAX_JSON_DEPTH = 32;
/** At most this many problems are reported per request; the first one usually says enough. */
const MAX_REPORTED = 5;

// The decoder's default replaces invalid UTF-8 with U+FFFD, which is indistinguishable from a caller who sent
// U+FFFD. Decoding strictly first and appending a lone surrogate on failure marks such a string: valid UTF-8
// never decodes to a lone surrogate, so `isWellFormed()` tells the checks below exactly which field it was.
const INVALID_UTF8_MARK = '\uD800';
const encoding = getTextEncoding();
configureTextEncoding({
  encodeUtf8: encoding.encodeUtf8,
  encodeUtf8Into: encoding.encodeUtf8Into,
  checkUtf8: encoding.checkUtf8,
  decodeUtf8(bytes: Uint8Array, strict?: boolean): string {
    try {
      return encoding.decodeUtf8(bytes, true);
    } catch (err) {
      if (strict) throw err;
      return encoding.decodeUtf8(bytes) + INVALID_UTF8_MARK;
    }
  },
});

const TIME_MIN_MS = new Date('0001-01-01T00:00:00Z').getTime();
const TIME_MAX_MS = new Date('9999-12-31T23:59:59.999Z').getTime();

// Node 20 has String.prototype.isWellFormed; the TypeScript lib this project targets does not declare it yet.
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/** A user key as a field-path segment: as is when plain, else quoted and shortened. */
const segment = (key: string): string => (/^[\w$@:-]{1,64}$/.test(key) ? key : quote(key, 40));

/** ts-proto's property name for a proto field name (`actor_input` → `actorInput`). */
export const propertyName = (protoName: string) => protoName.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

class Checker {
  readonly violations: FieldViolation[] = [];

  get full(): boolean {
    return this.violations.length >= MAX_REPORTED;
  }

  add(field: string, description: string): void {
    if (!this.full) this.violations.push({ field, description });
  }

  message(desc: DescMessage, obj: unknown, path: string): void {
    if (typeof obj !== 'object' || obj === null) return;
    const record = obj as Record<string, unknown>;
    for (const field of desc.fields) {
      if (this.full) return;
      const name = propertyName(field.name);
      if (!Object.hasOwn(record, name)) continue;
      const value = record[name];
      if (value === undefined || value === null) continue;
      this.field(field, value, path ? `${path}.${field.name}` : field.name);
    }
  }

  private field(field: DescField, value: unknown, path: string): void {
    switch (field.fieldKind) {
      case 'scalar':
        return this.scalar(field.scalar, value, path);
      case 'enum':
        return this.enumValue(field.enum.values, value, path);
      case 'message':
        return this.messageValue(field.message, value, path);
      case 'list':
        if (!Array.isArray(value)) return;
        value.forEach((item, i) => {
          if (this.full) return;
          const at = `${path}[${i}]`;
          if (field.listKind === 'scalar') this.scalar(field.scalar, item, at);
          else if (field.listKind === 'enum') this.enumValue(field.enum.values, item, at);
          else this.messageValue(field.message, item, at);
        });
        return;
      case 'map':
        if (typeof value !== 'object') return;
        for (const [key, item] of Object.entries(value as object)) {
          if (this.full) return;
          const at = `${path}[${segment(key)}]`;
          this.key(key, at);
          if (field.mapKind === 'scalar') this.scalar(field.scalar, item, at);
          else if (field.mapKind === 'enum') this.enumValue(field.enum.values, item, at);
          else this.messageValue(field.message, item, at);
        }
        return;
    }
  }

  private scalar(type: ScalarType, value: unknown, path: string): void {
    if (type === ScalarType.STRING) this.text(value, path);
    else if ((type === ScalarType.DOUBLE || type === ScalarType.FLOAT) && typeof value === 'number' && !Number.isFinite(value)) {
      this.add(path, 'must be a finite number');
    }
  }

  private enumValue(values: readonly { number: number }[], value: unknown, path: string): void {
    if (typeof value === 'number' && !values.some((v) => v.number === value)) this.add(path, `unknown enum value ${value}`);
  }

  private messageValue(desc: DescMessage, value: unknown, path: string): void {
    switch (desc.typeName) {
      case 'google.protobuf.Struct':
        return this.json(value, path, 0);
      case 'google.protobuf.Value':
        return this.json(value, path, 0);
      case 'google.protobuf.ListValue':
        return this.json(value, path, 0);
      case 'google.protobuf.Timestamp':
        return this.timestamp(value, path);
      case 'google.protobuf.FieldMask':
        // ts-proto unwraps a FieldMask to its paths.
        if (Array.isArray(value)) value.forEach((p, i) => this.text(p, `${path}[${i}]`));
        return;
      case 'google.protobuf.StringValue':
        return this.text(value, path);
      default:
        return this.message(desc, value, path);
    }
  }

  private text(value: unknown, path: string): void {
    if (typeof value !== 'string') return;
    if (!isWellFormed(value)) this.add(path, 'must be valid UTF-8');
    else if (value.includes('\u0000')) this.add(path, 'must not contain NUL characters');
  }

  private key(key: string, path: string): void {
    if (isReservedKey(key)) this.add(path, 'the key __proto__ is reserved');
    else this.text(key, path);
  }

  private timestamp(value: unknown, path: string): void {
    const ms = value instanceof Date ? value.getTime() : NaN;
    if (!(ms >= TIME_MIN_MS && ms <= TIME_MAX_MS)) this.add(path, 'must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z');
  }

  /** A JSON value from a Struct, Value or ListValue; `depth` counts the objects and arrays around it. */
  private json(value: unknown, path: string, depth: number): void {
    if (this.full) return;
    switch (typeof value) {
      case 'string':
        return this.text(value, path);
      case 'number':
        if (!Number.isFinite(value)) this.add(path, 'must be a finite number (JSON has no NaN or Infinity)');
        return;
      case 'object': {
        if (value === null) return;
        if (depth + 1 > MAX_JSON_DEPTH) return this.add(path, `nests deeper than ${MAX_JSON_DEPTH} levels`);
        if (Array.isArray(value)) {
          value.forEach((item, i) => this.json(item, `${path}[${i}]`, depth + 1));
          return;
        }
        // A prototype other than Object.prototype means a decoder assigned a `__proto__` key.
        if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null) {
          return this.add(path, 'the key __proto__ is reserved');
        }
        for (const [key, item] of Object.entries(value)) {
          if (this.full) return;
          const at = `${path}.${segment(key)}`;
          this.key(key, at);
          this.json(item, at, depth + 1);
        }
        return;
      }
      default:
        return;
    }
  }
}

/** Problems of a decoded request (ts-proto shape) of type `desc`; empty when it may reach a handler. */
export function requestViolations(desc: DescMessage, request: unknown): FieldViolation[] {
  const c = new Checker();
  c.message(desc, request, '');
  return c.violations;
}

/**
 * Why `bytes` could not be decoded as `desc`: walks the wire format (no values decoded) to find where JSON
 * nests too deep, the usual reason; otherwise names the request as a whole.
 */
export function undecodableViolation(desc: DescMessage, bytes: Uint8Array): FieldViolation {
  try {
    const deep = deepestPath(desc, new BinaryReader(bytes), bytes.length, '', 0);
    if (deep) return { field: deep, description: `nests deeper than ${MAX_JSON_DEPTH} levels` };
  } catch {
    // Malformed bytes: the generic answer below.
  }
  return { field: '(request)', description: `is not a valid ${desc.typeName} message` };
}

const JSON_CONTAINERS = new Set(['google.protobuf.Struct', 'google.protobuf.ListValue']);

function deepestPath(desc: DescMessage, r: BinaryReader, end: number, path: string, depth: number): string | undefined {
  const container = JSON_CONTAINERS.has(desc.typeName);
  const level = container ? depth + 1 : depth;
  if (level > MAX_JSON_DEPTH) return path || '(request)';
  while (r.pos < end) {
    const [no, type] = r.tag();
    const field = desc.fields.find((f) => f.number === no);
    if (type !== WireType.LengthDelimited || !field) {
      r.skip(type);
      continue;
    }
    const len = r.uint32();
    const stop = r.pos + len;
    let found: string | undefined;
    const at = desc.typeName === 'google.protobuf.Value' || desc.typeName === 'google.protobuf.ListValue' ? path : path ? `${path}.${field.name}` : field.name;
    if (field.fieldKind === 'message' || (field.fieldKind === 'list' && field.listKind === 'message')) {
      found = deepestPath(field.message, r, stop, at, level);
    } else if (field.fieldKind === 'map' && field.mapKind === 'message') {
      found = mapEntryPath(field.message, r, stop, desc.typeName === 'google.protobuf.Struct' ? path : at, level);
    }
    if (found) return found;
    r.pos = stop;
  }
  return undefined;
}

/** A map entry: key (1) then a message value (2); a Struct's entries extend the path with `.key`. */
function mapEntryPath(valueDesc: DescMessage, r: BinaryReader, end: number, path: string, depth: number): string | undefined {
  let key = '';
  while (r.pos < end) {
    const [no, type] = r.tag();
    if (no === 1 && type === WireType.LengthDelimited) key = r.string();
    else if (no === 2 && type === WireType.LengthDelimited) {
      const len = r.uint32();
      const stop = r.pos + len;
      const found = deepestPath(valueDesc, r, stop, path ? `${path}.${segment(key)}` : segment(key), depth);
      if (found) return found;
      r.pos = stop;
    } else r.skip(type);
  }
  return undefined;
}

/** The request message descriptor of every method, by gRPC path (`/parley.genie.v1.GenieService/GetSession`). */
export function requestTypes(image: Uint8Array): Map<string, DescMessage> {
  const registry: FileRegistry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  const out = new Map<string, DescMessage>();
  for (const file of registry.files) {
    for (const service of file.services) {
      for (const method of service.methods) out.set(`/${service.typeName}/${method.name}`, method.input);
    }
  }
  return out;
}
