import { fuzzRun, fuzzTest, unaryCalls } from './lib/run.js';

// Issue 9: random and boundary requests to every unary RPC, another tenant's calls beside them. Bounded
// here; PARLEY_FUZZ_RUNS=10000 for the long run (README, "Fuzzing").
fuzzTest(['unary'])('fuzz: unary RPCs never answer INTERNAL, UNKNOWN or late, persist nothing invalid and leave other tenants served', async (t) => {
  await fuzzRun(t, ['unary'], unaryCalls());
});
