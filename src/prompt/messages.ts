/**
 * OpenAI-style chat messages: validation of what clients log, and the stored form. Messages are stored in
 * the OpenAI wire shape (`{role, content, name, tool_calls: [{id, type, function: {name, arguments}}],
 * tool_call_id}`), the same shape a logged `request.messages` has, so both read back the same way.
 */
import { TOOL_CALL_FUNCTION_NAME_MAX_LENGTH } from './rules.js';

const CHAT_ROLES = ['system', 'user', 'assistant', 'tool', 'developer'] as const;
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

export interface ChatMessageData {
  /** Undefined when the client sent no (or an unknown) role. */
  role: ChatRoleName | undefined;
  content: string;
  name: string;
  toolCalls: ChatToolCallData[];
  toolCallId: string;
}

/** OpenAI's rule for a participant name and a function name. */
const PARTICIPANT_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A problem with one field of a message list, at its path inside the list (`[2, 'tool_call_id']`). */
export interface ChatMessageProblem {
  path: Array<string | number>;
  description: string;
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
    if (m.name && !PARTICIPANT_NAME.test(m.name)) at('name', 'must be 1-64 letters, digits, _ or -');
    if (m.role === 'tool') {
      if (!m.toolCallId) at('tool_call_id', 'is required for a tool message (the id of the tool call it answers)');
    } else if (m.toolCallId) {
      at('tool_call_id', 'is only allowed on tool messages');
    }
    if (m.role !== 'assistant' && m.toolCalls.length > 0) at('tool_calls', 'are only allowed on assistant messages');
    if (m.content === '' && !(m.role === 'assistant' && m.toolCalls.length > 0)) {
      at('content', m.role === 'assistant' ? 'is required unless the message carries tool calls' : 'is required');
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

/** The stored (OpenAI wire) form of a valid message; empty optional fields are left out. */
export function toOpenAiMessage(m: ChatMessageData): Record<string, unknown> {
  const o: Record<string, unknown> = { role: m.role, content: m.content };
  if (m.name) o.name = m.name;
  if (m.toolCalls.length) {
    o.tool_calls = m.toolCalls.map((c) => ({ id: c.id, type: c.callType || 'function', function: { name: c.functionName, arguments: c.functionArguments } }));
  }
  if (m.toolCallId) o.tool_call_id = m.toolCallId;
  return o;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));

/**
 * Reads a stored or client-logged OpenAI message back. Lenient on purpose: a `request.messages` was logged
 * as the client sent it to the model, so unknown roles read as undefined and structured content (a list
 * of parts) reads as its text parts, or as JSON when it has none.
 */
export function fromOpenAiMessage(json: unknown): ChatMessageData {
  const o = json && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : {};
  const role = CHAT_ROLES.find((r) => r === o.role);
  let content: string;
  if (Array.isArray(o.content)) {
    const texts = o.content.filter((p): p is { text: string } => !!p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string');
    content = texts.length ? texts.map((p) => p.text).join('') : JSON.stringify(o.content);
  } else {
    content = str(o.content);
  }
  const calls = Array.isArray(o.tool_calls) ? o.tool_calls : [];
  return {
    role,
    content,
    name: str(o.name),
    toolCalls: calls.map((c) => {
      const co = c && typeof c === 'object' ? (c as Record<string, unknown>) : {};
      const fn = co.function && typeof co.function === 'object' ? (co.function as Record<string, unknown>) : {};
      return { id: str(co.id), callType: str(co.type) || 'function', functionName: str(fn.name), functionArguments: str(fn.arguments) };
    }),
    toolCallId: str(o.tool_call_id),
  };
}
