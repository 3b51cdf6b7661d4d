// snappyjs ships no types. Raw Snappy blocks (no framing): a varint of the uncompressed length, then the
// tagged literals and copies. A Buffer in gives a Buffer out.
declare module 'snappyjs' {
  const snappy: {
    /** Throws on a bad stream, and before allocating when the stated length is over `maxLength`. */
    uncompress(compressed: Buffer, maxLength?: number): Buffer;
    compress(uncompressed: Buffer): Buffer;
  };
  export default snappy;
}
