import test from 'ava';
import { GenieCache } from '../../src/genie/cache.js';
import { GenieUseCases } from '../../src/genie/service.js';
import type { ModelTypeDef } from '../../src/genie/model-type.js';
import type { DialogueRow } from '../../src/genie/store.js';
import { countTokens } from '../../src/genie/tokens.js';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { MemoryGenieStore } from './memory-store.js';

const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acct' };
const chat: ModelTypeDef = {
  name: 'chat',
  schemaVersion: 1,
  jsonSchema: undefined,
  stateMachine: { states: ['open'], initialState: 'open', transitions: [] },
  upgrades: [],
  cacheTtlSeconds: 60,
  sessionTtlSeconds: 0,
};

/** The memory store, counting the elements it reads with their text, and those it reads as counts only. */
class CountingStore extends MemoryGenieStore {
  texts = 0;
  counts = 0;
  override async dialogueRange(sessionId: string, from: number, to: number): Promise<DialogueRow[]> {
    const rows = await super.dialogueRange(sessionId, from, to);
    this.texts += rows.length;
    return rows;
  }
  override async systemElements(sessionId: string, upToSeq: number): Promise<DialogueRow[]> {
    const rows = await super.systemElements(sessionId, upToSeq);
    this.texts += rows.length;
    return rows;
  }
  // (The whole dialogue, `dialogue`, is what a rendering within a budget must not read: the memory store's
  // range reads use it inside, so it is not counted here; the test of the count of calls below covers it.)
  dialogueCalls = 0;
  override async dialogueTail(sessionId: string, upToSeq: number, n: number): Promise<DialogueRow[]> {
    this.dialogueCalls++;
    return super.dialogueTail(sessionId, upToSeq, n);
  }
  override async sessionAt(accountId: string, id: string, revision: number) {
    this.dialogueCalls++;
    return super.sessionAt(accountId, id, revision);
  }
  override async tokenCountsBefore(sessionId: string, beforeSeq: number, limit: number) {
    const rows = await super.tokenCountsBefore(sessionId, beforeSeq, limit);
    this.counts += rows.length;
    return rows;
  }
}

async function dialogueOf(length: number) {
  const store = new CountingStore();
  const genie = new GenieUseCases({ types: store, sessions: store, cache: new GenieCache(new MemoryKv(), new MemoryBus()), unitOfWork: store });
  await genie.modelTypes.register(caller, chat);
  const { id } = (await genie.createSession(caller, 'chat', {})).session;
  await genie.appendDialogue(caller, { sessionId: id, actor: 'system', actorText: 'Be brief.' });
  for (let i = 1; i < length; i++) {
    await genie.appendDialogue(caller, { sessionId: id, actor: i % 2 ? 'user' : 'assistant', actorText: `Turn ${i}: ${'words and more words '.repeat(1 + (i % 5))}` });
  }
  store.texts = 0;
  store.counts = 0;
  store.dialogueCalls = 0;
  return { store, genie, id };
}

test('a rendering within a small budget reads about as many elements whatever the dialogue\'s length', async (t) => {
  const read: Array<{ length: number; texts: number; counts: number; kept: number }> = [];
  for (const length of [20, 200, 2000]) {
    const { store, genie, id } = await dialogueOf(length);
    const r = await genie.renderWithin(caller, id, { format: 'CHAT', tokenBudget: 120 });
    t.is(r.tokenCount, await countTokens(r.text, 'o200k_base'));
    t.true(r.text.startsWith('[SYSTEM]: Be brief.'));
    t.is(r.omittedCount, length - r.elementCount);
    t.is(store.dialogueCalls, 0, 'neither the whole dialogue nor a session read with it');
    read.push({ length, texts: store.texts, counts: store.counts, kept: r.elementCount });
  }
  t.log(read.map((r) => `${r.length} elements: ${r.kept} rendered, ${r.texts} read with text, ${r.counts} counts`).join('; '));
  for (const r of read) {
    // The system element, the ones rendered, and one more to learn that it does not fit.
    t.true(r.texts <= r.kept + 2, `${r.length}: ${r.texts} read for ${r.kept} rendered`);
    t.true(r.counts <= 16, `${r.length}: one batch of counts`);
  }
  t.is(read[1]!.kept, read[2]!.kept);
});

test('another encoding than the session\'s reads the newest elements in batches, not the whole dialogue', async (t) => {
  const { store, genie, id } = await dialogueOf(2000);
  const r = await genie.renderWithin(caller, id, { format: 'JSON', tokenBudget: 200, encoding: 'cl100k_base' });
  t.like(r, { encoding: 'cl100k_base', tokenCount: await countTokens(r.text, 'cl100k_base') });
  t.true(r.elementCount > 2);
  t.true(store.texts < 100, `${store.texts} read with text`);
});

test('renderWithin without a budget renders everything and counts it', async (t) => {
  const { genie, id } = await dialogueOf(5);
  const r = await genie.renderWithin(caller, id, { format: 'YAML' });
  t.like(r, { elementCount: 5, omittedCount: 0, encoding: 'o200k_base', revision: 6 });
  t.is(r.tokenCount, await countTokens(r.text, 'o200k_base'));
});
