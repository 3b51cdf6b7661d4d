import { BinaryWriter } from '@bufbuild/protobuf/wire';

/**
 * What a generated client cannot send is written into the encoded bytes afterwards. A string may hold
 * markers of the same byte length as their replacement, so every length prefix stays right:
 * - BAD_UTF8 becomes bytes that are not UTF-8 (a lone continuation byte, a truncated sequence, an
 *   encoded surrogate);
 * - PROTO_KEY becomes `__proto__`, which the generated Struct encoder would turn into a prototype and drop.
 */
export const BAD_UTF8 = '~bad8~~';
const BAD_BYTES = [0x41, 0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80];
export const PROTO_KEY = '~protok~~';
const PROTO_BYTES = [...Buffer.from('__proto__')];

export function patchMarkers(bytes: Buffer): Buffer {
  let out = bytes;
  for (const [marker, replacement] of [
    [BAD_UTF8, BAD_BYTES],
    [PROTO_KEY, PROTO_BYTES],
  ] as const) {
    const m = Buffer.from(marker);
    let at = out.indexOf(m);
    if (at < 0) continue;
    if (out === bytes) out = Buffer.from(bytes);
    while (at >= 0) {
      Buffer.from(replacement).copy(out, at);
      at = out.indexOf(m, at + m.length);
    }
  }
  return out;
}

/**
 * Bytes to append to an encoded request: a Timestamp at `path` (field numbers from the request down to the
 * Timestamp field) with any seconds and nanos. Protobuf merges a repeated message field into the one
 * already sent, so this overrides what the generated encoder wrote, even out of Timestamp's range.
 */
export function rawTimestamp(path: number[], seconds: string, nanos: number): Buffer {
  const ts = new BinaryWriter();
  if (seconds !== '0') ts.uint32((1 << 3) | 0).int64(seconds);
  if (nanos !== 0) ts.uint32((2 << 3) | 0).int32(nanos);
  let inner = ts.finish();
  for (const field of [...path].reverse()) inner = new BinaryWriter().uint32((field << 3) | 2).bytes(inner).finish();
  return Buffer.from(inner);
}

/** A field the schema does not know (number 9999, length-delimited), which a server must ignore. */
export function unknownField(payload: Uint8Array): Buffer {
  return Buffer.from(new BinaryWriter().uint32((9999 << 3) | 2).bytes(payload).finish());
}

/** A varint field `field` holding `value`, e.g. an enum number no version of the schema defines. */
export function rawVarint(path: number[], value: number): Buffer {
  const leaf = path[path.length - 1]!;
  let inner = new BinaryWriter().uint32((leaf << 3) | 0).int32(value).finish();
  for (const field of path.slice(0, -1).reverse()) inner = new BinaryWriter().uint32((field << 3) | 2).bytes(inner).finish();
  return Buffer.from(inner);
}
