/**
 * Chat messages in every content form parley keeps, each written twice by hand: as proto3 JSON (the
 * canonical form the generated toJSON, buf curl and Python's json_format print) and as the OpenAI message
 * it stands for (keys in parley's canonical order). Round-trip tests compare bytes against both.
 */
const call = { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } };
const protoCall = { id: 'call_1', callType: 'function', functionName: 'get_weather', functionArguments: '{"city":"Oslo"}' };

export interface ChatMessageCase {
  form: string;
  /** The message as proto3 JSON (camelCase keys, enum names, defaults left out). */
  json: Record<string, unknown>;
  /** The same message as OpenAI's chat-completions API spells it. */
  openai: Record<string, unknown>;
}

export const CHAT_MESSAGE_CASES: ChatMessageCase[] = [
  { form: 'string content', json: { role: 'CHAT_ROLE_USER', content: 'Weather in Oslo? Ærlig talt 🌧' }, openai: { role: 'user', content: 'Weather in Oslo? Ærlig talt 🌧' } },
  { form: 'system message with a name', json: { role: 'CHAT_ROLE_SYSTEM', content: 'Be brief.', name: 'ops' }, openai: { role: 'system', content: 'Be brief.', name: 'ops' } },
  { form: 'developer message', json: { role: 'CHAT_ROLE_DEVELOPER', content: 'Answer in JSON.' }, openai: { role: 'developer', content: 'Answer in JSON.' } },
  {
    form: 'text parts (one of them empty), with a name',
    json: { role: 'CHAT_ROLE_USER', name: 'alice', contentParts: [{ text: 'Describe ' }, { text: '' }, { text: 'this.' }] },
    openai: { role: 'user', content: [{ type: 'text', text: 'Describe ' }, { type: 'text', text: '' }, { type: 'text', text: 'this.' }], name: 'alice' },
  },
  {
    form: 'image by URL with detail',
    json: { role: 'CHAT_ROLE_USER', contentParts: [{ text: 'What is this?' }, { imageUrl: { url: 'https://example.com/cat.png?size=large&x=1', detail: 'high' } }] },
    openai: { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://example.com/cat.png?size=large&x=1', detail: 'high' } }] },
  },
  {
    form: 'image as a data URL',
    json: { role: 'CHAT_ROLE_USER', contentParts: [{ imageUrl: { url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE=' } }] },
    openai: { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE=' } }] },
  },
  {
    form: 'input audio',
    json: { role: 'CHAT_ROLE_USER', contentParts: [{ inputAudio: { data: 'UklGRiQAAABXQVZF', format: 'wav' } }, { inputAudio: { data: 'SUQzBAA=', format: 'mp3' } }] },
    openai: { role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'UklGRiQAAABXQVZF', format: 'wav' } }, { type: 'input_audio', input_audio: { data: 'SUQzBAA=', format: 'mp3' } }] },
  },
  {
    form: 'file by id',
    json: { role: 'CHAT_ROLE_USER', contentParts: [{ text: 'Summarise' }, { file: { fileId: 'file-abc123' } }] },
    openai: { role: 'user', content: [{ type: 'text', text: 'Summarise' }, { type: 'file', file: { file_id: 'file-abc123' } }] },
  },
  {
    form: 'file by data, with a filename',
    json: { role: 'CHAT_ROLE_USER', contentParts: [{ file: { fileData: 'data:application/pdf;base64,JVBERi0xLjQ=', filename: 'report.pdf' } }] },
    openai: { role: 'user', content: [{ type: 'file', file: { file_data: 'data:application/pdf;base64,JVBERi0xLjQ=', filename: 'report.pdf' } }] },
  },
  {
    form: 'refusal field, content null',
    json: { role: 'CHAT_ROLE_ASSISTANT', contentShape: 'CHAT_CONTENT_SHAPE_NULL', refusal: 'I can’t help with that.' },
    openai: { role: 'assistant', content: null, refusal: 'I can’t help with that.' },
  },
  {
    form: 'refusal part',
    json: { role: 'CHAT_ROLE_ASSISTANT', contentParts: [{ text: 'Partly: ' }, { refusal: 'not the rest.' }] },
    openai: { role: 'assistant', content: [{ type: 'text', text: 'Partly: ' }, { type: 'refusal', refusal: 'not the rest.' }] },
  },
  {
    form: 'assistant with tool calls, content null',
    json: { role: 'CHAT_ROLE_ASSISTANT', toolCalls: [protoCall], contentShape: 'CHAT_CONTENT_SHAPE_NULL' },
    openai: { role: 'assistant', content: null, tool_calls: [call] },
  },
  {
    form: 'assistant with tool calls, content left out',
    json: { role: 'CHAT_ROLE_ASSISTANT', toolCalls: [protoCall], contentShape: 'CHAT_CONTENT_SHAPE_OMITTED' },
    openai: { role: 'assistant', tool_calls: [call] },
  },
  {
    form: 'assistant with tool calls, content empty',
    json: { role: 'CHAT_ROLE_ASSISTANT', toolCalls: [protoCall] },
    openai: { role: 'assistant', content: '', tool_calls: [call] },
  },
  {
    form: 'assistant with audio by id, a name and text',
    json: { role: 'CHAT_ROLE_ASSISTANT', content: 'Here it is.', name: 'bot', audio: { id: 'audio_abc123' } },
    openai: { role: 'assistant', content: 'Here it is.', name: 'bot', audio: { id: 'audio_abc123' } },
  },
  { form: 'tool result as a string', json: { role: 'CHAT_ROLE_TOOL', content: '{"temp_c":3}', toolCallId: 'call_1' }, openai: { role: 'tool', content: '{"temp_c":3}', tool_call_id: 'call_1' } },
  {
    form: 'tool result as text parts',
    json: { role: 'CHAT_ROLE_TOOL', toolCallId: 'call_1', contentParts: [{ text: '3 °C' }, { text: ', rain' }] },
    openai: { role: 'tool', content: [{ type: 'text', text: '3 °C' }, { type: 'text', text: ', rain' }], tool_call_id: 'call_1' },
  },
  { form: 'smarter role', json: { role: 'CHAT_ROLE_SMARTER', content: 'Plugin weather selected.' }, openai: { role: 'smarter', content: 'Plugin weather selected.' } },
  { form: 'smarter_error role', json: { role: 'CHAT_ROLE_SMARTER_ERROR', content: 'The model timed out.' }, openai: { role: 'smarter_error', content: 'The model timed out.' } },
];
