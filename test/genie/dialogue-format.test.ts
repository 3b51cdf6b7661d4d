import test from 'ava';

import {
  formatDialogue,
  parseActor,
  pythonSplitlines,
  pythonStrRepr,
  type Actor,
  type DialogueElement,
  type DialogueFormatName,
} from '../../src/genie/dialogue-format.js';

function el(actor: Actor, timestamp: string, actorText: string): DialogueElement {
  return { actor, timestamp: new Date(timestamp), actorText };
}

const cases = {
  basic: [
    el("system", "2024-03-05T14:07:09.123Z", "You are a helpful assistant."),
    el("user", "2024-03-05T14:07:10.000Z", "Hi there"),
    el("assistant", "2024-03-05T14:08:00.000Z", "Hello! How can I help?"),
  ],
  multiline: [
    el("assistant", "2024-03-05T14:07:09.500Z", "Line one\nLine two\n\nLine four\n"),
    el("user", "2024-03-05T14:07:10.001Z", "a\r\nb\rc\u000bd\fe\u001cf\u0085g\u2028h\u2029i"),
  ],
  special: [
    el("user", "2024-12-31T23:59:59.999Z", "He said \"yes\": it's 100% done # not a comment"),
    el("assistant", "2025-01-01T00:00:00.000Z", "- item: value\n  key: 'quoted'\n{json: [1, 2]} & *alias !tag |pipe >fold"),
    el("system", "2025-01-01T00:00:01.000Z", "na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e \ud83c\udf89\ttab\\backslash"),
  ],
  edge: [
    el("user", "2024-01-01T00:00:00.000Z", ""),
    el("assistant", "2024-01-01T00:00:00.010Z", "\n"),
    el("user", "2024-01-01T00:00:00.020Z", "   leading spaces\n\ttabbed\ntrailing\n\n"),
    el("system", "2024-01-01T00:00:00.030Z", "it's"),
    el("user", "2024-01-01T00:00:00.040Z", "nbsp\u00a0zw\u200bbell\u0007del\u007fsoft\u00ademoji\ud83d\ude00"),
  ],
  single: [
    el("user", "2024-06-01T12:30:45.678Z", "only one"),
  ],
} satisfies Record<string, DialogueElement[]>;

// Golden outputs produced by python3 + pydantic 2 from a restatement of the reference
// (genie_flow/model/dialogue.py: as_chat / as_yaml / repr). PYTHON_REPR uses tz-aware UTC datetimes.
const golden: Record<keyof typeof cases, { CHAT: string; YAML: string; PYTHON_REPR: string }> = {
  basic: {
    CHAT:
      "[SYSTEM]: You are a helpful assistant.\n\n[USER]: Hi there\n\n[ASSISTANT]: Hello! How can I help?\n",
    YAML:
      "- role: system\n  content: >\n    You are a helpful assistant.\n\n- role: user\n  content: >\n    Hi there\n\n- role: assistant\n  content: >\n    Hello! How can I help?\n",
    PYTHON_REPR:
      "[DialogueElement(actor='system', timestamp=datetime.datetime(2024, 3, 5, 14, 7, 9, 123000, tzinfo=datetime.timezone.utc), actor_text='You are a helpful assistant.'), DialogueElement(actor='user', timestamp=datetime.datetime(2024, 3, 5, 14, 7, 10, tzinfo=datetime.timezone.utc), actor_text='Hi there'), DialogueElement(actor='assistant', timestamp=datetime.datetime(2024, 3, 5, 14, 8, tzinfo=datetime.timezone.utc), actor_text='Hello! How can I help?')]",
  },
  multiline: {
    CHAT:
      "[ASSISTANT]: Line one\nLine two\n\nLine four\n\n\n[USER]: a\r\nb\rc\u000bd\fe\u001cf\u0085g\u2028h\u2029i\n",
    YAML:
      "- role: assistant\n  content: >\n    Line one\n    Line two\n    \n    Line four\n\n- role: user\n  content: >\n    a\n    b\n    c\n    d\n    e\n    f\n    g\n    h\n    i\n",
    PYTHON_REPR:
      "[DialogueElement(actor='assistant', timestamp=datetime.datetime(2024, 3, 5, 14, 7, 9, 500000, tzinfo=datetime.timezone.utc), actor_text='Line one\\nLine two\\n\\nLine four\\n'), DialogueElement(actor='user', timestamp=datetime.datetime(2024, 3, 5, 14, 7, 10, 1000, tzinfo=datetime.timezone.utc), actor_text='a\\r\\nb\\rc\\x0bd\\x0ce\\x1cf\\x85g\\u2028h\\u2029i')]",
  },
  special: {
    CHAT:
      "[USER]: He said \"yes\": it's 100% done # not a comment\n\n[ASSISTANT]: - item: value\n  key: 'quoted'\n{json: [1, 2]} & *alias !tag |pipe >fold\n\n[SYSTEM]: na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e \ud83c\udf89\ttab\\backslash\n",
    YAML:
      "- role: user\n  content: >\n    He said \"yes\": it's 100% done # not a comment\n\n- role: assistant\n  content: >\n    - item: value\n      key: 'quoted'\n    {json: [1, 2]} & *alias !tag |pipe >fold\n\n- role: system\n  content: >\n    na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e \ud83c\udf89\ttab\\backslash\n",
    PYTHON_REPR:
      "[DialogueElement(actor='user', timestamp=datetime.datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc), actor_text='He said \"yes\": it\\'s 100% done # not a comment'), DialogueElement(actor='assistant', timestamp=datetime.datetime(2025, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), actor_text=\"- item: value\\n  key: 'quoted'\\n{json: [1, 2]} & *alias !tag |pipe >fold\"), DialogueElement(actor='system', timestamp=datetime.datetime(2025, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc), actor_text='na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e \ud83c\udf89\\ttab\\\\backslash')]",
  },
  edge: {
    CHAT:
      "[USER]: \n\n[ASSISTANT]: \n\n\n[USER]:    leading spaces\n\ttabbed\ntrailing\n\n\n\n[SYSTEM]: it's\n\n[USER]: nbsp\u00a0zw\u200bbell\u0007del\u007fsoft\u00ademoji\ud83d\ude00\n",
    YAML:
      "- role: user\n  content: >\n\n\n- role: assistant\n  content: >\n    \n\n- role: user\n  content: >\n       leading spaces\n    \ttabbed\n    trailing\n    \n\n- role: system\n  content: >\n    it's\n\n- role: user\n  content: >\n    nbsp\u00a0zw\u200bbell\u0007del\u007fsoft\u00ademoji\ud83d\ude00\n",
    PYTHON_REPR:
      "[DialogueElement(actor='user', timestamp=datetime.datetime(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), actor_text=''), DialogueElement(actor='assistant', timestamp=datetime.datetime(2024, 1, 1, 0, 0, 0, 10000, tzinfo=datetime.timezone.utc), actor_text='\\n'), DialogueElement(actor='user', timestamp=datetime.datetime(2024, 1, 1, 0, 0, 0, 20000, tzinfo=datetime.timezone.utc), actor_text='   leading spaces\\n\\ttabbed\\ntrailing\\n\\n'), DialogueElement(actor='system', timestamp=datetime.datetime(2024, 1, 1, 0, 0, 0, 30000, tzinfo=datetime.timezone.utc), actor_text=\"it's\"), DialogueElement(actor='user', timestamp=datetime.datetime(2024, 1, 1, 0, 0, 0, 40000, tzinfo=datetime.timezone.utc), actor_text='nbsp\\xa0zw\\u200bbell\\x07del\\x7fsoft\\xademoji\ud83d\ude00')]",
  },
  single: {
    CHAT:
      "[USER]: only one\n",
    YAML:
      "- role: user\n  content: >\n    only one\n",
    PYTHON_REPR:
      "[DialogueElement(actor='user', timestamp=datetime.datetime(2024, 6, 1, 12, 30, 45, 678000, tzinfo=datetime.timezone.utc), actor_text='only one')]",
  },
};

const ALL_FORMATS: DialogueFormatName[] = ['PYTHON_REPR', 'JSON', 'YAML', 'CHAT'];

// --- empty dialogue ---------------------------------------------------------

for (const format of ALL_FORMATS) {
  test(`empty dialogue renders as "" in ${format}`, (t) => {
    t.is(formatDialogue([], format), '');
  });
}

// --- CHAT -------------------------------------------------------------------

test('CHAT: "[ACTOR]: text\\n" per element, joined by "\\n" (blank line between, trailing newline)', (t) => {
  t.is(
    formatDialogue(cases.basic, 'CHAT'),
    '[SYSTEM]: You are a helpful assistant.\n' +
      '\n' +
      '[USER]: Hi there\n' +
      '\n' +
      '[ASSISTANT]: Hello! How can I help?\n',
  );
  t.is(formatDialogue(cases.single, 'CHAT'), '[USER]: only one\n');
});

for (const name of Object.keys(cases) as (keyof typeof cases)[]) {
  test(`CHAT matches reference golden: ${name}`, (t) => {
    t.is(formatDialogue(cases[name], 'CHAT'), golden[name].CHAT);
  });
}

test('CHAT leaves multi-line text and quotes/colons/unicode untouched', (t) => {
  const out = formatDialogue(cases.multiline, 'CHAT');
  t.is(out, '[ASSISTANT]: Line one\nLine two\n\nLine four\n\n\n[USER]: a\r\nb\rc\u000bd\fe\u001cf\u0085g\u2028h\u2029i\n');
  t.true(formatDialogue(cases.special, 'CHAT').includes('[SYSTEM]: naïve café — 日本語 🎉\ttab\\backslash\n'));
});

// --- YAML -------------------------------------------------------------------

test('YAML: hand-rolled folded block, 4-space indented lines, elements separated by a blank line', (t) => {
  t.is(
    formatDialogue(cases.basic, 'YAML'),
    '- role: system\n  content: >\n    You are a helpful assistant.\n' +
      '\n' +
      '- role: user\n  content: >\n    Hi there\n' +
      '\n' +
      '- role: assistant\n  content: >\n    Hello! How can I help?\n',
  );
});

for (const name of Object.keys(cases) as (keyof typeof cases)[]) {
  test(`YAML matches reference golden: ${name}`, (t) => {
    t.is(formatDialogue(cases[name], 'YAML'), golden[name].YAML);
  });
}

test('YAML splits lines like Python str.splitlines (\\r\\n, \\r, \\v, \\f, \\x1c, \\x85, \\u2028, \\u2029; no trailing empty line)', (t) => {
  t.is(
    formatDialogue(cases.multiline, 'YAML'),
    '- role: assistant\n  content: >\n    Line one\n    Line two\n    \n    Line four\n' +
      '\n' +
      '- role: user\n  content: >\n    a\n    b\n    c\n    d\n    e\n    f\n    g\n    h\n    i\n',
  );
});

test('YAML does no quoting or escaping of quotes, colons, YAML indicators or unicode', (t) => {
  t.is(
    formatDialogue(cases.special, 'YAML'),
    '- role: user\n  content: >\n    He said "yes": it\'s 100% done # not a comment\n' +
      '\n' +
      "- role: assistant\n  content: >\n    - item: value\n      key: 'quoted'\n    {json: [1, 2]} & *alias !tag |pipe >fold\n" +
      '\n' +
      '- role: system\n  content: >\n    naïve café — 日本語 🎉\ttab\\backslash\n',
  );
});

test('YAML renders empty text as an empty content line and "\\n" as a single 4-space line', (t) => {
  t.is(formatDialogue([el('user', '2024-01-01T00:00:00Z', '')], 'YAML'), '- role: user\n  content: >\n\n');
  t.is(formatDialogue([el('user', '2024-01-01T00:00:00Z', '\n')], 'YAML'), '- role: user\n  content: >\n    \n');
});

test('pythonSplitlines mirrors str.splitlines()', (t) => {
  t.deepEqual(pythonSplitlines(''), []);
  t.deepEqual(pythonSplitlines('\n'), ['']);
  t.deepEqual(pythonSplitlines('a\n'), ['a']);
  t.deepEqual(pythonSplitlines('a\n\n'), ['a', '']);
  t.deepEqual(pythonSplitlines('a\r\n\rb'), ['a', '', 'b']);
  t.deepEqual(pythonSplitlines('a\u001db\u001ec'), ['a', 'b', 'c']);
  t.deepEqual(pythonSplitlines('a\tb\u0000c'), ['a\tb\u0000c']);
});

// --- JSON -------------------------------------------------------------------

test('JSON deliberately fixes the reference crash (json.dumps of datetime raises TypeError): proper array with RFC 3339 UTC timestamps', (t) => {
  const out = formatDialogue(cases.basic, 'JSON');
  t.is(
    out,
    '[{"actor":"system","timestamp":"2024-03-05T14:07:09.123Z","actor_text":"You are a helpful assistant."},' +
      '{"actor":"user","timestamp":"2024-03-05T14:07:10.000Z","actor_text":"Hi there"},' +
      '{"actor":"assistant","timestamp":"2024-03-05T14:08:00.000Z","actor_text":"Hello! How can I help?"}]',
  );
  const parsed = JSON.parse(out) as { actor: string; timestamp: string; actor_text: string }[];
  t.true(Array.isArray(parsed));
  for (const item of parsed) {
    t.deepEqual(Object.keys(item), ['actor', 'timestamp', 'actor_text']);
    t.regex(item.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  }
});

test('JSON round-trips multi-line, quotes, colons and unicode text', (t) => {
  for (const name of ['multiline', 'special', 'edge'] as const) {
    const parsed = JSON.parse(formatDialogue(cases[name], 'JSON')) as { actor: string; timestamp: string; actor_text: string }[];
    t.deepEqual(
      parsed,
      cases[name].map((e) => ({ actor: e.actor, timestamp: e.timestamp.toISOString(), actor_text: e.actorText })),
    );
  }
  t.is(
    formatDialogue([el('user', '2024-12-31T23:59:59.999Z', 'He said "yes": 日本語\n🎉')], 'JSON'),
    '[{"actor":"user","timestamp":"2024-12-31T23:59:59.999Z","actor_text":"He said \\"yes\\": 日本語\\n🎉"}]',
  );
});

test('JSON timestamps are normalised to UTC', (t) => {
  const out = formatDialogue([el('user', '2024-03-05T16:07:09.5+02:00', 'x')], 'JSON');
  t.is(out, '[{"actor":"user","timestamp":"2024-03-05T14:07:09.500Z","actor_text":"x"}]');
});

// --- PYTHON_REPR ------------------------------------------------------------

for (const name of Object.keys(cases) as (keyof typeof cases)[]) {
  test(`PYTHON_REPR matches Python repr golden: ${name}`, (t) => {
    t.is(formatDialogue(cases[name], 'PYTHON_REPR'), golden[name].PYTHON_REPR);
  });
}

test('pythonStrRepr picks quotes and escapes like CPython', (t) => {
  t.is(pythonStrRepr(''), "''");
  t.is(pythonStrRepr("it's"), '"it\'s"');
  t.is(pythonStrRepr('both \' and "'), "'both \\' and \"'");
  t.is(pythonStrRepr('tab\tnl\ncr\r\\'), "'tab\\tnl\\ncr\\r\\\\'");
  t.is(pythonStrRepr('\u0000\u001f\u007f\u0085\u00a0\u00e9'), "'\\x00\\x1f\\x7f\\x85\\xa0\u00e9'");
  t.is(pythonStrRepr('\u200b\u2028\u3000\ud800'), "'\\u200b\\u2028\\u3000\\ud800'");
  t.is(pythonStrRepr('\u{e0001}🎉'), "'\\U000e0001🎉'");
});

// --- validation -------------------------------------------------------------

test('formatDialogue rejects elements with an invalid actor', (t) => {
  const bad = [{ actor: 'USER', timestamp: new Date(0), actorText: 'x' }] as unknown as DialogueElement[];
  for (const format of ALL_FORMATS) {
    t.throws(() => formatDialogue(bad, format), { instanceOf: TypeError, message: /unknown actor/ });
  }
});

test('formatDialogue rejects invalid timestamps and non-string text', (t) => {
  t.throws(() => formatDialogue([el('user', 'not a date', 'x')], 'CHAT'), { instanceOf: TypeError });
  const noText = [{ actor: 'user', timestamp: new Date(0) }] as unknown as DialogueElement[];
  t.throws(() => formatDialogue(noText, 'YAML'), { instanceOf: TypeError });
});

test('formatDialogue rejects unknown format names', (t) => {
  t.throws(() => formatDialogue(cases.single, 'chat' as DialogueFormatName), { instanceOf: TypeError });
});

// --- actors -----------------------------------------------------------------

test('parseActor accepts exactly system, assistant and user', (t) => {
  t.is(parseActor('system'), 'system');
  t.is(parseActor('assistant'), 'assistant');
  t.is(parseActor('user'), 'user');
  for (const bad of ['USER', 'User', 'LLM', 'llm', 'human', 'ai', ' user', 'user ', '', 'tool', 'function']) {
    t.is(parseActor(bad), undefined, bad);
  }
});
