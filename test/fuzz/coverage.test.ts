import test from 'ava';
import fc from 'fast-check';
import { Metadata } from '@grpc/grpc-js';
import { caseOf, generators } from './lib/generators.js';
import { allRpcs, rpcsOfImage } from './lib/rpcs.js';
import type { Holdings, World } from './lib/world.js';

/** A world of made-up ids: enough to build and sample every generator without a server. */
function fakeWorld(): World {
  const holdings = (n: string): Holdings => ({
    tenant: { accountId: `${n}-acc`, accountNumber: `${n}-num`, userProfileId: `${n}-up`, apiKeyId: `${n}-key`, md: new Metadata(), llmClientId: `${n}-llm`, llmClientName: 'hr' },
    promptIds: [`${n}-p1`, `${n}-p2`],
    sessionKeys: [`${n}-sk`],
    sessionIds: [`${n}-s1`, `${n}-s2`],
    pluginIds: [`${n}-pl`],
    pluginNames: ['weather'],
    secondaryKeys: ['doc'],
    spareKeyIds: [`${n}-spare`],
    spare: { accountId: `${n}-spare-acc`, userProfileId: `${n}-spare-up`, llmClientId: `${n}-spare-llm`, pluginId: `${n}-spare-pl` },
  });
  const token = Buffer.from(JSON.stringify({ l: 'x', f: 'y', c: 1 })).toString('base64url');
  return {
    self: holdings('self'),
    peer: holdings('peer'),
    victimIds: ['victim-acc'],
    tokens: { prompts: [token], history: [token], toolCalls: [token], pluginUsage: [token], plugins: [token], adminPlugins: [token], modelTypes: [token], sessions: [token], secondaryKeys: [token] },
    md: { self: new Metadata(), peer: new Metadata(), admin: new Metadata(), none: new Metadata(), bogus: new Metadata() },
    modelTypes: ['qa'],
  };
}

test('fuzz coverage: the generated definitions and the buf image list the same RPCs', (t) => {
  const fromDefinitions = new Map(allRpcs().map((r) => [r.name, r.kind]));
  t.deepEqual([...fromDefinitions].sort(), [...rpcsOfImage()].sort());
  t.true(fromDefinitions.size >= 44, `${fromDefinitions.size} RPCs`);
});

test('fuzz coverage: every RPC has a generator of its kind, and no generator names an RPC that does not exist', (t) => {
  const specs = generators(fakeWorld());
  const rpcs = allRpcs();
  t.deepEqual(
    rpcs.filter((r) => specs[r.name]?.kind !== r.kind).map((r) => `${r.name} (${r.kind})`),
    [],
    'an RPC without a fuzz generator (add one to test/fuzz/lib/generators.ts)',
  );
  const names = new Set(rpcs.map((r) => r.name));
  t.deepEqual(Object.keys(specs).filter((n) => !names.has(n)), []);
});

test('fuzz coverage: every generator yields cases the generated encoder accepts most of the time', (t) => {
  const specs = generators(fakeWorld());
  for (const rpc of allRpcs()) {
    const cases = fc.sample(caseOf(specs[rpc.name]!), { seed: 42, numRuns: 30 });
    let encoded = 0;
    for (const c of cases)
      for (const m of c.messages) {
        try {
          rpc.serialize(m.req as never);
          encoded++;
        } catch {
          // counted below
        }
      }
    const messages = cases.reduce((n, c) => n + c.messages.length, 0);
    t.true(encoded >= messages * 0.8, `${rpc.name}: ${encoded} of ${messages} messages encode`);
  }
});
