import test from 'ava';
import {
  DEFAULT_PROMPT_VERSION,
  PROMPT_CACHE_KEY_PREFIX,
  PROMPT_NAME_MAX_LENGTH,
  PROMPT_URL_MAX_LENGTH,
  SESSION_KEY_LENGTH,
  TAG_MAX_LENGTH,
  USER_AGENT_MAX_LENGTH,
  defaultPromptName,
  historyMessages,
  newSessionKey,
  normalizeDescription,
  normalizePromptUrl,
  normalizePromptVersion,
  normalizeSessionKey,
  normalizeTags,
  normalizeUserAgent,
  parseLlmClientUrl,
  promptCacheKey,
  validateAnnotationKey,
  validateIpAddress,
  validatePromptName,
  validatePromptUrl,
  validatePromptVersion,
  validateSessionKey,
  validateTag,
  validateToolCallFunctionName,
} from '../../src/prompt/rules.js';

const KEY = 'a'.repeat(64);

// ---------------------------------------------------------------------------
// name
// ---------------------------------------------------------------------------

test('validatePromptName accepts camelCase names', (t) => {
  for (const name of ['apiKey', 'a', 'x', 'hr', 'prompt', 'myPromptV2', 'v2', 'aB', 'apiURL', 'abc123def']) {
    t.is(validatePromptName(name), undefined, name);
  }
});

test('validatePromptName rejects non-camelCase names', (t) => {
  for (const name of [
    'ApiKey', // PascalCase
    'api_key', // snake_case
    'api-key', // kebab
    'api key',
    ' apiKey',
    'apiKey ',
    '2fast',
    '_apiKey',
    'api.key',
    'apiKéy',
    'apiKey\n',
  ]) {
    t.truthy(validatePromptName(name), JSON.stringify(name));
  }
});

test('validatePromptName rejects empty, non-string and overlong names', (t) => {
  t.is(validatePromptName(''), 'name is required');
  t.truthy(validatePromptName(undefined));
  t.truthy(validatePromptName(null));
  t.truthy(validatePromptName(42));
  t.is(validatePromptName('a'.repeat(PROMPT_NAME_MAX_LENGTH)), undefined);
  t.truthy(validatePromptName('a'.repeat(PROMPT_NAME_MAX_LENGTH + 1)));
});

test('reference bug fixed: camelCase names may contain digits and be one letter long', (t) => {
  // The reference camelCase validator also required value[1:].isalpha(), which rejected
  // "apiKey2" and every single-character name ("".isalpha() is False).
  t.is(validatePromptName('apiKey2'), undefined);
  t.is(validatePromptName('a'), undefined);
});

test('reference bug fixed: names are camelCase, not snake_case', (t) => {
  // The reference model's help text says camelCase but its validator checked snake_case.
  t.is(validatePromptName('apiKey'), undefined);
  t.truthy(validatePromptName('api_key'));
});

test('defaultPromptName is a valid camelCase name derived from the session key', (t) => {
  const key = newSessionKey();
  const name = defaultPromptName(key);
  t.is(validatePromptName(name), undefined);
  t.is(name, `prompt${key.slice(0, 8)}`);
  t.is(defaultPromptName('ABCDEF0123' + 'a'.repeat(54)), 'promptabcdef01');
});

// ---------------------------------------------------------------------------
// version
// ---------------------------------------------------------------------------

test('validatePromptVersion accepts semantic versions', (t) => {
  for (const v of [
    '1.0.0',
    '0.0.0',
    '0.1.0',
    '10.20.30',
    '1.0.0-alpha',
    '1.0.0-alpha.1',
    '1.0.0-0.3.7',
    '1.0.0-x.7.z.92',
    '1.0.0-alpha+001',
    '1.0.0+20130313144700',
    '1.0.0-beta+exp.sha.5114f85',
    '1.0.0-x-y-z.--',
  ]) {
    t.is(validatePromptVersion(v), undefined, v);
  }
});

test('validatePromptVersion rejects non-semver strings', (t) => {
  for (const v of [
    '1',
    '1.0',
    '1.0.0.0',
    'v1.0.0',
    '01.0.0',
    '1.01.0',
    '1.0.01',
    '1.0.0-',
    '1.0.0-01',
    '1.0.0+',
    '1.0.0-alpha..1',
    ' 1.0.0',
    '1.0.0 ',
    'a.b.c',
    '-1.0.0',
  ]) {
    t.truthy(validatePromptVersion(v), v);
  }
  t.truthy(validatePromptVersion(1));
  t.truthy(validatePromptVersion('1.0.0-' + 'a'.repeat(300)));
});

test('reference bug fixed: a trailing newline or non-ASCII digits are not a valid version', (t) => {
  // Python re.match(r"...$") accepts "1.0.0\n", and \d matches any Unicode digit.
  t.truthy(validatePromptVersion('1.0.0\n'));
  t.truthy(validatePromptVersion('١.0.0'));
});

test('validatePromptVersion allows an absent version and normalizePromptVersion supplies the default', (t) => {
  t.is(validatePromptVersion(undefined), undefined);
  t.is(validatePromptVersion(null), undefined);
  t.is(validatePromptVersion(''), undefined);
  t.is(validatePromptVersion('2.1.0'), undefined);
  t.truthy(validatePromptVersion('2.1'));
  t.is(normalizePromptVersion(undefined), DEFAULT_PROMPT_VERSION);
  t.is(normalizePromptVersion(null), '1.0.0');
  t.is(normalizePromptVersion(''), '1.0.0');
  t.is(normalizePromptVersion('3.0.0'), '3.0.0');
});

test('normalizeDescription trims and drops blank descriptions', (t) => {
  t.is(normalizeDescription('  hello  '), 'hello');
  t.is(normalizeDescription('   '), undefined);
  t.is(normalizeDescription(''), undefined);
  t.is(normalizeDescription(null), undefined);
  t.is(normalizeDescription(undefined), undefined);
});

// ---------------------------------------------------------------------------
// tags
// ---------------------------------------------------------------------------

test('validateTag accepts URL-friendly tags, with spaces', (t) => {
  for (const tag of ['hr', 'human resources', 'v1.2', 'team:hr', 'a/b', 'snake_case', 'kebab-case', 'café', '  padded  ']) {
    t.is(validateTag(tag), undefined, tag);
  }
});

test('validateTag rejects empty, overlong and non-URL-friendly tags', (t) => {
  t.truthy(validateTag(''));
  t.truthy(validateTag('   '));
  t.truthy(validateTag(5));
  t.truthy(validateTag('a\tb'));
  t.truthy(validateTag('a\nb'));
  t.truthy(validateTag('<script>'));
  t.truthy(validateTag('quote"d'));
  t.truthy(validateTag('emoji 🎉'));
  t.is(validateTag('a'.repeat(TAG_MAX_LENGTH)), undefined);
  t.truthy(validateTag('a'.repeat(TAG_MAX_LENGTH + 1)));
});

test('normalizeTags trims and de-duplicates keeping first occurrence', (t) => {
  t.deepEqual(normalizeTags([' hr ', 'ops', 'hr', 'Ops']), ['hr', 'ops', 'Ops']);
  t.deepEqual(normalizeTags(undefined), []);
  t.deepEqual(normalizeTags(null), []);
});

// ---------------------------------------------------------------------------
// annotations
// ---------------------------------------------------------------------------

test('validateAnnotationKey requires URL-friendly keys', (t) => {
  t.is(validateAnnotationKey('example.com/project'), undefined);
  t.is(validateAnnotationKey('https://example.com/x?y=1#z'), undefined);
  t.truthy(validateAnnotationKey(''));
  t.truthy(validateAnnotationKey('has space'));
  t.truthy(validateAnnotationKey('quote"'));
  t.truthy(validateAnnotationKey('k'.repeat(256)));
});

test('reference bug fixed: annotation keys need not contain a domain suffix', (t) => {
  // The reference reused a URL regex for keys, which demanded a ".tld" part, so "owner" failed.
  t.is(validateAnnotationKey('owner'), undefined);
});

// ---------------------------------------------------------------------------
// session keys and cache
// ---------------------------------------------------------------------------

test('newSessionKey is 64 lowercase hex characters, URL safe and valid', (t) => {
  const key = newSessionKey();
  t.is(key.length, SESSION_KEY_LENGTH);
  t.regex(key, /^[0-9a-f]{64}$/);
  t.is(encodeURIComponent(key), key);
  t.is(validateSessionKey(key), undefined);
});

test('reference bug fixed: session keys are random, not derived from request data and the clock', (t) => {
  // The reference hashed account number + URL + user agent + IP + datetime.now().
  const keys = new Set(Array.from({ length: 2000 }, () => newSessionKey()));
  t.is(keys.size, 2000);
  // every hex digit appears in every position eventually; check the key space is not degenerate
  const firstChars = new Set([...keys].map((k) => k[0]));
  t.is(firstChars.size, 16);
});

test('validateSessionKey accepts exactly 64 hex characters', (t) => {
  t.is(validateSessionKey(KEY), undefined);
  t.is(validateSessionKey('ABCDEF0123456789'.repeat(4)), undefined);
  t.truthy(validateSessionKey(''));
  t.truthy(validateSessionKey(undefined));
  t.truthy(validateSessionKey('a'.repeat(63)));
  t.truthy(validateSessionKey('a'.repeat(65)));
  t.truthy(validateSessionKey('g'.repeat(64)));
  t.truthy(validateSessionKey(`${KEY}\n`));
  t.truthy(validateSessionKey(` ${KEY}`));
});

test('normalizeSessionKey lowercases and promptCacheKey is namespaced', (t) => {
  t.is(normalizeSessionKey('ABCDEF'), 'abcdef');
  t.is(promptCacheKey(KEY), `${PROMPT_CACHE_KEY_PREFIX}{${KEY}}`);
  t.is(promptCacheKey(KEY.toUpperCase()), promptCacheKey(KEY));
  t.true(promptCacheKey(KEY).startsWith('parley:prompt:session:'));
});

// ---------------------------------------------------------------------------
// session plan
// ---------------------------------------------------------------------------

test('parseLlmClientUrl resolves the client name and account number from the host', (t) => {
  t.deepEqual(parseLlmClientUrl('https://hr.3141-5926-5359.alpha.api.example.com/llm-client/'), {
    llmClientName: 'hr',
    accountNumber: '3141-5926-5359',
  });
  t.deepEqual(parseLlmClientUrl('http://education.3141-5926-5359.api.localhost:9357/config/'), {
    llmClientName: 'education',
    accountNumber: '3141-5926-5359',
  });
  t.deepEqual(parseLlmClientUrl('https://hr.3141-5926-5359.alpha.api.example.com'), {
    llmClientName: 'hr',
    accountNumber: '3141-5926-5359',
  });
  t.deepEqual(parseLlmClientUrl('https://hr.3141-5926-5359.alpha.api.example.com./x?y=1#z'), {
    llmClientName: 'hr',
    accountNumber: '3141-5926-5359',
  });
});

test('parseLlmClientUrl: a hyphenated first label is <client>-<username>', (t) => {
  t.deepEqual(parseLlmClientUrl('https://example-username.3141-5926-5359.alpha.api.example.com/'), {
    llmClientName: 'example',
    accountNumber: '3141-5926-5359',
  });
});

test('parseLlmClientUrl lowercases the client name (hosts are case-insensitive)', (t) => {
  t.deepEqual(parseLlmClientUrl('https://MyBot.3141-5926-5359.alpha.api.example.com/'), {
    llmClientName: 'mybot',
    accountNumber: '3141-5926-5359',
  });
});

test('parseLlmClientUrl rejects URLs that are not named client URLs', (t) => {
  for (const url of [
    '',
    'not a url',
    'ftp://hr.3141-5926-5359.alpha.api.example.com/',
    'https://alpha.api.example.com/llm-client/',
    'https://hr.alpha.api.example.com/',
    'https://3141-5926-5359.example.com/', // account number is the first label: no client name
    'https://hr.3141-5926-5359/', // nothing after the account number
    'https://hr.31415-926-5359.alpha.api.example.com/',
    'https://-hr.3141-5926-5359.alpha.api.example.com/',
    'https://127.0.0.1/',
    'https://[::1]/',
  ]) {
    t.is(parseLlmClientUrl(url), undefined, url);
  }
});

test('reference bug fixed: an account number outside the host is ignored', (t) => {
  // The reference searched the whole URL with \b\d{4}-\d{4}-\d{4}\b, so path or query text matched.
  t.is(parseLlmClientUrl('https://alpha.api.example.com/llm-client/?acct=3141-5926-5359'), undefined);
  t.is(parseLlmClientUrl('https://hr.alpha.api.example.com/3141-5926-5359/'), undefined);
  t.is(parseLlmClientUrl('https://user:3141-5926-5359@hr.alpha.api.example.com/'), undefined);
});

// ---------------------------------------------------------------------------
// request metadata
// ---------------------------------------------------------------------------

test('validateIpAddress accepts IPv4 and IPv6 literals only', (t) => {
  t.is(validateIpAddress('192.168.1.100'), undefined);
  t.is(validateIpAddress('::1'), undefined);
  t.is(validateIpAddress('2001:db8::8a2e:370:7334'), undefined);
  t.truthy(validateIpAddress(''));
  t.truthy(validateIpAddress(undefined));
  t.truthy(validateIpAddress('ip_address')); // the reference's placeholder
  t.truthy(validateIpAddress('256.1.1.1'));
  t.truthy(validateIpAddress('example.com'));
});

test('normalizeUserAgent truncates to 255 and never splits a surrogate pair', (t) => {
  t.is(normalizeUserAgent(undefined), '');
  t.is(normalizeUserAgent(null), '');
  t.is(normalizeUserAgent('curl/8.0'), 'curl/8.0');
  t.is(normalizeUserAgent('x'.repeat(300)).length, USER_AGENT_MAX_LENGTH);
  const tricky = 'x'.repeat(USER_AGENT_MAX_LENGTH - 1) + '🎉tail';
  const out = normalizeUserAgent(tricky);
  t.is(out, 'x'.repeat(USER_AGENT_MAX_LENGTH - 1));
  t.true(out.length <= USER_AGENT_MAX_LENGTH);
});

test('normalizePromptUrl drops credentials, query string and fragment', (t) => {
  t.is(
    normalizePromptUrl(`https://u:p@hr.3141-5926-5359.api.example.com:8443/llm-client/?session_key=${KEY}#x`),
    'https://hr.3141-5926-5359.api.example.com:8443/llm-client/',
  );
  t.is(normalizePromptUrl('http://localhost:9357'), 'http://localhost:9357/');
  t.is(normalizePromptUrl('ftp://example.com/'), undefined);
  t.is(normalizePromptUrl('nope'), undefined);
});

test('validatePromptUrl requires an http(s) URL of at most 200 characters without its query', (t) => {
  t.is(validatePromptUrl('https://example.com/x'), undefined);
  t.is(validatePromptUrl(`https://example.com/?q=${'x'.repeat(500)}`), undefined);
  t.truthy(validatePromptUrl(''));
  t.truthy(validatePromptUrl(undefined));
  t.truthy(validatePromptUrl('mailto:a@b.c'));
  const base = 'https://example.com/';
  t.is(validatePromptUrl(base + 'p'.repeat(PROMPT_URL_MAX_LENGTH - base.length)), undefined);
  t.truthy(validatePromptUrl(base + 'p'.repeat(PROMPT_URL_MAX_LENGTH - base.length + 1)));
});

test('validateToolCallFunctionName: optional, 1..255 characters', (t) => {
  t.is(validateToolCallFunctionName(undefined), undefined);
  t.is(validateToolCallFunctionName(null), undefined);
  t.is(validateToolCallFunctionName('get_current_weather'), undefined);
  t.truthy(validateToolCallFunctionName(''));
  t.truthy(validateToolCallFunctionName(7));
  t.is(validateToolCallFunctionName('f'.repeat(255)), undefined);
  t.truthy(validateToolCallFunctionName('f'.repeat(256)));
});

// ---------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------

test('historyMessages prefers messages, falls back to request.messages, else []', (t) => {
  const msgs = [{ role: 'user', content: 'hi' }];
  const reqMsgs = [{ role: 'system', content: 's' }];
  t.is(historyMessages({ messages: msgs, request: { messages: reqMsgs } }), msgs);
  t.is(historyMessages({ messages: [], request: { messages: reqMsgs } }), reqMsgs);
  t.is(historyMessages({ messages: null, request: { messages: reqMsgs } }), reqMsgs);
  t.deepEqual(historyMessages({ messages: null, request: { model: 'x' } }), []);
  t.deepEqual(historyMessages({ messages: null, request: null }), []);
  t.deepEqual(historyMessages({}), []);
  t.deepEqual(historyMessages({ request: { messages: 'nope' } }), []);
});
