/**
 * The checks every request passes before any handler sees it, driven by the messages' descriptors so no
 * field of any RPC can be forgotten:
 *
 * - strings (fields, map keys, Struct keys and values, mask paths) hold valid UTF-8 and no NUL — Postgres
 *   stores neither, and a silently substituted U+FFFD is data loss;
 * - Struct/Value/ListValue hold finite numbers (JSON has no NaN or Infinity) and nest at most
 *   MAX_JSON_DEPTH levels, and no key is `__proto__` (the one key JavaScript cannot hold as data);
 * - timestamps lie in 0001-01-01..9999-12-31, the range google.protobuf.Timestamp defines, with nanos in
 *   0..999,999,999; durations lie in ±10,000 years, nanos in ±999,999,999 with the sign of the seconds;
 * - integers fit what the handlers can hold: a 64-bit field a safe JavaScript integer (the generated decoder
 *   throws past 2^53, which used to name only the request), a 32-bit field a 32-bit value (the decoder
 *   silently truncates a larger varint to another number);
 * - enum fields hold a value the contract defines.
 *
 * The numeric checks read the wire bytes (see wireViolations): the decoded request has lost what they need
 * (a Timestamp becomes a Date, so out-of-range nanos are folded into the seconds; a 32-bit varint is cut).
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


/** A user key as a field-path segment: as is when plain, else quoted and shortened. */
const segment = (key: string): string => (/^[\w$@:-]{1,64}$/.test(key) ? key : quote(key, 40));

/** ts-proto's property name for a proto field name (`actor_input` → `actorInput`). */
export const propertyName = (protoName: string) => protoName.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** How a step of a field path is written: `.name` (a field), `[i]` (an item), `[key]` (a map entry), `.key` (a JSON key). */
const enum Step {
  Field,
  Index,
  MapKey,
  JsonKey,
}

/** Each message's fields with their ts-proto property names, computed once per message type. */
const fieldsOf = new WeakMap<DescMessage, ReadonlyArray<readonly [DescField, string]>>();
function namedFields(desc: DescMessage): ReadonlyArray<readonly [DescField, string]> {
  let named = fieldsOf.get(desc);
  if (!named) fieldsOf.set(desc, (named = desc.fields.map((f) => [f, propertyName(f.name)] as const)));
  return named;
}

/**
 * Walks a decoded request. The path of the value at hand is kept as a stack of steps and written out only
 * when a problem is reported: nearly every request has none, and a string per field and per JSON key (with
 * a pattern test for each key) was most of the walk's cost.
 */
class Checker {
  readonly violations: FieldViolation[] = [];
  private readonly steps: Step[] = [];
  private readonly names: Array<string | number> = [];
  private depth = 0;

  get full(): boolean {
    return this.violations.length >= MAX_REPORTED;
  }

  private push(step: Step, name: string | number): void {
    this.steps[this.depth] = step;
    this.names[this.depth++] = name;
  }

  private pop(): void {
    this.depth--;
  }

  /** The path of the value at hand, as `session.fields.a.b` or `messages[2].content`. */
  private path(): string {
    let out = '';
    for (let i = 0; i < this.depth; i++) {
      const name = this.names[i]!;
      switch (this.steps[i]) {
        case Step.Field:
          out = out ? `${out}.${name}` : String(name);
          break;
        case Step.Index:
          out = `${out}[${name}]`;
          break;
        case Step.MapKey:
          out = `${out}[${segment(String(name))}]`;
          break;
        case Step.JsonKey:
          out = `${out}.${segment(String(name))}`;
          break;
      }
    }
    return out;
  }

  private add(description: string): void {
    if (!this.full) this.violations.push({ field: this.path(), description });
  }

  message(desc: DescMessage, obj: unknown): void {
    if (typeof obj !== 'object' || obj === null) return;
    const record = obj as Record<string, unknown>;
    for (const [field, name] of namedFields(desc)) {
      if (this.full) return;
      if (!Object.hasOwn(record, name)) continue;
      const value = record[name];
      if (value === undefined || value === null) continue;
      this.push(Step.Field, field.name);
      this.field(field, value);
      this.pop();
    }
  }

  private field(field: DescField, value: unknown): void {
    switch (field.fieldKind) {
      case 'scalar':
        return this.scalar(field.scalar, value);
      case 'enum':
        return this.enumValue(field.enum.values, value);
      case 'message':
        return this.messageValue(field.message, value);
      case 'list':
        if (!Array.isArray(value)) return;
        value.forEach((item, i) => {
          if (this.full) return;
          this.push(Step.Index, i);
          if (field.listKind === 'scalar') this.scalar(field.scalar, item);
          else if (field.listKind === 'enum') this.enumValue(field.enum.values, item);
          else this.messageValue(field.message, item);
          this.pop();
        });
        return;
      case 'map':
        if (typeof value !== 'object') return;
        for (const [key, item] of Object.entries(value as object)) {
          if (this.full) return;
          this.push(Step.MapKey, key);
          this.key(key);
          if (field.mapKind === 'scalar') this.scalar(field.scalar, item);
          else if (field.mapKind === 'enum') this.enumValue(field.enum.values, item);
          else this.messageValue(field.message, item);
          this.pop();
        }
        return;
    }
  }

  private scalar(type: ScalarType, value: unknown): void {
    if (type === ScalarType.STRING) this.text(value);
    else if ((type === ScalarType.DOUBLE || type === ScalarType.FLOAT) && typeof value === 'number' && !Number.isFinite(value)) {
      this.add('must be a finite number');
    }
  }

  private enumValue(values: readonly { number: number; name: string }[], value: unknown): void {
    if (typeof value === 'number' && !values.some((v) => v.number === value)) {
      // The names are what a JSON client sends (CHAT_ROLE_USER), so the error lists those, never the numbers
      // alone. The unspecified value (0) is listed too: whether it is allowed is the field's own rule.
      this.add(`unknown enum value ${value}; must be one of ${values.map((v) => v.name).join(', ')}`);
    }
  }

  private messageValue(desc: DescMessage, value: unknown): void {
    switch (desc.typeName) {
      case 'google.protobuf.Struct':
        return this.json(value, 0);
      case 'google.protobuf.Value':
        return this.json(value, 0);
      case 'google.protobuf.ListValue':
        return this.json(value, 0);
      case 'google.protobuf.Timestamp':
        return this.timestamp(value);
      case 'google.protobuf.FieldMask':
        // ts-proto unwraps a FieldMask to its paths.
        if (Array.isArray(value)) {
          value.forEach((p, i) => {
            this.push(Step.Index, i);
            this.text(p);
            this.pop();
          });
        }
        return;
      case 'google.protobuf.StringValue':
        return this.text(value);
      default:
        return this.message(desc, value);
    }
  }

  private text(value: unknown): void {
    if (typeof value !== 'string') return;
    if (!value.isWellFormed()) this.add('must be valid UTF-8');
    else if (value.includes('\u0000')) this.add('must not contain NUL characters');
  }

  private key(key: string): void {
    if (isReservedKey(key)) this.add('the key __proto__ is reserved');
    else this.text(key);
  }

  private timestamp(value: unknown): void {
    const ms = value instanceof Date ? value.getTime() : NaN;
    if (!(ms >= TIME_MIN_MS && ms <= TIME_MAX_MS)) this.add('must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z');
  }

  /** A JSON value from a Struct, Value or ListValue; `depth` counts the objects and arrays around it. */
  private json(value: unknown, depth: number): void {
    if (this.full) return;
    switch (typeof value) {
      case 'string':
        return this.text(value);
      case 'number':
        if (!Number.isFinite(value)) this.add('must be a finite number (JSON has no NaN or Infinity)');
        return;
      case 'object': {
        if (value === null) return;
        if (depth + 1 > MAX_JSON_DEPTH) return this.add(`nests deeper than ${MAX_JSON_DEPTH} levels`);
        if (Array.isArray(value)) {
          value.forEach((item, i) => {
            this.push(Step.Index, i);
            this.json(item, depth + 1);
            this.pop();
          });
          return;
        }
        // A prototype other than Object.prototype means a decoder assigned a `__proto__` key.
        const proto: unknown = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) return this.add('the key __proto__ is reserved');
        for (const key of Object.keys(value)) {
          if (this.full) return;
          this.push(Step.JsonKey, key);
          this.key(key);
          this.json((value as Record<string, unknown>)[key], depth + 1);
          this.pop();
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
  c.message(desc, request);
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
  // The generated decoder also throws on a 64-bit integer past 2^53: name that field.
  const [numeric] = wireViolations(desc, bytes);
  if (numeric) return numeric;
  return { field: '(request)', description: `is not a valid ${desc.typeName} message` };
}

// google.protobuf.Timestamp: 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z; Duration: about ±10,000 years.
const TIMESTAMP_SECONDS_MIN = -62_135_596_800n;
const TIMESTAMP_SECONDS_MAX = 253_402_300_799n;
const DURATION_SECONDS_MAX = 315_576_000_000n;
const NANOS_MAX = 999_999_999n;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
const INT32_MIN = -(2n ** 31n);
const INT32_MAX = 2n ** 31n - 1n;
const UINT32_MAX = 2n ** 32n - 1n;
const TIMESTAMP_RANGE = 'must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z';

/**
 * Numeric problems of the encoded request `bytes` of type `desc`, read from the wire: integers out of the
 * range their handler can hold, Timestamps and Durations out of range (nanos included). Struct values are
 * not descended into (their numbers are doubles, checked on the decoded request). Malformed bytes give no
 * violation here; the decoder reports them.
 */
export function wireViolations(desc: DescMessage, bytes: Uint8Array): FieldViolation[] {
  const out: FieldViolation[] = [];
  try {
    walkWire(desc, new BinaryReader(bytes), bytes.length, '', out, 0);
  } catch {
    // Malformed: the decoder says so.
  }
  return out;
}

/** Which messages hold, at any depth, a field the wire walk checks; the others are skipped whole. */
const wireChecked = new Map<string, boolean>();

function needsWireCheck(desc: DescMessage, visiting = new Set<string>()): boolean {
  const known = wireChecked.get(desc.typeName);
  if (known !== undefined) return known;
  if (desc.typeName === 'google.protobuf.Timestamp' || desc.typeName === 'google.protobuf.Duration') return true;
  if (JSON_TYPES.has(desc.typeName) || visiting.has(desc.typeName)) return false;
  visiting.add(desc.typeName);
  const result = desc.fields.some((f) => {
    if (f.fieldKind === 'scalar' || (f.fieldKind === 'list' && f.listKind === 'scalar')) return INTEGER_TYPES.has(f.scalar);
    if (f.fieldKind === 'message' || (f.fieldKind === 'list' && f.listKind === 'message')) return needsWireCheck(f.message, visiting);
    return false;
  });
  visiting.delete(desc.typeName);
  // A result found while an enclosing message was still being visited may miss that cycle: cache only at the top.
  if (visiting.size === 0) wireChecked.set(desc.typeName, result);
  return result;
}

const JSON_TYPES = new Set(['google.protobuf.Struct', 'google.protobuf.Value', 'google.protobuf.ListValue']);
const INTEGER_TYPES = new Set([
  ScalarType.INT32,
  ScalarType.SINT32,
  ScalarType.SFIXED32,
  ScalarType.UINT32,
  ScalarType.FIXED32,
  ScalarType.INT64,
  ScalarType.SINT64,
  ScalarType.SFIXED64,
  ScalarType.UINT64,
  ScalarType.FIXED64,
]);

/** An integer scalar read as a bigint, whatever its wire form; undefined when the wire type does not fit it. */
function readInteger(r: BinaryReader, scalar: ScalarType, wire: WireType): bigint | undefined {
  switch (scalar) {
    case ScalarType.INT32:
    case ScalarType.INT64:
      return wire === WireType.Varint ? BigInt(r.int64()) : undefined;
    case ScalarType.UINT32:
    case ScalarType.UINT64:
      return wire === WireType.Varint ? BigInt(r.uint64()) : undefined;
    case ScalarType.SINT32:
    case ScalarType.SINT64:
      return wire === WireType.Varint ? BigInt(r.sint64()) : undefined;
    case ScalarType.SFIXED64:
      return wire === WireType.Bit64 ? BigInt(r.sfixed64()) : undefined;
    case ScalarType.FIXED64:
      return wire === WireType.Bit64 ? BigInt(r.fixed64()) : undefined;
    default:
      return undefined; // fixed32 and sfixed32 cannot exceed their type
  }
}

function integerProblem(scalar: ScalarType, v: bigint): string | undefined {
  switch (scalar) {
    case ScalarType.INT32:
      // A negative int32 is a 10-byte varint; a 5-byte one (its 32 bits read as unsigned) is common and fine.
      return v < INT32_MIN || v > UINT32_MAX ? 'must be a 32-bit integer' : undefined;
    case ScalarType.SINT32:
      return v < INT32_MIN || v > INT32_MAX ? 'must be a 32-bit integer' : undefined;
    case ScalarType.UINT32:
      return v > UINT32_MAX ? 'must be an unsigned 32-bit integer' : undefined;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return v > SAFE_MAX || v < -SAFE_MAX ? 'must be between -(2^53 - 1) and 2^53 - 1' : undefined;
    default:
      return undefined;
  }
}

/** An integer field's value (`packed`: a list field's packed values) checked against its type's range. */
function checkInteger(r: BinaryReader, scalar: ScalarType, wire: WireType, path: string, index: number | undefined, out: FieldViolation[]): number {
  const at = (i: number | undefined) => (i === undefined ? path : `${path}[${i}]`);
  if (index !== undefined && wire === WireType.LengthDelimited && INTEGER_TYPES.has(scalar)) {
    const end = r.uint32() + r.pos;
    const elementWire = scalar === ScalarType.FIXED32 || scalar === ScalarType.SFIXED32 ? WireType.Bit32 : scalar === ScalarType.FIXED64 || scalar === ScalarType.SFIXED64 ? WireType.Bit64 : WireType.Varint;
    let i = index;
    for (; r.pos < end; i++) {
      const v = readInteger(r, scalar, elementWire);
      if (v === undefined) r.skip(elementWire);
      const problem = v === undefined ? undefined : integerProblem(scalar, v);
      if (problem) add(out, at(i), problem);
    }
    return i - index;
  }
  const v = INTEGER_TYPES.has(scalar) ? readInteger(r, scalar, wire) : undefined;
  if (v === undefined) {
    r.skip(wire);
    return 1;
  }
  const problem = integerProblem(scalar, v);
  if (problem) add(out, at(index), problem);
  return 1;
}

function add(out: FieldViolation[], field: string, description: string): void {
  if (out.length < MAX_REPORTED && !out.some((v) => v.field === field)) out.push({ field, description });
}

/** Seconds (1) and nanos (2) of a Timestamp or Duration; the last occurrence of each wins, as in decoding. */
function secondsAndNanos(r: BinaryReader, end: number): { seconds: bigint; nanos: bigint } {
  let seconds = 0n;
  let nanos = 0n;
  while (r.pos < end) {
    const [no, wire] = r.tag();
    if (no === 1 && wire === WireType.Varint) seconds = BigInt(r.int64());
    else if (no === 2 && wire === WireType.Varint) nanos = BigInt(r.int64());
    else r.skip(wire);
  }
  return { seconds, nanos };
}

function timestampProblem({ seconds, nanos }: { seconds: bigint; nanos: bigint }): string | undefined {
  if (nanos < 0n || nanos > NANOS_MAX) return 'nanos must be between 0 and 999999999';
  if (seconds < TIMESTAMP_SECONDS_MIN || seconds > TIMESTAMP_SECONDS_MAX) return TIMESTAMP_RANGE;
  return undefined;
}

function durationProblem({ seconds, nanos }: { seconds: bigint; nanos: bigint }): string | undefined {
  if (seconds < -DURATION_SECONDS_MAX || seconds > DURATION_SECONDS_MAX) return 'must be within ±315576000000 seconds';
  if (nanos < -NANOS_MAX || nanos > NANOS_MAX) return 'nanos must be between -999999999 and 999999999';
  if ((seconds > 0n && nanos < 0n) || (seconds < 0n && nanos > 0n)) return 'nanos must have the sign of seconds';
  return undefined;
}

function walkWire(desc: DescMessage, r: BinaryReader, end: number, path: string, out: FieldViolation[], depth: number): void {
  // Past the decoder's own recursion limit the request is refused anyway; stop rather than recurse further.
  if (depth > 100) return;
  // Elements of each repeated field seen so far, for the `[i]` of the path.
  const seen = new Map<number, number>();
  while (r.pos < end && out.length < MAX_REPORTED) {
    const [no, wire] = r.tag();
    const field = desc.fields.find((f) => f.number === no);
    // Maps hold strings only in these contracts; the decoded request's checks cover them.
    if (!field || field.fieldKind === 'map' || field.fieldKind === 'enum' || (field.fieldKind === 'list' && field.listKind === 'enum')) {
      r.skip(wire);
      continue;
    }
    const at = path ? `${path}.${field.name}` : field.name;
    const index = field.fieldKind === 'list' ? (seen.get(no) ?? 0) : undefined;
    if (field.fieldKind === 'scalar' || (field.fieldKind === 'list' && field.listKind === 'scalar')) {
      const count = checkInteger(r, field.scalar, wire, at, index, out);
      if (index !== undefined) seen.set(no, index + count);
      continue;
    }
    if (index !== undefined) seen.set(no, index + 1);
    if (wire !== WireType.LengthDelimited) {
      r.skip(wire);
      continue;
    }
    const len = r.uint32();
    const stop = r.pos + len;
    const m = field.message;
    const where = index === undefined ? at : `${at}[${index}]`;
    if (m.typeName === 'google.protobuf.Timestamp') {
      const problem = timestampProblem(secondsAndNanos(r, stop));
      if (problem) add(out, where, problem);
    } else if (m.typeName === 'google.protobuf.Duration') {
      const problem = durationProblem(secondsAndNanos(r, stop));
      if (problem) add(out, where, problem);
    } else if (needsWireCheck(m)) {
      walkWire(m, r, stop, where, out, depth + 1);
    }
    r.pos = stop;
  }
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
