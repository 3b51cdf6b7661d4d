import test from 'ava';
import o200k from 'gpt-tokenizer/encoding/o200k_base';
import cl100k from 'gpt-tokenizer/encoding/cl100k_base';
import p50k from 'gpt-tokenizer/encoding/p50k_base';
import r50k from 'gpt-tokenizer/encoding/r50k_base';
import { countTokens, encodingOrDefault, heapMergeCount, TOKENIZER_ENCODINGS, tokenCounter } from '../../src/genie/tokens.js';

const plain = { disallowedSpecial: new Set<string>() };
const libraries = { o200k_base: o200k, cl100k_base: cl100k, p50k_base: p50k, r50k_base: r50k };

/** Deterministic pseudo-random text from an alphabet (a linear congruential generator). */
function textOf(seed: number, length: number, alphabet: string[]): string {
  let x = seed;
  let out = '';
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out += alphabet[x % alphabet.length];
  }
  return out;
}

const SAMPLES = [
  '',
  'Hello, world!',
  'こんにちは世界 🙂 éàü',
  '<|endoftext|>',
  'before <|endoftext|> after <|im_start|>system<|im_end|> <|fim_prefix|><|endofprompt|>',
  'line\r\nline\n\n\tindent    spaces   ',
  'a'.repeat(1000),
  textOf(1, 3000, ['a', 'b', 'ab', 'the', 'ing', ' ', '1', '漢', 'é', '\n']),
  textOf(2, 3000, ['x', 'y', 'xy', 'yz', 'zz']),
];

test('countTokens equals the package\'s own count in every encoding, special-token strings counted as plain text', async (t) => {
  for (const encoding of TOKENIZER_ENCODINGS) {
    for (const text of SAMPLES) {
      t.is(await countTokens(text, encoding), libraries[encoding].countTokens(text, plain), `${encoding}: ${JSON.stringify(text.slice(0, 40))}`);
    }
  }
});

test('countTokens never treats user text as a special token and never throws on one', async (t) => {
  // The package's default refuses special tokens in input (it throws); parley counts them as the text they are.
  t.throws(() => o200k.countTokens('<|endoftext|>'));
  for (const encoding of TOKENIZER_ENCODINGS) {
    const n = await countTokens('<|endoftext|>', encoding);
    t.true(n > 1, `${encoding}: the special token itself would be 1`);
    t.deepEqual(n, libraries[encoding].encode('<|endoftext|>', plain).length);
  }
});

test('long pieces are merged by the heap with the same result, and in O(n log n) time', async (t) => {
  const count = await tokenCounter('o200k_base');
  // One pre-tokenized piece each (letters only), long enough to take the heap path.
  for (const [i, alphabet] of [['a'], ['a', 'b'], ['ab', 'ba', 'aab'], ['x', 'y', 'z', 'q', 'u']].entries()) {
    const text = textOf(i + 3, 4000, alphabet);
    t.is(count(text), o200k.countTokens(text, plain), alphabet.join(','));
  }
  // The package's own merge is quadratic in a piece: 64 KB of one letter takes it seconds, 1 MiB minutes.
  const started = performance.now();
  t.is(o200k.countTokens('a'.repeat(8000), plain), 1000, 'o200k_base has a token of eight a');
  t.is(count('a'.repeat(1 << 20)), (1 << 20) / 8);
  t.log(`1 MiB of one letter counted in ${Math.round(performance.now() - started)} ms`);
  t.true(performance.now() - started < 20_000);
});

test('heapMergeCount merges the lowest-ranked pair first, the leftmost of equal ones', (t) => {
  // Ranks over single letters: "ab" before "bc", "abc" last.
  const ranks = new Map([
    ['ab', 1],
    ['bc', 2],
    ['abc', 3],
    ['cc', 1],
  ]);
  const rankOf = (bytes: Uint8Array) => ranks.get(Buffer.from(bytes).toString('latin1'));
  const of = (s: string) => heapMergeCount(Buffer.from(s, 'latin1'), rankOf);
  t.is(of(''), 0);
  t.is(of('a'), 1);
  t.is(of('abc'), 1); // ab, then ab+c
  t.is(of('bcc'), 2); // cc (rank 1) beats bc (rank 2): b, cc
  t.is(of('cccc'), 2); // leftmost first: cc, cc
  t.is(of('ccc'), 2); // cc, c
});

test('encodingOrDefault: empty is o200k_base, names are exact', (t) => {
  t.is(encodingOrDefault(''), 'o200k_base');
  t.is(encodingOrDefault('cl100k_base'), 'cl100k_base');
  t.is(encodingOrDefault('CL100K_BASE'), undefined);
  t.is(encodingOrDefault('gpt2'), undefined);
});
