/**
 * Encoded sizes of protobuf messages, computed without encoding them. Size limits and reply budgets read
 * them on every log write and every page; encoding a Struct only to count its bytes built a second copy of
 * the entry (and garbage to collect) per call. Each function mirrors the generated encoder (src/gen, ts-proto)
 * field for field — a default value is left out where the encoder leaves it out, a `__proto__` key is dropped
 * as `Struct.wrap` drops it — and test/unit/wire-size.test.ts holds them to the encoder's lengths.
 */

/** Bytes of a varint holding `n`, an unsigned 32-bit value (a length, a tag). */
export const varint32Size = (n: number): number => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);

/** Bytes of an int32 or int64 field's varint: a negative value takes ten (it is sign-extended to 64 bits). */
export function intSize(n: number): number {
  if (n < 0) return 10;
  if (n < 0x10000000) return varint32Size(n);
  let size = 4;
  for (let rest = Math.floor(n / 0x10000000); rest > 0; rest = Math.floor(rest / 0x80)) size++;
  return size;
}

/** UTF-8 bytes of a string as the encoder writes it (a lone surrogate becomes U+FFFD, 3 bytes, in both). */
export const utf8Size = (s: string): number => Buffer.byteLength(s, 'utf8');

/** A length-delimited field's bytes after its tag: the length's varint and the content. */
export const delimited = (n: number): number => varint32Size(n) + n;

/** A string field (one-byte tag) when set; the encoder skips an empty one. */
export const stringField = (s: string): number => (s === '' ? 0 : 1 + delimited(utf8Size(s)));

/** google.protobuf.Struct holding `obj` (ts-proto's `Struct.encode(Struct.wrap(obj))`). */
export function structSize(obj: Record<string, unknown>): number {
  let size = 0;
  for (const key of Object.keys(obj)) {
    // Struct.wrap assigns each key to a plain object: `__proto__` sets its prototype and never encodes.
    if (key === '__proto__') continue;
    const value = obj[key];
    if (value === undefined) continue;
    // A map entry: key (field 1, left out when empty) and value (field 2).
    size += 1 + delimited(stringField(key) + 1 + delimited(valueSize(value)));
  }
  return size;
}

/** google.protobuf.ListValue holding `values`. */
export function listSize(values: readonly unknown[]): number {
  let size = 0;
  // Holes encode as empty Values, as the encoder's for…of reads them.
  for (const v of values) size += 1 + delimited(valueSize(v));
  return size;
}

/** google.protobuf.Value holding `v` (ts-proto's `Value.encode(Value.wrap(v))`). */
export function valueSize(v: unknown): number {
  if (v === null) return 2; // null_value: tag and NULL_VALUE (0)
  switch (typeof v) {
    case 'boolean':
      return 2;
    case 'number':
      return 9; // a double: tag and 8 bytes
    case 'string':
      return 1 + delimited(utf8Size(v));
    case 'object':
      return 1 + delimited(Array.isArray(v) ? listSize(v) : structSize(v as Record<string, unknown>));
    case 'undefined':
      return 0;
    default:
      throw new Error(`Unsupported any value type: ${typeof v}`);
  }
}

/** google.protobuf.Timestamp of `date` as the generated code converts it (whole seconds, then millis as nanos). */
export function timestampSize(date: Date): number {
  const ms = date.getTime();
  const seconds = Math.trunc(ms / 1_000);
  const nanos = (ms % 1_000) * 1_000_000;
  return (seconds !== 0 ? 1 + intSize(seconds) : 0) + (nanos !== 0 ? 1 + intSize(nanos) : 0);
}
