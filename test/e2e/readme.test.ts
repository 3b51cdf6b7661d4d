import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { testWhen } from '../helpers/backends.js';
import { startTestServer } from '../helpers/harness.js';

const run = promisify(execFile);

/**
 * The README's `buf curl` walk-throughs, run as a user would paste them: every ```sh block that uses $CURL
 * (or defines it), in order, in one shell, against a fresh server. Examples meant to fail are written as
 * ```console blocks and are not run.
 */
export function walkthroughBlocks(readme: string): string[] {
  return [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '').filter((b) => /\$CURL|^CURL=/m.test(b));
}

const hasJq = spawnSync('jq', ['--version']).status === 0;

testWhen(hasJq, 'jq is not installed')('every buf curl command in the README runs against a fresh server', async (t) => {
  t.timeout(180_000);
  const readme = readFileSync('README.md', 'utf8');
  const blocks = walkthroughBlocks(readme);
  t.true(blocks.length > 0, 'the README has no buf curl walk-through');
  const token = /PARLEY_ADMIN_TOKEN=(\S+) npm start/.exec(readme)?.[1];
  t.truthy(token, 'the README does not show how the walk-through server is started');
  const s = await startTestServer({ adminToken: token });
  try {
    // node_modules/.bin is on PATH, so `buf` is the same binary `npx buf` finds, without npx's start-up.
    const script = ['set -euo pipefail', ...blocks]
      .join('\n')
      .replaceAll('http://127.0.0.1:50051', `http://${s.address}`)
      .replaceAll('npx buf curl', 'buf curl');
    const r = await run('bash', ['-c', script], {
      encoding: 'utf8',
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, PATH: `${path.resolve('node_modules/.bin')}:${process.env.PATH}` },
    }).catch((e: { stdout: string; stderr: string; code: number }) => e);
    t.is('code' in r ? r.code : 0, 0, `the walk-through failed:\n${r.stderr}\n--- stdout ---\n${r.stdout.slice(-4000)}`);
    t.notRegex(r.stdout, /"code": "(invalid_argument|internal|unknown)"/, 'a walk-through call failed');
    // What the README says the prompt update prints: a change at revision 5, then the same update as a no-op.
    t.regex(r.stdout, /\{"changed":true,"revision":"5"\}\n\{"changed":false,"revision":"5"\}/);
    // What the README says an end user's erasure prints, and the list after it.
    t.regex(r.stdout, /\{"sessions":"1","dialogueElements":"1","sessionRevisions":"2","prompts":"1"\}\n\{\}\n/);
    // What the README says labels and a filtered, counted list print.
    t.regex(r.stdout, /\{"team":"housing","tier":"gold"\}\n\{"n":1,"totalSize":1\}\n/);
    // What the README says the gateway loop prints: the deltas before the drop, the rest after the resume, the commit.
    t.regex(
      r.stdout,
      /\{"utteranceId":"answer-1","chunkIndex":0,"text":"No: "\}\n\{"utteranceId":"answer-1","chunkIndex":1,"text":"rates differ "\}\n\{"chunkIndex":2,"text":"by country"\}\n\{"chunkIndex":3,"text":"\."\}\n\{"revision":"3","utteranceId":"answer-1"\}\n\{"text":"\[ASSISTANT\]: No: rates differ by country\.\\n","tokenCount":\d+,"omittedElementCount":1\}\n\{"revision":"3","tokens":\d+\}/,
    );
    // What the README says the watcher prints: two replayed revisions, the caught_up marker, then the live event.
    t.regex(
      r.stdout,
      /\{"revision":"4","events":\["fieldsUpdated"\]\}\n\{"revision":"5","events":\["secondaryPut"\]\}\n\{"caught_up":"5"\}\n\{"revision":"6","events":\["stateChanged","dialogueAppended"\]\}/,
    );
  } finally {
    await s.stop();
  }
});
