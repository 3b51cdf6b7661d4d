/**
 * Token counts of dialogue text, with the BPE encodings of OpenAI's models as `gpt-tokenizer` ships them
 * (offline: each encoding's ranks are a module of the package, imported on first use, ~100 ms and tens of
 * MB each, so a process pays only for the encodings its sessions use).
 *
 * Contract:
 * - `countTokens(text, encoding)` equals `gpt-tokenizer`'s own `countTokens(text)` for that encoding with
 *   every special token treated as plain text: a user's `<|endoftext|>` is counted as the characters it is,
 *   never as the special token, and never throws.
 * - Its cost is O(n log n) in the text at worst. The package merges each pre-tokenized piece in quadratic time (a 64 KB
 *   run of one letter takes seconds, 1 MiB minutes); pieces longer than LONG_PIECE are merged here instead
 *   with a heap, by the same rule (the lowest-ranked adjacent pair first, the leftmost of equal ones), so the
 *   count is the same and a hostile utterance cannot stall the process.
 */

/** The encodings a model type or a request may name; the first is the default. */
export const TOKENIZER_ENCODINGS = ['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as const;
export type TokenizerEncoding = (typeof TOKENIZER_ENCODINGS)[number];
export const DEFAULT_ENCODING: TokenizerEncoding = 'o200k_base';

export function isTokenizerEncoding(name: string): name is TokenizerEncoding {
  return (TOKENIZER_ENCODINGS as readonly string[]).includes(name);
}

/** '' (unset) is the default encoding; anything else must be one of TOKENIZER_ENCODINGS. */
export function encodingOrDefault(name: string): TokenizerEncoding | undefined {
  if (name === '') return DEFAULT_ENCODING;
  return isTokenizerEncoding(name) ? name : undefined;
}

/** Counts the tokens of a text in one encoding, synchronously (once loaded). */
export type TokenCounter = (text: string) => number;

/** What this module uses of the package's byte-pair core (not part of its typed API: see the test). */
interface BpeCore {
  tokenSplitRegex: RegExp;
  getBpeRankFromString(key: string): number | undefined;
  getBpeRankFromBytes(key: Uint8Array): number | undefined;
  bytePairEncode(input: string): number[];
}

/** Pieces longer than this (in UTF-16 units) are merged by `heapMergeCount`. */
const LONG_PIECE = 256;

const loading = new Map<TokenizerEncoding, Promise<TokenCounter>>();

/** The counter of `encoding`, loading the encoding on first use. */
export function tokenCounter(encoding: TokenizerEncoding): Promise<TokenCounter> {
  let counter = loading.get(encoding);
  if (!counter) {
    counter = load(encoding);
    loading.set(encoding, counter);
    // A failed import may be retried by a later call.
    counter.catch(() => loading.delete(encoding));
  }
  return counter;
}

export async function countTokens(text: string, encoding: TokenizerEncoding): Promise<number> {
  return (await tokenCounter(encoding))(text);
}

async function load(encoding: TokenizerEncoding): Promise<TokenCounter> {
  const api = await importEncoding(encoding);
  const core = (api as unknown as { bytePairEncodingCoreProcessor: BpeCore }).bytePairEncodingCoreProcessor;
  const utf8 = new TextEncoder();
  // A regex with the `g` flag keeps state: this one is used only by `matchAll`, which clones it.
  const split = core.tokenSplitRegex;
  return (text: string): number => {
    let n = 0;
    for (const [piece] of text.matchAll(split)) {
      if (core.getBpeRankFromString(piece) !== undefined) n++;
      else if (piece.length <= LONG_PIECE) n += core.bytePairEncode(piece).length;
      else n += heapMergeCount(utf8.encode(piece), (bytes) => core.getBpeRankFromBytes(bytes));
    }
    return n;
  };
}

async function importEncoding(encoding: TokenizerEncoding) {
  // One static specifier per encoding, so bundlers and knip see each.
  switch (encoding) {
    case 'o200k_base':
      return (await import('gpt-tokenizer/encoding/o200k_base')).default;
    case 'cl100k_base':
      return (await import('gpt-tokenizer/encoding/cl100k_base')).default;
    case 'p50k_base':
      return (await import('gpt-tokenizer/encoding/p50k_base')).default;
    case 'r50k_base':
      return (await import('gpt-tokenizer/encoding/r50k_base')).default;
  }
}

/**
 * How many tokens byte-pair merging leaves of `piece`: while some adjacent pair of parts is a token, merge
 * the lowest-ranked pair (the leftmost of equal ones). O(n log n): parts are a linked list over byte
 * offsets, candidate pairs a binary heap keyed by (rank, offset); an entry whose pair has changed since it
 * was pushed is skipped when popped.
 */
export function heapMergeCount(piece: Uint8Array, rankOf: (bytes: Uint8Array) => number | undefined): number {
  const n = piece.length;
  if (n <= 1) return n;
  // Node i is the part starting at byte i; node n ends the list.
  const next = new Int32Array(n + 1);
  const prev = new Int32Array(n + 1);
  const alive = new Uint8Array(n + 1).fill(1);
  const rank = new Float64Array(n + 1).fill(Infinity);
  for (let i = 0; i <= n; i++) {
    next[i] = i + 1;
    prev[i] = i - 1;
  }
  const heap: number[] = [];
  // Offsets stay below 2^23 (8 MiB) and ranks below 2^29, so the key is exact in a double.
  const OFFSET = 2 ** 23;
  const push = (key: number) => {
    let i = heap.push(key) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p]! <= key) break;
      heap[i] = heap[p]!;
      i = p;
    }
    heap[i] = key;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= heap.length) break;
        const r = l + 1;
        const c = r < heap.length && heap[r]! < heap[l]! ? r : l;
        if (heap[c]! >= last) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  };
  const rePair = (i: number) => {
    const end = i < n ? next[next[i]!]! : n + 1;
    const r = i >= 0 && i < n && next[i]! < n ? rankOf(piece.subarray(i, end)) : undefined;
    rank[i] = r ?? Infinity;
    if (r !== undefined) push(r * OFFSET + i);
  };
  for (let i = 0; i < n - 1; i++) rePair(i);
  let parts = n;
  while (heap.length) {
    const key = pop();
    const i = key % OFFSET;
    const r = (key - i) / OFFSET;
    if (!alive[i] || rank[i] !== r) continue;
    // Merge node i with the node after it.
    const j = next[i]!;
    alive[j] = 0;
    next[i] = next[j]!;
    prev[next[j]!] = i;
    parts--;
    rePair(i);
    if (prev[i]! >= 0) rePair(prev[i]!);
  }
  return parts;
}
