/**
 * OpenAI-style chat messages: validation of what clients log, and the stored form. Messages are stored in
 * the OpenAI wire shape (`{role, content, refusal, name, audio: {id}, tool_calls: [{id, type, function:
 * {name, arguments}}], tool_call_id}`, content a string, a list of typed parts, `null` or left out), the
 * same shape a logged `request.messages` has, so both read back the same way. Nothing is flattened: a
 * message read back and written again gives the same JSON, key for key in the canonical order below (the
 * store's jsonb keeps no key order, so the order is rebuilt on every read).
 */
import { TOOL_CALL_FUNCTION_NAME_MAX_LENGTH } from './rules.js';

const CHAT_ROLES = ['system', 'user', 'assistant', 'tool', 'developer', 'smarter', 'smarter_error'] as const;
export type ChatRoleName = (typeof CHAT_ROLES)[number];
/** The values a client sends (the ChatRole enum's names, as JSON clients spell them), for error messages. */
const CHAT_ROLE_VALUES = CHAT_ROLES.map((r) => `CHAT_ROLE_${r.toUpperCase()}`).join(', ');

export interface ChatToolCallData {
  id: string;
  /** `function` (OpenAI's `type`; `call_type` in the proto, as `type` is a reserved word in Go). */
  callType: string;
  functionName: string;
  functionArguments: string;
}

/** One part of a content list; `kind` undefined when the client set none (refused by validation). */
export type ChatContentPartData =
  | { kind: 'text'; text: string }
  | { kind: 'image_url'; url: string; detail: string }
  | { kind: 'input_audio'; data: string; format: string }
  | { kind: 'file'; fileData: string; fileId: string; filename: string }
  | { kind: 'refusal'; refusal: string }
  | { kind: undefined };

/**
 * How the content is written: `value` is the string `content`, or the list `contentParts` when it has
 * parts; `null` is `"content": null`; `omitted` leaves the key out.
 */
export type ChatContentShape = 'value' | 'null' | 'omitted';

export interface ChatMessageData {
  /** Undefined when the client sent no (or an unknown) role. */
  role: ChatRoleName | undefined;
  content: string;
  contentParts: ChatContentPartData[];
  contentShape: ChatContentShape;
  name: string;
  refusal: string;
  /** `audio.id` of an assistant message; empty when it has none. */
  audioId: string;
  toolCalls: ChatToolCallData[];
  toolCallId: string;
}

/** OpenAI's rule for a participant name and a function name. */
const PARTICIPANT_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CONTENT_PARTS_MAX_COUNT = 256;
const FILENAME_MAX_LENGTH = 255;
const ID_MAX_LENGTH = 256;
const IMAGE_DETAILS = new Set(['', 'auto', 'low', 'high']);
const AUDIO_FORMATS = new Set(['wav', 'mp3']);
/** Part kinds each role may carry (OpenAI's: media parts from the user, refusals from the assistant). */
const PART_KINDS_BY_ROLE: Record<ChatRoleName, ReadonlySet<string>> = {
  system: new Set(['text']),
  developer: new Set(['text']),
  user: new Set(['text', 'image_url', 'input_audio', 'file']),
  assistant: new Set(['text', 'refusal']),
  tool: new Set(['text']),
  smarter: new Set(['text']),
  smarter_error: new Set(['text']),
};
const PART_FIELDS = 'text, image_url, input_audio, file or refusal';

/** A problem with one field of a message list, at its path inside the list (`[2, 'tool_call_id']`). */
export interface ChatMessageProblem {
  path: Array<string | number>;
  description: string;
}

/** An image URL OpenAI takes: http(s) or a `data:` URL (checked by scheme only; the URL is kept verbatim). */
const IMAGE_URL = /^(https?:\/\/[^\s]+|data:[^\s]*)$/i;

function partProblems(role: ChatRoleName, p: ChatContentPartData, at: (path: Array<string | number>, d: string) => void): void {
  if (p.kind === undefined) return at([], `must set one of ${PART_FIELDS}`);
  if (!PART_KINDS_BY_ROLE[role].has(p.kind)) return at([p.kind], `is not allowed in a ${role} message`);
  switch (p.kind) {
    case 'image_url':
      if (!p.url) at(['image_url', 'url'], 'is required');
      else if (!IMAGE_URL.test(p.url)) at(['image_url', 'url'], 'must be an http(s) URL or a data: URL');
      if (!IMAGE_DETAILS.has(p.detail)) at(['image_url', 'detail'], 'must be auto, low or high (or empty)');
      break;
    case 'input_audio':
      if (!p.data) at(['input_audio', 'data'], 'is required (base64 audio)');
      if (!AUDIO_FORMATS.has(p.format)) at(['input_audio', 'format'], 'must be wav or mp3');
      break;
    case 'file':
      if (!p.fileData && !p.fileId) at(['file', 'file_id'], 'file_id or file_data is required');
      if (p.fileId.length > ID_MAX_LENGTH) at(['file', 'file_id'], `must be at most ${ID_MAX_LENGTH} characters`);
      if (p.filename.length > FILENAME_MAX_LENGTH) at(['file', 'filename'], `must be at most ${FILENAME_MAX_LENGTH} characters`);
      break;
    case 'refusal':
      if (!p.refusal) at(['refusal'], 'is required');
      break;
    case 'text':
      break;
  }
}

/** Every problem with a message list (the transport names each field with field-path.ts). */
export function chatMessageProblems(messages: readonly ChatMessageData[]): ChatMessageProblem[] {
  const out: ChatMessageProblem[] = [];
  messages.forEach((m, i) => {
    const at = (f: string, description: string) => out.push({ path: [i, f], description });
    if (!m.role) {
      at('role', `must be one of ${CHAT_ROLE_VALUES}`);
      return;
    }
    const assistant = m.role === 'assistant';
    if (m.name && !PARTICIPANT_NAME.test(m.name)) at('name', 'must be 1-64 letters, digits, _ or -');
    if (m.role === 'tool') {
      if (!m.toolCallId) at('tool_call_id', 'is required for a tool message (the id of the tool call it answers)');
    } else if (m.toolCallId) {
      at('tool_call_id', 'is only allowed on tool messages');
    }
    if (!assistant && m.toolCalls.length > 0) at('tool_calls', 'are only allowed on assistant messages');
    if (!assistant && m.refusal) at('refusal', 'is only allowed on assistant messages');
    if (!assistant && m.audioId) at('audio', 'is only allowed on assistant messages');
    if (m.audioId.length > ID_MAX_LENGTH) at('audio.id', `must be at most ${ID_MAX_LENGTH} characters`);
    // The content is one of: a string, a list of parts, null, absent.
    const parts = m.contentParts.length > 0;
    if (m.content !== '' && parts) at('content_parts', 'must be empty when content is set (content is a string or a list of parts, not both)');
    if (m.contentShape !== 'value' && (m.content !== '' || parts)) at('content_shape', 'must be unspecified when content or content_parts is set');
    // An assistant message may go without content when it says something else: tool calls, a refusal, audio.
    const contentOptional = assistant && (m.toolCalls.length > 0 || m.refusal !== '' || m.audioId !== '');
    if (m.content === '' && !parts && !contentOptional) {
      if (m.contentShape !== 'value') at('content_shape', 'content may only be null or left out on an assistant message with tool calls, a refusal or audio');
      else at('content', assistant ? 'is required unless the message carries tool calls, a refusal or audio' : 'is required');
    }
    if (m.contentParts.length > CONTENT_PARTS_MAX_COUNT) at('content_parts', `must have at most ${CONTENT_PARTS_MAX_COUNT} parts`);
    else {
      const role = m.role;
      m.contentParts.forEach((p, j) => partProblems(role, p, (path, description) => out.push({ path: [i, 'content_parts', j, ...path], description })));
    }
    m.toolCalls.forEach((c, j) => {
      const cat = (f: string, description: string) => out.push({ path: [i, 'tool_calls', j, f], description });
      if (!c.id) cat('id', 'is required (tool messages answer it by this id)');
      if (c.callType !== '' && c.callType !== 'function') cat('call_type', 'must be "function" (or empty)');
      if (!c.functionName) cat('function_name', 'is required');
      else if (c.functionName.length > TOOL_CALL_FUNCTION_NAME_MAX_LENGTH) cat('function_name', `must be at most ${TOOL_CALL_FUNCTION_NAME_MAX_LENGTH} characters`);
    });
  });
  return out;
}

/** A content part in OpenAI's wire shape (`type` first, then the kind's object; empty optional keys left out). */
function toOpenAiPart(p: ChatContentPartData): Record<string, unknown> {
  switch (p.kind) {
    case 'text':
      return { type: 'text', text: p.text };
    case 'image_url':
      return { type: 'image_url', image_url: p.detail ? { url: p.url, detail: p.detail } : { url: p.url } };
    case 'input_audio':
      return { type: 'input_audio', input_audio: { data: p.data, format: p.format } };
    case 'file': {
      const file: Record<string, string> = {};
      if (p.fileData) file.file_data = p.fileData;
      if (p.fileId) file.file_id = p.fileId;
      if (p.filename) file.filename = p.filename;
      return { type: 'file', file };
    }
    case 'refusal':
      return { type: 'refusal', refusal: p.refusal };
    case undefined:
      return {};
  }
}

/**
 * The stored (OpenAI wire) form of a valid message, keys in the canonical order `role, content, refusal,
 * name, audio, tool_calls, tool_call_id`; empty optional fields are left out.
 */
export function toOpenAiMessage(m: ChatMessageData): Record<string, unknown> {
  const o: Record<string, unknown> = { role: m.role };
  if (m.contentShape === 'null') o.content = null;
  else if (m.contentShape === 'value') o.content = m.contentParts.length ? m.contentParts.map(toOpenAiPart) : m.content;
  if (m.refusal) o.refusal = m.refusal;
  if (m.name) o.name = m.name;
  if (m.audioId) o.audio = { id: m.audioId };
  if (m.toolCalls.length) {
    o.tool_calls = m.toolCalls.map((c) => ({ id: c.id, type: c.callType || 'function', function: { name: c.functionName, arguments: c.functionArguments } }));
  }
  if (m.toolCallId) o.tool_call_id = m.toolCallId;
  return o;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));
const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

/** One stored or logged part; a kind parley has no field for reads as a text part holding its JSON. */
function fromOpenAiPart(json: unknown): ChatContentPartData {
  const p = obj(json);
  switch (p.type) {
    case 'text':
      return { kind: 'text', text: str(p.text) };
    case 'image_url': {
      // Older clients sent the URL as a bare string.
      const img = typeof p.image_url === 'string' ? { url: p.image_url } : obj(p.image_url);
      return { kind: 'image_url', url: str(img.url), detail: str(img.detail) };
    }
    case 'input_audio': {
      const a = obj(p.input_audio);
      return { kind: 'input_audio', data: str(a.data), format: str(a.format) };
    }
    case 'file': {
      const f = obj(p.file);
      return { kind: 'file', fileData: str(f.file_data), fileId: str(f.file_id), filename: str(f.filename) };
    }
    case 'refusal':
      return { kind: 'refusal', refusal: str(p.refusal) };
    default:
      return { kind: 'text', text: JSON.stringify(json) ?? '' };
  }
}

/**
 * Reads a stored or client-logged OpenAI message back. Lenient on purpose: a `request.messages` was logged
 * as the client sent it to the model, so unknown roles read as undefined and an unknown part kind reads as
 * a text part holding its JSON; everything parley has a field for (parts, refusals, audio, the smarter
 * roles, null or absent content) is kept as it was.
 */
export function fromOpenAiMessage(json: unknown): ChatMessageData {
  const o = obj(json);
  const role = CHAT_ROLES.find((r) => r === o.role);
  let content = '';
  let contentParts: ChatContentPartData[] = [];
  let contentShape: ChatContentShape = 'value';
  if (!Object.hasOwn(o, 'content') || o.content === undefined) contentShape = 'omitted';
  else if (o.content === null) contentShape = 'null';
  else if (Array.isArray(o.content)) contentParts = o.content.map(fromOpenAiPart);
  else content = str(o.content);
  const calls = Array.isArray(o.tool_calls) ? o.tool_calls : [];
  return {
    role,
    content,
    contentParts,
    contentShape,
    name: str(o.name),
    refusal: str(o.refusal),
    audioId: str(obj(o.audio).id),
    toolCalls: calls.map((c) => {
      const co = obj(c);
      const fn = obj(co.function);
      return { id: str(co.id), callType: str(co.type) || 'function', functionName: str(fn.name), functionArguments: str(fn.arguments) };
    }),
    toolCallId: str(o.tool_call_id),
  };
}
