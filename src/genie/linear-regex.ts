/**
 * Tenant regular expressions (`pattern`, `patternProperties` of a model type's JSON Schema) on RE2, whose
 * matching time is linear in the input: a backtracking engine lets one tenant's `^(a+)+$` block the event
 * loop of every tenant for minutes.
 *
 * re2-wasm runs RE2 in one WebAssembly instance whose heap is fixed at 16 MiB and shared by every compiled
 * expression, and whose objects the garbage collector never frees. Hence:
 * - every expression belongs to a PatternSet (one per compiled schema) that frees them explicitly;
 * - a pattern's compiled size is estimated before RE2 sees it (`patternCost`) and capped, because a
 *   9-character `\p{L}{100}` needs more than the whole heap;
 * - matching is bounded: RE2 is linear in the input but, when its DFA gives up (as it does for
 *   `(a|b)*a.{30}`), proportional to input length times the atoms RE2 tracks, 1–10 µs per character
 *   and atom on re2-wasm (measurePattern's steps). So one match may cost at most MAX_MATCH_WORK, one
 *   validation MAX_VALIDATION_WORK (see `withMatchBudget`), and no string longer than MAX_MATCH_INPUT
 *   is matched (the input is also copied into the heap);
 * - if the heap is exhausted anyway (RE2's lazily built DFAs grow while matching), the instance aborts;
 *   `resetEngine` then loads a fresh instance, and every expression of the old one is dead.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** The longest pattern accepted, in characters. */
export const MAX_PATTERN_LENGTH = 1000;
/**
 * The largest estimated compiled size of one pattern, in units of about 100 bytes of RE2 program (see
 * patternCost): `\p{L}` alone is 1,650, `.{600}` 7,250, a 1,000-character literal about 1,050. Compiling
 * takes roughly 10–30 µs per unit on re2-wasm.
 */
export const MAX_PATTERN_COST = 8_000;
/** Strings longer than this (UTF-16 code units) are not matched against a pattern: the check fails instead. */
export const MAX_MATCH_INPUT = 16_384;
/**
 * Input length times the pattern's steps (see measurePattern) that one match may take: about 100 ms
 * where RE2's DFA gives up. `^[a-z]+$` (1 step) matches strings of up to MAX_MATCH_INPUT characters,
 * `^\p{L}+$` (10) of up to 10,000, `^.{1,100}$` (400) of up to 250.
 */
export const MAX_MATCH_WORK = 100_000;
/** The same summed over the matches of one validation: about half a second in the worst case. */
export const MAX_VALIDATION_WORK = 500_000;

interface RE2Object {
  test(input: string): boolean;
}
type RE2Constructor = new (source: string, flags: string) => RE2Object;

/** The module files of one engine instance; dropping them from the require cache loads a fresh instance. */
const ENGINE_MODULES = ['re2-wasm', 're2-wasm/build/wasm/re2.js'];

function loadEngine(): RE2Constructor {
  for (const m of ENGINE_MODULES) delete require.cache[require.resolve(m)];
  return (require('re2-wasm') as { RE2: RE2Constructor }).RE2;
}

// Loaded at the first pattern compiled, not at start-up: the instance takes its whole 16 MiB heap at once,
// and a server whose model types have no patterns never needs it.
let RE2: RE2Constructor | undefined;
/** Bumped by each reset: expressions of an older generation belong to a discarded instance. */
let generation = 0;
let live = 0;
let resets = 0;
/** What the validation under way may still spend (input length × steps); see withMatchBudget. */
let budget = MAX_VALIDATION_WORK;

/**
 * Runs `work` (one synchronous validation) with a fresh MAX_VALIDATION_WORK to spend on matching. Matches
 * outside of it share one budget that only this resets.
 */
export function withMatchBudget<T>(work: () => T): T {
  budget = MAX_VALIDATION_WORK;
  try {
    return work();
  } finally {
    budget = MAX_VALIDATION_WORK;
  }
}

/** A pattern that cannot be accepted; the message is short and does not repeat the pattern. */
export class PatternProblem extends Error {
  constructor(
    readonly pattern: string,
    message: string,
  ) {
    super(message);
  }
}
/** A string met a pattern it is too long for (MAX_MATCH_INPUT, MAX_MATCH_WORK or MAX_VALIDATION_WORK). */
export class MatchTooCostly extends Error {
  constructor(readonly scope: 'string' | 'validation') {
    super(scope === 'string' ? 'a string is too long for a pattern' : 'the patterns would take too long on these values');
  }
}
/** The engine's heap is exhausted: call resetEngine, then try again. */
export class EngineExhausted extends Error {}

/** Discards the engine instance (and with it every compiled expression) for a fresh one. */
export function resetEngine(): void {
  RE2 = undefined;
  generation++;
  live = 0;
  resets++;
}

export function engineStats(): { livePatterns: number; engineResets: number } {
  return { livePatterns: live, engineResets: resets };
}

/** What Ajv's `code.regExp` option takes: called with (source, flags) at compile time. */
export interface RegExpEngine {
  (source: string, flags: string): { test(input: string): boolean };
  code: string;
}

const isAbort = (err: unknown) => err instanceof WebAssembly.RuntimeError;

/** One compiled expression; `toString` is Ajv's key for sharing it within one schema. */
class Pattern {
  constructor(
    readonly source: string,
    private readonly re: RE2Object,
    private readonly steps: number,
  ) {}

  test(input: string): boolean {
    const work = input.length * this.steps;
    if (input.length > MAX_MATCH_INPUT || work > MAX_MATCH_WORK) throw new MatchTooCostly('string');
    if (work > budget) throw new MatchTooCostly('validation');
    budget -= work;
    try {
      return this.re.test(input);
    } catch (err) {
      if (isAbort(err)) throw new EngineExhausted();
      throw err;
    }
  }

  free(): void {
    // The embind handle behind the object: the wasm heap has no garbage collector.
    (this.re as unknown as { wrapper: { delete(): void } }).wrapper.delete();
  }

  toString(): string {
    return `/${this.source}/u`;
  }
}

/**
 * The expressions of one compiled schema: hand `engine` to Ajv, `free` them when the validator is
 * dropped. The same source is compiled once per set (Ajv asks again for each use of a pattern).
 */
export class PatternSet {
  private readonly patterns = new Map<string, Pattern>();
  private readonly generation = generation;
  private freed = false;
  /** Sum of measurePattern's cost over the distinct patterns. */
  cost = 0;

  readonly engine: RegExpEngine = Object.assign((source: string) => this.compile(source), { code: 'parleyLinearRegExp' });

  /** `maxCost`: the most the distinct patterns may cost together (see measurePattern). */
  constructor(private readonly maxCost: number) {}

  get size(): number {
    return this.patterns.size;
  }

  private compile(source: string): Pattern {
    if (this.freed) throw new Error('PatternSet used after free');
    const known = this.patterns.get(source);
    if (known) return known;
    if (source.length > MAX_PATTERN_LENGTH) throw new PatternProblem(source, `is longer than ${MAX_PATTERN_LENGTH} characters`);
    const { cost, steps } = measurePattern(source);
    if (cost > MAX_PATTERN_COST) {
      throw new PatternProblem(source, 'would compile to more than the server allows for one pattern (large counted repetitions or Unicode classes)');
    }
    if (this.cost + cost > this.maxCost) {
      throw new PatternProblem(source, "takes the schema's patterns together over what the server allows (large counted repetitions or Unicode classes)");
    }
    const Engine = (RE2 ??= loadEngine());
    let re: RE2Object;
    try {
      // RE2 only works in Unicode mode; JSON Schema patterns are Unicode (ECMA-262 with the u flag) anyway.
      re = new Engine(source, 'u');
    } catch (err) {
      if (isAbort(err)) throw new EngineExhausted();
      throw new PatternProblem(source, `is not supported (no lookaround or backreferences): ${clip(engineReason(err), 64)}`);
    }
    live++;
    const p = new Pattern(source, re, steps);
    this.patterns.set(source, p);
    this.cost += cost;
    return p;
  }

  /** Frees every expression; the validator that used them must not run again. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    // After a reset the instance these lived in is gone, and so is their memory.
    if (this.generation === generation) {
      for (const p of this.patterns.values()) p.free();
      live -= this.patterns.size;
    }
    this.patterns.clear();
  }
}

/** RE2's own words, without the pattern it repeats: "Invalid regular expression: /<pattern>/u: <reason>". */
function engineReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const at = message.lastIndexOf('/u: ');
  return at >= 0 ? message.slice(at + 4) : 'invalid regular expression';
}

export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * What one occurrence of each kind of atom costs, measured on re2-wasm. `cost`: compiled size, in units of
 * about 100 bytes (a literal ~95 B, an ASCII class such as \d or [a-z] ~500 B, a class over all of
 * Unicode such as ., [^x], \S or any class under (?i) ~1.2 KB, a Unicode property such as \p{L}
 * 40–175 KB). `steps`: time per input character where RE2's DFA gives up, in units of about a
 * microsecond.
 */
const ATOMS = {
  literal: { cost: 1, steps: 1 },
  narrow: { cost: 5, steps: 1 },
  wide: { cost: 12, steps: 4 },
  property: { cost: 1600, steps: 10 },
} as const;
type AtomKind = keyof typeof ATOMS;
/** Compiled overhead of any pattern. */
const BASE = 50;

/**
 * Upper estimates of what `source` costs (see ATOMS): `cost`, its compiled size, and `steps`, its time per
 * input character where the DFA gives up (RE2 then tracks every atom that can be under way at once). Both
 * multiply by the counted repetitions around an atom (`x{100}` is 100 copies of x; `*`, `+` and `?` add
 * none). Syntax it does not understand counts as literals: RE2 refuses what is not valid.
 */
export function measurePattern(source: string): { cost: number; steps: number } {
  const foldCase = /\(\?[a-zA-Z]*i/.test(source);
  type Frame = { cost: number; steps: number; lastCost: number; lastSteps: number };
  const frame = (): Frame => ({ cost: 0, steps: 0, lastCost: 0, lastSteps: 0 });
  const frames: Frame[] = [frame()];
  const top = () => frames[frames.length - 1]!;
  const item = (cost: number, steps: number) => {
    const f = top();
    f.cost += cost;
    f.steps += steps;
    f.lastCost = cost;
    f.lastSteps = steps;
  };
  const atom = (kind: AtomKind, times = 1) => item(ATOMS[kind].cost * times, ATOMS[kind].steps * times);
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    if (c === '\\') {
      const n = source[i + 1] ?? '';
      if (n === 'p' || n === 'P') {
        atom('property');
        const close = source.indexOf('}', i);
        i = source[i + 2] === '{' && close > 0 ? close + 1 : i + 3;
      } else {
        atom('DWS'.includes(n) ? 'wide' : 'dws'.includes(n) ? 'narrow' : 'literal');
        i += 2;
      }
    } else if (c === '[') {
      const end = classEnd(source, i);
      const body = source.slice(i, end);
      const properties = body.match(/\\[pP]/g)?.length ?? 0;
      if (properties) atom('property', properties);
      else atom(foldCase || isWideClass(body) ? 'wide' : 'narrow');
      i = end;
    } else if (c === '(') {
      const flagsOnly = /^\(\?[a-zA-Z-]*\)/.exec(source.slice(i, i + 16));
      if (flagsOnly) {
        i += flagsOnly[0].length;
        continue;
      }
      frames.push(frame());
      const prefix = /^\((?:\?[a-zA-Z-]*:|\?P?<[^>]{0,200}>)?/.exec(source.slice(i, i + 256));
      i += prefix?.[0].length ?? 1;
    } else if (c === ')') {
      const group = frames.length > 1 ? frames.pop()! : frame();
      item(group.cost, group.steps);
      i++;
    } else if (c === '{') {
      const m = /^\{(\d{1,9})(,(\d{0,9}))?\}/.exec(source.slice(i, i + 24));
      if (m) {
        const copies = Math.max(1, m[3] ? Number(m[3]) : Number(m[1]));
        const f = top();
        f.cost += f.lastCost * (copies - 1);
        f.steps += f.lastSteps * (copies - 1);
        f.lastCost *= copies;
        f.lastSteps *= copies;
        i += m[0].length;
      } else {
        atom('literal');
        i++;
      }
    } else if ('*+?|^$'.includes(c)) {
      i++;
    } else {
      atom(c === '.' ? 'wide' : c.charCodeAt(0) > 0x7f || foldCase ? 'narrow' : 'literal');
      i++;
    }
  }
  while (frames.length > 1) {
    const group = frames.pop()!;
    item(group.cost, group.steps);
  }
  return { cost: BASE + top().cost, steps: Math.max(1, top().steps) };
}

/** See measurePattern. */
export const patternCost = (source: string): number => measurePattern(source).cost;

/** The index just past the character class starting at `start` (or the end of the source). */
function classEnd(source: string, start: number): number {
  let j = start + 1;
  if (source[j] === '^') j++;
  if (source[j] === ']') j++;
  while (j < source.length) {
    const c = source[j];
    if (c === '\\') j += 2;
    else if (c === '[' && source[j + 1] === ':') {
      const close = source.indexOf(':]', j + 2);
      j = close < 0 ? source.length : close + 2;
    } else if (c === ']') return j + 1;
    else j++;
  }
  return source.length;
}

/** A negated class, or one with non-ASCII members, spans Unicode: many UTF-8 byte ranges. */
function isWideClass(body: string): boolean {
  // eslint-disable-next-line no-control-regex
  return body.startsWith('[^') || /\\[DWS]|[^\x00-\x7f]/.test(body);
}
