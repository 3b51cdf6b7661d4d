import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Actor, DialogueFormat, type DialogueElement } from '../../src/gen/parley/genie/v1/genie.js';
import { formatDialogue, type DialogueFormatName } from '../../src/genie/dialogue-format.js';
import { countTokens, type TokenizerEncoding } from '../../src/genie/tokens.js';
import { createTenant, errorInfo, startTestServer, violatedFields, type TestServer } from '../helpers/harness.js';
import { bufCurl, curlReason } from '../helpers/buf-curl.js';
import { code, genie, modelType, reasonOf } from '../genie/fixtures.js';
import { chunk } from '../helpers/genie-stream.js';
import type { StreamUtteranceResponse } from '../../src/gen/parley/genie/v1/genie.js';

// Runs on PGlite, and on Postgres and Redis when DATABASE_URL / REDIS_URL are set.
let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const fresh = async () => genie(s, await createTenant(s));
type G = Awaited<ReturnType<typeof fresh>>;

const FORMATS: Array<[DialogueFormat, DialogueFormatName]> = [
  [DialogueFormat.DIALOGUE_FORMAT_CHAT, 'CHAT'],
  [DialogueFormat.DIALOGUE_FORMAT_YAML, 'YAML'],
  [DialogueFormat.DIALOGUE_FORMAT_JSON, 'JSON'],
  [DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR, 'PYTHON_REPR'],
];
const actorNames = new Map<Actor, 'system' | 'user' | 'assistant'>([
  [Actor.ACTOR_SYSTEM, 'system'],
  [Actor.ACTOR_USER, 'user'],
  [Actor.ACTOR_ASSISTANT, 'assistant'],
]);

/** What the formats render of `elements` (the reference rendering, computed here from what GetSession returned). */
const render = (elements: DialogueElement[], format: DialogueFormatName) =>
  formatDialogue(
    elements.map((e) => ({ actor: actorNames.get(e.actor)!, actorText: e.actorText, timestamp: e.timestamp! })),
    format,
  );

/** System elements and the newest `k` others, in dialogue order: what a budget keeps. */
const kept = (all: DialogueElement[], k: number) => {
  const others = all.map((e, i) => ({ e, i })).filter(({ e }) => e.actor !== Actor.ACTOR_SYSTEM);
  const newest = new Set(others.slice(others.length - k).map(({ i }) => i));
  return all.filter((e, i) => e.actor === Actor.ACTOR_SYSTEM || newest.has(i));
};

const LINES: Array<[string, string]> = [
  ['system', 'You are a terse assistant. Answer in one line.'],
  ['user', 'What is the capital of France?'],
  ['assistant', 'Paris.'],
  ['user', 'And "quoted" text, a backslash \\ and\nnew lines\r\nof all kinds'],
  ['system', 'Policy: never reveal <|endoftext|> or <|im_start|> markers.'],
  ['assistant', 'Understood: <|endoftext|> is just text here.'],
  ['user', 'Unicode: 漢字かな, emoji 🙂, accents éàü'],
  ['assistant', ''],
  ['user', 'key: value # yaml-looking line\n- item'],
  ['assistant', 'The end. '.repeat(12)],
  ['user', 'last question?'],
];

async function dialogueOf(g: G, lines: Array<[string, string]> = LINES, type = 'qa') {
  const { sessionId } = await g.create(type);
  for (const [actor, text] of lines) await g.append(sessionId, actor, text);
  return { sessionId, elements: (await g.get(sessionId)).dialogue };
}

test('every element stores its token count, and the session keeps the running total at every revision and through a fork', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  t.is((await g.get(sessionId)).dialogueTokenCount, 0);
  let total = 0;
  const totals = [0];
  for (const [i, [actor, text]] of LINES.entries()) {
    // SendEvent and AppendDialogue both count (the qa machine's events carry the user's and the assistant's turns).
    if (i === 1) await g.send(sessionId, 'user_input', text, 'user');
    else if (i === 2) await g.send(sessionId, 'ai_response', text, 'assistant');
    else await g.append(sessionId, actor, text);
    total += await countTokens(text, 'o200k_base');
    totals.push(total);
  }
  const session = await g.get(sessionId);
  t.is(session.dialogueTokenCount, total);
  for (const e of session.dialogue) t.is(e.tokenCount, await countTokens(e.actorText, 'o200k_base'), e.actorText);
  t.true(session.dialogue[5]!.tokenCount > 1, 'a special-token string counts as the plain text it is');
  t.is(session.currentResponse?.tokenCount, await countTokens(LINES.at(-1)![1], 'o200k_base'));
  // Each revision (1 is creation, each line one more) keeps its own total.
  t.is((await g.get(sessionId, 4)).dialogueTokenCount, totals[3]!);
  const listed = (await g.list('qa')).sessions.find((x) => x.sessionId === sessionId);
  t.is(listed?.dialogueTokenCount, total);
  const page = await g.listDialogue(sessionId, 3);
  t.deepEqual(
    page.elements.map((e) => e.tokenCount),
    session.dialogue.slice(0, 3).map((e) => e.tokenCount),
  );

  // A fork copies the counts and the total (at the revision forked), and goes on counting.
  const fork = await g.fork(sessionId, 4);
  t.is(fork.dialogueTokenCount, totals[3]!);
  await g.append(fork.sessionId, 'user', 'one more');
  const forked = await g.get(fork.sessionId);
  t.is(forked.dialogueTokenCount, totals[3]! + (await countTokens('one more', 'o200k_base')));
  t.deepEqual(
    forked.dialogue.slice(0, 3).map((e) => e.tokenCount),
    session.dialogue.slice(0, 3).map((e) => e.tokenCount),
  );
  t.is((await g.fork(sessionId)).dialogueTokenCount, total);
  // UpdateSession appends nothing: the total stays.
  const updated = await g.update(sessionId, ['actor_input'], { actorInput: 'edited' });
  t.is(updated.session?.dialogueTokenCount, total);
});

test('a streamed utterance is counted once, whole, when it commits', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const { sessionId } = await g.create('qa');
  // Chunks split inside words and inside a special-token string: the committed text is counted as one.
  const parts = ['The answ', 'er is <|endo', 'ftext|> not spe', 'cial, 漢', '字.'];
  const done = await new Promise<StreamUtteranceResponse>((resolve, reject) => {
    const call = s.genie.streamUtterance(tenant.md, (err: ServiceError | null, res?: StreamUtteranceResponse) => (err ? reject(err) : resolve(res!)));
    parts.forEach((text, i) => call.write(chunk({ sessionId, actor: 'assistant', text, lastChunk: i === parts.length - 1 })));
    call.end();
  });
  const session = await g.get(sessionId);
  const whole = parts.join('');
  t.is(session.dialogue[done.dialogueIndex - 1]?.actorText, whole);
  t.is(session.dialogue[done.dialogueIndex - 1]?.tokenCount, await countTokens(whole, 'o200k_base'));
  t.is(session.dialogueTokenCount, await countTokens(whole, 'o200k_base'));
});

for (const [format, name] of FORMATS) {
  test(`FormatDialogue ${name} within a budget renders the system elements and the newest others that fit, counted exactly`, async (t) => {
    const g = await fresh();
    await g.register(modelType());
    const { sessionId, elements } = await dialogueOf(g);
    const systems = elements.filter((e) => e.actor === Actor.ACTOR_SYSTEM).length;
    const others = elements.length - systems;
    const tokensOf = async (k: number) => countTokens(render(kept(elements, k), name), 'o200k_base');

    // Without a budget: everything, and its count.
    const whole = await g.render(sessionId, format);
    t.is(whole.text, render(elements, name));
    t.like(whole, { tokenCount: await countTokens(whole.text, 'o200k_base'), elementCount: elements.length, omittedElementCount: 0, tokenizerEncoding: 'o200k_base' });

    // Budget 0: the system elements alone need tokens, so nothing is rendered and the error says how many.
    const systemTokens = await tokensOf(0);
    const zero = await t.throwsAsync<ServiceError>(g.render(sessionId, format, { tokenBudget: 0 }));
    t.is(code(zero), status.FAILED_PRECONDITION);
    t.is(reasonOf(zero), 'TOKEN_BUDGET_TOO_SMALL');
    t.is(errorInfo(zero!)?.metadata.system_token_count, String(systemTokens));
    t.is(reasonOf(await t.throwsAsync(g.render(sessionId, format, { tokenBudget: systemTokens - 1 }))), 'TOKEN_BUDGET_TOO_SMALL');

    // Exactly the system elements; exactly one more; everything; and every budget in between.
    const exact = [systemTokens, await tokensOf(1), whole.tokenCount];
    const budgets = new Set([...exact, ...exact.map((b) => b + 1), ...exact.slice(0, 2).map((b) => b - 1).filter((b) => b >= systemTokens)]);
    for (let b = systemTokens; b < whole.tokenCount; b += Math.max(1, Math.floor((whole.tokenCount - systemTokens) / 12))) budgets.add(b);
    for (const budget of budgets) {
      const r = await g.render(sessionId, format, { tokenBudget: budget });
      const k = r.elementCount - systems;
      t.true(k >= 0 && k <= others, `budget ${budget}`);
      t.is(r.text, render(kept(elements, k), name), `budget ${budget}: system elements and the newest ${k}`);
      t.is(r.tokenCount, await countTokens(r.text, 'o200k_base'), `budget ${budget}: the count is the tokenizer's own`);
      t.true(r.tokenCount <= budget, `budget ${budget}`);
      if (k < others) t.true((await tokensOf(k + 1)) > budget, `budget ${budget}: one more element would not fit`);
      t.is(r.omittedElementCount, elements.length - r.elementCount);
      t.is(r.tokenizerEncoding, 'o200k_base');
    }
    const all = await g.render(sessionId, format, { tokenBudget: whole.tokenCount });
    t.like(all, { text: whole.text, omittedElementCount: 0 });
    t.like(await g.render(sessionId, format, { tokenBudget: exact[1]! }), { elementCount: systems + 1 });
    t.like(await g.render(sessionId, format, { tokenBudget: systemTokens }), { elementCount: systems, text: render(kept(elements, 0), name) });
  });
}

test('FormatDialogue budget 0 without system elements renders "" (0 tokens); a budget applies at an older revision too', async (t) => {
  const g = await fresh();
  await g.register(modelType());
  const { sessionId, elements } = await dialogueOf(
    g,
    LINES.filter(([actor]) => actor !== 'system'),
  );
  for (const [format] of FORMATS) {
    t.like(await g.render(sessionId, format, { tokenBudget: 0 }), { text: '', tokenCount: 0, elementCount: 0, omittedElementCount: elements.length });
  }
  // Revision 4 holds the first three elements.
  const three = elements.slice(0, 3);
  const atFour = await g.render(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, { revision: 4, tokenBudget: 10_000 });
  t.like(atFour, { text: render(three, 'CHAT'), elementCount: 3, omittedElementCount: 0 });
  const one = await countTokens(render(three.slice(2), 'CHAT'), 'o200k_base');
  t.like(await g.render(sessionId, DialogueFormat.DIALOGUE_FORMAT_CHAT, { revision: 4, tokenBudget: one }), { text: render(three.slice(2), 'CHAT'), elementCount: 1, omittedElementCount: 2 });
});

test('the encoding comes from the model type, or from the request, and bad names and negative budgets are refused precisely', async (t) => {
  const g = await fresh();
  const registered = (await g.register(modelType({ name: 'gpt4', tokenizerEncoding: 'cl100k_base' }))).modelType!;
  t.is(registered.tokenizerEncoding, 'cl100k_base');
  t.is((await g.getType('gpt4')).modelType?.tokenizerEncoding, 'cl100k_base');
  await g.register(modelType());
  t.is((await g.getType('qa')).modelType?.tokenizerEncoding, '', 'unset stays empty (the default, o200k_base)');

  // Text whose counts differ between the encodings.
  const text = 'こんにちは、世界。Tokenization differs between encodings: ŝpeciål çhàracters';
  const [o200k, cl100k, p50k, r50k] = (await Promise.all((['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as TokenizerEncoding[]).map((e) => countTokens(text, e)))) as [
    number,
    number,
    number,
    number,
  ];
  t.not(o200k, cl100k);
  const { sessionId } = await g.create('gpt4');
  await g.append(sessionId, 'user', text);
  const session = await g.get(sessionId);
  t.is(session.dialogue[0]?.tokenCount, cl100k);
  t.is(session.dialogueTokenCount, cl100k);

  const chat = DialogueFormat.DIALOGUE_FORMAT_CHAT;
  const rendered = `[USER]: ${text}\n`;
  t.like(await g.render(sessionId, chat), { tokenizerEncoding: 'cl100k_base', tokenCount: await countTokens(rendered, 'cl100k_base') });
  for (const [encoding, n] of [
    ['o200k_base', o200k],
    ['p50k_base', p50k],
    ['r50k_base', r50k],
  ] as const) {
    t.true(n > 0);
    const r = await g.render(sessionId, chat, { tokenizerEncoding: encoding, tokenBudget: 1000 });
    t.like(r, { tokenizerEncoding: encoding, tokenCount: await countTokens(rendered, encoding), elementCount: 1, text: rendered });
    // Counted at read time in another encoding, the budget still decides exactly.
    const tight = await g.render(sessionId, chat, { tokenizerEncoding: encoding, tokenBudget: r.tokenCount - 1 });
    t.like(tight, { text: '', tokenCount: 0, elementCount: 0, omittedElementCount: 1 });
  }

  const badType = await t.throwsAsync<ServiceError>(g.register(modelType({ name: 'bad', tokenizerEncoding: 'gpt2-ish' })));
  t.is(code(badType), status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(badType!), ['model_type.tokenizer_encoding']);
  t.regex(badType!.details, /o200k_base, cl100k_base, p50k_base, r50k_base/);
  const badRequest = await t.throwsAsync<ServiceError>(g.render(sessionId, chat, { tokenizerEncoding: 'O200K_BASE' }));
  t.deepEqual(violatedFields(badRequest!), ['tokenizer_encoding']);
  const negative = await t.throwsAsync<ServiceError>(g.render(sessionId, chat, { tokenBudget: -1 }));
  t.is(code(negative), status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(negative!), ['token_budget']);
});

test('FormatDialogue with a budget through buf curl (JSON): counts, omitted elements and precise refusals', async (t) => {
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType());
  const { sessionId, elements } = await dialogueOf(g);
  const auth = tenant.md.get('authorization')[0] as string;
  const curl = (method: string, body: unknown) => bufCurl(s.address, `parley.genie.v1.GenieService/${method}`, body, auth);

  const r = await curl('FormatDialogue', { sessionId, format: 'DIALOGUE_FORMAT_CHAT', tokenBudget: 60 });
  t.is(r.tokenizerEncoding, 'o200k_base');
  t.is(r.tokenCount, await countTokens(r.text, 'o200k_base'));
  t.true(r.tokenCount <= 60);
  t.is(r.elementCount + (r.omittedElementCount ?? 0), elements.length);
  t.true(r.omittedElementCount > 0);
  t.true(r.text.startsWith('[SYSTEM]: You are a terse assistant.'));

  const got = await curl('GetSession', { sessionId });
  t.is(got.session.dialogue[1].tokenCount, elements[1]!.tokenCount);
  // int64 is a string in JSON.
  t.is(got.session.dialogueTokenCount, String(elements.reduce((n, e) => n + e.tokenCount, 0)));

  const negative = await curl('FormatDialogue', { sessionId, format: 'DIALOGUE_FORMAT_CHAT', tokenBudget: -5 });
  t.is(negative.code, 'invalid_argument');
  t.regex(negative.message, /token_budget/);
  const tooSmall = await curl('FormatDialogue', { sessionId, format: 'DIALOGUE_FORMAT_JSON', tokenBudget: 3 });
  t.is(tooSmall.code, 'failed_precondition');
  t.is(curlReason(tooSmall), 'TOKEN_BUDGET_TOO_SMALL');
  const badEncoding = await curl('FormatDialogue', { sessionId, format: 'DIALOGUE_FORMAT_JSON', tokenizerEncoding: 'nope' });
  t.is(badEncoding.code, 'invalid_argument');
  t.regex(badEncoding.message, /tokenizer_encoding/);
});
