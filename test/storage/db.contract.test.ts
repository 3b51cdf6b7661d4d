import { migrate } from '../../src/storage/db.js';
import { isConstraintViolation } from '../../src/ports/constraint-violation.js';
import { KnexAdminStore } from '../../src/storage/admin-store.js';
import { KnexPromptStore } from '../../src/storage/prompt-store.js';
import { KnexUnitOfWork } from '../../src/storage/unit-of-work.js';
import { z } from 'zod';
import { zodCodec } from '../../src/json-codec.js';
import { randomUUID } from 'node:crypto';
import { testWhen } from '../helpers/backends.js';
import { dbBackends } from '../helpers/db-backends.js';

const implementations = dbBackends;

for (const impl of implementations) {
  const test = testWhen(impl.enabled, 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL to cover a real Postgres');

  test(`${impl.name}: text comes back byte for byte, a leading byte order mark and edge spaces included`, async (t) => {
    const { db, drop } = await impl.open();
    try {
      for (const text of ['\uFEFF', '\uFEFFhello', ' \uFEFF', '  spaced  ', '\t\n', 'mid\uFEFFdle', '\u{1F600}\uFEFF']) {
        const { rows } = (await db.raw('select ?::text as v, length(?::text) as n', [text, text])) as { rows: Array<{ v: string; n: number }> };
        t.is(Buffer.from(rows[0]!.v).toString('hex'), Buffer.from(text).toString('hex'), JSON.stringify(text));
        t.is(Number(rows[0]!.n), [...text].length, 'stored as sent');
      }
      t.is(new TextDecoder().ignoreBOM, false, 'the global TextDecoder is left as it was');
    } finally {
      await db.destroy();
      await drop();
    }
  });

  test(`${impl.name}: racing claims of one request id run the work once and replay it to the rest, on any RPC key`, async (t) => {
    const { db, drop } = await impl.open();
    try {
      await migrate(db);
      const ids = new KnexUnitOfWork(db);
      let runs = 0;
      const work = async () => ({ n: ++runs });
      for (let round = 0; round < 10; round++) {
        const key = { scope: 'account:a', method: 'M', requestId: randomUUID(), fingerprint: 'f' };
        const results = await Promise.all(Array.from({ length: 8 }, () => ids.run(key, zodCodec(z.object({ n: z.number() })), work)));
        t.is(new Set(results.map((r) => r.value.n)).size, 1, 'every racer gets the one result');
        t.is(results.filter((r) => !r.replayed).length, 1, 'one racer ran the work');
        const other = await t.throwsAsync(ids.run({ ...key, method: 'N' }, zodCodec(z.object({ n: z.number() })), work));
        t.regex(other!.message, /another RPC/);
      }
      t.is(runs, 10);
    } finally {
      await db.destroy();
      await drop();
    }
  });

  test(`${impl.name}: migrations apply once and repositories round-trip`, async (t) => {
    const { db, drop } = await impl.open();
    try {
      const applied = await migrate(db);
      t.true(applied.length > 0);
      t.deepEqual(await migrate(db), [], 'a second migrate applies nothing');

      const admin = new KnexAdminStore(db);
      const account = await admin.insertAccount('1111-2222-3333', 'Acme');
      t.is((await admin.accountByNumber('1111-2222-3333'))?.id, account.id);
      const dup = await t.throwsAsync(admin.insertAccount('1111-2222-3333', 'again'));
      t.true(isConstraintViolation(dup, 'unique'), 'a duplicate account number is a unique violation on both engines');

      const profile = await admin.insertUserProfile(account.id, 'ada', '');
      const client = await admin.insertOwned('llm_clients', account.id, 'hr', '');
      const prompts = new KnexPromptStore(db);
      const fields = {
        accountId: account.id,
        userProfileId: profile.id,
        llmClientId: client.id,
        name: 'hrChat',
        description: '',
        version: '1.0.0',
        annotations: { team: 'hr' },
        tags: ['a', 'b'],
        sessionKey: 'k'.repeat(64),
        ipAddress: '',
        userAgent: '',
        url: '',
        endUserId: '',
        labels: {},
      };
      const first = await prompts.insertOrGet(fields);
      t.true(first.created);
      t.deepEqual(first.row.annotations, { team: 'hr' });
      t.deepEqual(first.row.tags, ['a', 'b']);
      t.true(first.row.createdAt instanceof Date);
      const second = await prompts.insertOrGet({ ...fields, name: 'other' });
      t.false(second.created, 'the same session key yields the existing prompt');
      t.is(second.row.id, first.row.id);
      t.is(second.row.name, 'hrChat');
    } finally {
      await db.destroy();
      await drop();
    }
  });
}
