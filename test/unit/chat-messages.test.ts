import test from 'ava';
import { ChatMessage } from '../../src/gen/parley/prompt/v1/prompt.js';
import { chatMessageProblems, fromOpenAiMessage, toOpenAiMessage } from '../../src/prompt/messages.js';
import { CHAT_MESSAGE_CASES } from '../helpers/chat-messages.js';

for (const c of CHAT_MESSAGE_CASES) {
  test(`${c.form}: the OpenAI message reads and writes back byte for byte, and is valid`, (t) => {
    const read = fromOpenAiMessage(c.openai);
    t.is(JSON.stringify(toOpenAiMessage(read)), JSON.stringify(c.openai));
    t.deepEqual(chatMessageProblems([read]), []);
  });
  test(`${c.form}: the proto3 JSON is canonical (the generated toJSON prints it as written)`, (t) => {
    t.is(JSON.stringify(ChatMessage.toJSON(ChatMessage.fromJSON(c.json))), JSON.stringify(c.json));
  });
}

test('the store’s key order does not count: a message with its keys shuffled (jsonb sorts them) reads back in canonical order', (t) => {
  for (const c of CHAT_MESSAGE_CASES) {
    const shuffled = JSON.parse(JSON.stringify(c.openai, Object.keys(flatKeys(c.openai)).sort()));
    t.is(JSON.stringify(toOpenAiMessage(fromOpenAiMessage(shuffled))), JSON.stringify(c.openai), c.form);
  }
});

/** Every key at any depth (a JSON.stringify replacer list keeps only these, in its order). */
function flatKeys(v: unknown, into: Record<string, true> = {}): Record<string, true> {
  if (Array.isArray(v)) v.forEach((x) => flatKeys(x, into));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      into[k] = true;
      flatKeys(x, into);
    }
  }
  return into;
}

test('the lenient reader keeps what it cannot type: an unknown part kind reads as a text part holding its JSON', (t) => {
  const m = fromOpenAiMessage({ role: 'user', content: [{ type: 'video', video: { id: 'v1' } }] });
  t.deepEqual(m.contentParts, [{ kind: 'text', text: '{"type":"video","video":{"id":"v1"}}' }]);
  const bare = fromOpenAiMessage({ role: 'user', content: [{ type: 'image_url', image_url: 'https://example.com/a.png' }] });
  t.deepEqual(bare.contentParts, [{ kind: 'image_url', url: 'https://example.com/a.png', detail: '' }], 'the older bare-string image_url');
  t.is(fromOpenAiMessage({ role: 'robot', content: 'x' }).role, undefined);
});

test('a message as an SDK dumps it (nulls for what it lacks, keys parley has no field for) reads as the message it is', (t) => {
  const dumped = { role: 'assistant', content: 'hi', refusal: null, annotations: [], audio: null, function_call: null, tool_calls: null, smarter_is_new: true };
  const m = fromOpenAiMessage(dumped);
  t.deepEqual(chatMessageProblems([m]), []);
  t.is(JSON.stringify(toOpenAiMessage(m)), '{"role":"assistant","content":"hi"}');
});
