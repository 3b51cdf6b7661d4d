import test from 'ava';
import {
  engineStats,
  MAX_MATCH_INPUT,
  MAX_MATCH_WORK,
  MAX_PATTERN_COST,
  MAX_PATTERN_LENGTH,
  MAX_VALIDATION_WORK,
  MatchTooCostly,
  measurePattern,
  patternCost,
  PatternProblem,
  PatternSet,
  withMatchBudget,
} from '../../src/genie/linear-regex.js';

const problem = (source: string, budget = 100_000) => {
  const set = new PatternSet(budget);
  try {
    set.engine(source, 'u');
    return undefined;
  } catch (err) {
    return err instanceof PatternProblem ? err.message : String(err);
  } finally {
    set.free();
  }
};

test('a pattern that backtracks exponentially in JavaScript answers at once on RE2', (t) => {
  const set = new PatternSet(100_000);
  const re = set.engine('^(a+)+$', 'u');
  // With RegExp this is about 2^48 steps; RE2 is linear in the input.
  t.false(re.test(`${'a'.repeat(48)}!`));
  t.true(re.test('a'.repeat(48)));
  set.free();
});

test('measurePattern weighs counted repetitions and Unicode classes, and counts loops once', (t) => {
  t.deepEqual(measurePattern('^[a-z]+$'), { cost: 55, steps: 1 });
  t.deepEqual(measurePattern('^\\p{L}+$'), { cost: 1650, steps: 10 });
  t.is(measurePattern('^.{1,100}$').steps, 400, 'a wide class, a hundred times');
  t.is(measurePattern('[\\p{L}\\p{N}]').steps, 20);
  t.true(patternCost('^[a-z0-9-]+$') < 100);
  t.true(patternCost('^(a+)+$') < 100);
  t.is(patternCost('x{10}') - patternCost('x'), 9, 'x{10} is ten copies of x');
  t.is(patternCost('(?:ab){3}') - patternCost('ab'), 4);
  t.true(patternCost('^\\p{L}+$') <= MAX_PATTERN_COST, 'a Unicode letter class is fine');
  t.true(patternCost('.{600}') <= MAX_PATTERN_COST);
  t.true(patternCost('\\p{L}{100}') > MAX_PATTERN_COST, 'a 9-character pattern that needs more than the whole heap');
  t.true(patternCost('(?:(?:\\p{L}{10}){10})') > MAX_PATTERN_COST, 'nested repetitions multiply');
  t.true(patternCost('[\\p{L}\\p{N}]{7}') > MAX_PATTERN_COST);
  t.true(patternCost('(?i)[a-z]{1000}') > patternCost('[a-z]{1000}'), 'case folding widens classes');
  t.true(patternCost('(((') > 0 && patternCost(')))') > 0, 'unbalanced groups are left to RE2');
});

test('patterns RE2 cannot run, or that are too big, are refused with a short reason that does not repeat them', (t) => {
  const long = `(?=x)${'y'.repeat(900)}`;
  const lookahead = problem(long);
  t.regex(lookahead ?? '', /not supported .*lookaround or backreferences/);
  t.true((lookahead ?? '').length < 200);
  t.false((lookahead ?? '').includes('yyyyyyyy'));
  t.regex(problem('^(a)\\1$') ?? '', /not supported/);
  t.regex(problem('(?<=a)b') ?? '', /not supported/);
  t.regex(problem('x'.repeat(MAX_PATTERN_LENGTH + 1)) ?? '', new RegExp(`longer than ${MAX_PATTERN_LENGTH}`));
  t.is(problem('x'.repeat(MAX_PATTERN_LENGTH)), undefined);
  t.regex(problem('\\p{L}{100}') ?? '', /more than the server allows for one pattern/);
  t.regex(problem('\\p{L}+', 1000) ?? '', /together over what the server allows/);
  t.is(problem('^[a-z]+$'), undefined);
});

test('a PatternSet compiles each source once and frees every expression', (t) => {
  const before = engineStats().livePatterns;
  const set = new PatternSet(100_000);
  const a = set.engine('^a$', 'u');
  t.is(set.engine('^a$', 'u'), a, 'Ajv asks once per use; one expression serves them all');
  set.engine('^b$', 'u');
  t.is(set.size, 2);
  t.is(String(a), '/^a$/u', "Ajv's key for the expression");
  t.is(engineStats().livePatterns, before + 2);
  set.free();
  set.free();
  t.is(engineStats().livePatterns, before);
  t.throws(() => set.engine('^c$', 'u'));
});

test('strings longer than MAX_MATCH_INPUT, or than MAX_MATCH_WORK allows for the pattern, are not matched', (t) => {
  const set = new PatternSet(100_000);
  const small = set.engine('^a*$', 'u');
  t.true(small.test('a'.repeat(MAX_MATCH_INPUT)));
  t.is(t.throws(() => small.test('a'.repeat(MAX_MATCH_INPUT + 1)), { instanceOf: MatchTooCostly })?.scope, 'string');
  // A pattern whose DFA gives up runs at input length × the atoms it tracks: the more, the less it reads.
  const source = '(?:a|b)*(?:a.{200}){3}c';
  const big = set.engine(source, 'u');
  const longest = Math.floor(MAX_MATCH_WORK / measurePattern(source).steps);
  t.true(longest < 1000);
  t.false(big.test('ab'.repeat(longest / 2)));
  t.throws(() => big.test('a'.repeat(longest + 1)), { instanceOf: MatchTooCostly });
  set.free();
});

test('one validation may spend MAX_VALIDATION_WORK on matching, and the next starts afresh', (t) => {
  const set = new PatternSet(100_000);
  const source = '^[a-z]+$';
  const re = set.engine(source, 'u');
  const { steps } = measurePattern(source);
  const value = 'a'.repeat(Math.min(MAX_MATCH_INPUT, Math.floor(MAX_MATCH_WORK / steps)));
  const fits = Math.floor(MAX_VALIDATION_WORK / (value.length * steps));
  const run = (times: number) => withMatchBudget(() => Array.from({ length: times }, () => re.test(value)).every(Boolean));
  t.true(run(fits));
  t.is(t.throws(() => run(fits + 1), { instanceOf: MatchTooCostly })?.scope, 'validation');
  t.true(run(fits));
  set.free();
});

test('thousands of compiled and freed patterns do not exhaust the fixed wasm heap', (t) => {
  // Without free, re2-wasm's 16 MiB heap is gone after about 6,500 small patterns, for every tenant.
  const resets = engineStats().engineResets;
  for (let i = 0; i < 8000; i++) {
    const set = new PatternSet(100_000);
    set.engine(`^x${i}[a-z]+$`, 'u').test('x1abc');
    set.free();
  }
  t.is(engineStats().engineResets, resets);
});
