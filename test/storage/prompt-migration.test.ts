import test from 'ava';
import { randomUUID } from 'node:crypto';
import { openDb } from '../../src/storage/db.js';
import { KnexPromptStore } from '../../src/storage/prompt-store.js';

// Migration 009 on a database that already holds prompts and logs: every log entry gets a UUID, and
// revisions shift by one (a prompt starts at 1), keeping each entry's place in its prompt's sequence.
test('migration 009 gives existing log entries UUIDs and shifts revisions so a prompt starts at 1', async (t) => {
  const db = openDb({ databaseUrl: undefined, dataDir: 'memory' });
  try {
    for (;;) {
      const [, pending] = (await db.migrate.list()) as [unknown, Array<{ file: string } | string>];
      const next = pending.map((p) => (typeof p === 'string' ? p : p.file))[0];
      if (!next || next.startsWith('009')) break;
      await db.migrate.up();
    }
    const account = randomUUID();
    const profile = randomUUID();
    const client = randomUUID();
    const prompt = randomUUID();
    await db('accounts').insert({ id: account, account_number: '1111-2222-3333' });
    await db('user_profiles').insert({ id: profile, account_id: account, username: 'u' });
    await db('llm_clients').insert({ id: client, account_id: account, name: 'hr' });
    await db('prompts').insert({ id: prompt, account_id: account, user_profile_id: profile, llm_client_id: client, name: 'p', session_key: 'k'.repeat(64), revision: 2 });
    await db('prompt_history').insert([
      { prompt_id: prompt, messages: '[]', revision: 1 },
      { prompt_id: prompt, messages: '[]', revision: 2 },
    ]);
    await db.migrate.latest();

    const repo = new KnexPromptStore(db);
    const p = await repo.byId(prompt);
    t.is(p?.revision, 3);
    const entries = await repo.listLog('prompt_history', prompt, 0, 10);
    t.deepEqual(entries.map((e) => e.revision), [2, 3]);
    t.true(entries.every((e) => /^[0-9a-f-]{36}$/.test(e.id)), 'UUID ids');
    t.not(entries[0]!.id, entries[1]!.id);
    const fresh = await repo.logsByRevision(prompt, 2, 10);
    t.deepEqual(fresh.map((e) => e.row.revision), [3], 'a watch after revision 2 replays the second entry');
  } finally {
    await db.destroy();
  }
});
