import { z } from 'zod';
import type { LlmClientRef, PromptHistorySnapshot, PromptUseCases } from '../prompt/service.js';
import type { HistoryRow, PluginUsageRow, PromptPatch, PromptRow, ToolCallRow } from '../prompt/store.js';
import {
  type ChatContentPart,
  ChatContentShape,
  type ChatMessage,
  ChatRole,
  GetPromptHistoryResponse,
  type Prompt,
  type PromptHistory,
  PromptPluginUsage,
  PromptToolCall,
  type AppendHistoryRequest,
  type OpenPromptRequest,
  type PromptServiceServer,
  type RecordPluginUsageRequest,
  type RecordToolCallRequest,
  type UpdatePromptRequest,
} from '../gen/parley/prompt/v1/prompt.js';
import { fieldTooLarge, invalidArgument, quote, type FieldViolation } from '../errors.js';
import { chatMessageProblems, fromOpenAiMessage, type ChatContentPartData, type ChatContentShape as ContentShapeName, type ChatMessageData, type ChatRoleName } from '../prompt/messages.js';
import { REPLY_BUDGET_BYTES } from '../prompt/service.js';
import {
  ANNOTATION_STRING_VALUE_MAX_LENGTH,
  normalizeDescription,
  normalizePromptUrl,
  normalizePromptVersion,
  normalizeSessionKey,
  normalizeTags,
  normalizeUserAgent,
  parseLlmClientUrl,
  validateAnnotationKey,
  validateIpAddress,
  validatePromptName,
  validatePromptUrl,
  validatePromptVersion,
  validateSessionKey,
  validateTag,
  validateToolCallFunctionName,
} from '../prompt/rules.js';
import { parseInput } from '../validate.js';
import { toPlugin } from './admin-handlers.js';
import { callerOf } from './authenticate.js';
import { labelsField, optionalEndUserId, optionalString, optionalUuid, uuid } from './zod-fields.js';
import { parseFilter, parseOrderBy } from '../filter.js';
import { labelsOf, labelsProblem } from '../labels.js';
import type { ServiceHandlers } from './rpc.js';
import { pageReply } from './replies.js';
import { delimited, intSize, stringField, structSize, timestampSize, utf8Size } from './wire-size.js';
import type { Page } from '../paging.js';

export const toPrompt = (r: PromptRow): Prompt => ({
  id: r.id,
  name: r.name,
  description: r.description,
  version: r.version,
  annotations: r.annotations,
  tags: r.tags,
  sessionKey: r.sessionKey,
  ipAddress: r.ipAddress,
  userAgent: r.userAgent,
  url: r.url,
  createTime: r.createdAt,
  updateTime: r.updatedAt,
  userProfileId: r.userProfileId,
  llmClientId: r.llmClientId,
  accountId: r.accountId,
  revision: r.revision,
  endUserId: r.endUserId,
  labels: { ...r.labels },
});

const roleToProto: Record<ChatRoleName, ChatRole> = {
  system: ChatRole.CHAT_ROLE_SYSTEM,
  user: ChatRole.CHAT_ROLE_USER,
  assistant: ChatRole.CHAT_ROLE_ASSISTANT,
  tool: ChatRole.CHAT_ROLE_TOOL,
  developer: ChatRole.CHAT_ROLE_DEVELOPER,
  smarter: ChatRole.CHAT_ROLE_SMARTER,
  smarter_error: ChatRole.CHAT_ROLE_SMARTER_ERROR,
};
const roleFromProto = new Map<number, ChatRoleName>(Object.entries(roleToProto).map(([k, v]) => [v, k as ChatRoleName]));

const shapeToProto: Record<ContentShapeName, ChatContentShape> = {
  value: ChatContentShape.CHAT_CONTENT_SHAPE_UNSPECIFIED,
  null: ChatContentShape.CHAT_CONTENT_SHAPE_NULL,
  omitted: ChatContentShape.CHAT_CONTENT_SHAPE_OMITTED,
};
const shapeFromProto = new Map<number, ContentShapeName>(Object.entries(shapeToProto).map(([k, v]) => [v, k as ContentShapeName]));

const noPart = { text: undefined, imageUrl: undefined, inputAudio: undefined, file: undefined, refusal: undefined };
function toContentPart(p: ChatContentPartData): ChatContentPart {
  switch (p.kind) {
    case 'text':
      return { ...noPart, text: p.text };
    case 'image_url':
      return { ...noPart, imageUrl: { url: p.url, detail: p.detail } };
    case 'input_audio':
      return { ...noPart, inputAudio: { data: p.data, format: p.format } };
    case 'file':
      return { ...noPart, file: { fileData: p.fileData, fileId: p.fileId, filename: p.filename } };
    case 'refusal':
      return { ...noPart, refusal: p.refusal };
    case undefined:
      return noPart;
  }
}

/** The part a client sent (the first kind set; a oneof decodes with at most one). */
function fromContentPart(p: ChatContentPart): ChatContentPartData {
  if (p.text !== undefined) return { kind: 'text', text: p.text };
  if (p.imageUrl) return { kind: 'image_url', url: p.imageUrl.url, detail: p.imageUrl.detail };
  if (p.inputAudio) return { kind: 'input_audio', data: p.inputAudio.data, format: p.inputAudio.format };
  if (p.file) return { kind: 'file', fileData: p.file.fileData, fileId: p.file.fileId, filename: p.file.filename };
  if (p.refusal !== undefined) return { kind: 'refusal', refusal: p.refusal };
  return { kind: undefined };
}

export const toChatMessage = (m: ChatMessageData): ChatMessage => ({
  role: m.role ? roleToProto[m.role] : ChatRole.CHAT_ROLE_UNSPECIFIED,
  content: m.content,
  name: m.name,
  toolCalls: m.toolCalls.map((c) => ({ id: c.id, callType: c.callType, functionName: c.functionName, functionArguments: c.functionArguments })),
  toolCallId: m.toolCallId,
  contentParts: m.contentParts.map(toContentPart),
  contentShape: shapeToProto[m.contentShape],
  refusal: m.refusal,
  audio: m.audioId ? { id: m.audioId } : undefined,
});

export const toHistory = (r: HistoryRow): PromptHistory => ({
  id: r.id,
  promptId: r.promptId,
  request: r.request,
  response: r.response,
  messages: r.messages.map((m) => toChatMessage(fromOpenAiMessage(m))),
  createTime: r.createdAt,
  revision: r.revision,
});

export const toToolCall = (r: ToolCallRow): PromptToolCall => ({
  id: r.id,
  promptId: r.promptId,
  pluginId: r.pluginId ?? '',
  functionName: r.functionName,
  functionArgs: r.functionArgs,
  request: r.request,
  response: r.response,
  createTime: r.createdAt,
  revision: r.revision,
});

export const toPluginUsage = (r: PluginUsageRow): PromptPluginUsage => ({
  id: r.id,
  promptId: r.promptId,
  pluginId: r.pluginId,
  inputText: r.inputText,
  createTime: r.createdAt,
  revision: r.revision,
});

// ---------------------------------------------------------------------------
// Size limits (documented in prompt.proto): enforced on the way in, so that no reply can pass 4 MiB.
// ---------------------------------------------------------------------------

/** A history entry or a tool call, as encoded in protobuf (a reply carries it at this size). */
const LOG_ENTRY_MAX_BYTES = 1024 * 1024;
/** RecordPluginUsage.input_text, in UTF-8 bytes. */
const INPUT_TEXT_MAX_BYTES = 64 * 1024;
/** Prompt.description, in characters. */
const DESCRIPTION_MAX_LENGTH = 4096;
/** Prompt.tags and Prompt.annotations, in entries. */
const TAGS_MAX_COUNT = 64;
const ANNOTATIONS_MAX_COUNT = 64;
/** OpenPromptRequest.llm_client_url, in characters. */
const LLM_CLIENT_URL_MAX_LENGTH = 2048;


/** INVALID_ARGUMENT on `update_mask`, reason UPDATE_MASK_INVALID, naming the path. */
const maskInvalid = (violations: FieldViolation[]) => invalidArgument(violations, 'UPDATE_MASK_INVALID');

const structBytes = (v: Record<string, unknown> | undefined) => (v === undefined ? 0 : structSize(v));
const textBytes = (v: string) => Buffer.byteLength(v, 'utf8');
const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(2)} MiB`;

/** Refuses an entry past LOG_ENTRY_MAX_BYTES, naming its largest part. */
function checkEntrySize(parts: Record<string, number>): void {
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  if (total <= LOG_ENTRY_MAX_BYTES) return;
  const [largest] = Object.entries(parts).sort(([, a], [, b]) => b - a)[0] ?? ['request'];
  const detail = Object.entries(parts).map(([k, n]) => `${k} ${mib(n)}`).join(', ');
  throw fieldTooLarge(largest, `the entry is ${mib(total)} (${detail}); at most 1 MiB in all`);
}

/** Bytes an item adds to a repeated field of a reply: the encoded message plus its tag and length prefix. */
const inList = (n: number) => 1 + delimited(n);

/** ChatMessage's encoded bytes (its generated encoder, field for field; see wire-size.ts). */
export function chatMessageSize(m: ChatMessage): number {
  let size = (m.role !== 0 ? 1 + intSize(m.role) : 0) + stringField(m.content) + stringField(m.name) + stringField(m.toolCallId);
  for (const c of m.toolCalls) size += inList(stringField(c.id) + stringField(c.callType) + stringField(c.functionName) + stringField(c.functionArguments));
  for (const p of m.contentParts) size += inList(contentPartSize(p));
  size += (m.contentShape !== 0 ? 1 + intSize(m.contentShape) : 0) + stringField(m.refusal);
  if (m.audio) size += 1 + delimited(stringField(m.audio.id));
  return size;
}

/** A oneof string is written when set, even empty. */
const oneofString = (s: string | undefined) => (s === undefined ? 0 : 1 + delimited(utf8Size(s)));

function contentPartSize(p: ChatContentPart): number {
  let size = oneofString(p.text) + oneofString(p.refusal);
  if (p.imageUrl) size += 1 + delimited(stringField(p.imageUrl.url) + stringField(p.imageUrl.detail));
  if (p.inputAudio) size += 1 + delimited(stringField(p.inputAudio.data) + stringField(p.inputAudio.format));
  if (p.file) size += 1 + delimited(stringField(p.file.fileData) + stringField(p.file.fileId) + stringField(p.file.filename));
  return size;
}

/** PromptHistory's encoded bytes for `toHistory(r)`, counted rather than encoded: every write and every page reads it. */
function historyBytes(r: HistoryRow): number {
  let size = stringField(r.id) + stringField(r.promptId) + 1 + delimited(structSize(r.request)) + 1 + delimited(structSize(r.response));
  for (const m of r.messages) size += inList(chatMessageSize(toChatMessage(fromOpenAiMessage(m))));
  return size + 1 + delimited(timestampSize(r.createdAt)) + (r.revision !== 0 ? 1 + intSize(r.revision) : 0);
}
export const historySize = (r: HistoryRow) => inList(historyBytes(r));
const toolCallSize = (r: ToolCallRow) => inList(PromptToolCall.encode(toToolCall(r)).finish().length);
const pluginUsageSize = (r: PluginUsageRow) => inList(PromptPluginUsage.encode(toPluginUsage(r)).finish().length);

/** Turns one of the pure rules (message or undefined) into a zod refinement. */
const rule = (check: (v: string) => string | undefined) => (v: string, ctx: z.RefinementCtx) => {
  const problem = check(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

/**
 * An RPC's one parse step: its size limits first (FIELD_TOO_LARGE, before anything looks at a value), then
 * its schema, typed against the generated request (each field it reads must take the generated type).
 */
function parseRequest<Req, Out>(schema: z.ZodType<Out, Partial<Req>>, req: Req, limits?: (req: Req) => void): Out {
  limits?.(req);
  return parseInput(schema, req);
}

const sessionKey = optionalString.pipe(
  z.string().superRefine(rule(validateSessionKey)).transform(normalizeSessionKey).optional(),
);

/** AIP-155: a UUID the client picks per logical request and repeats on every retry of it. */
const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());

const json = z.record(z.string(), z.unknown()).optional().transform((v) => v ?? {});
const pageSize = z.number().int().min(0, 'must not be negative');
const page = { pageSize, pageToken: optionalString };

const LLM_CLIENT_URL_SHAPE = 'must look like https://<client>.<NNNN-NNNN-NNNN>.<api domain>/…';

/** The LLM client a new session is for: its id, else the one its named URL points at. */
function llmClientRef(id: string | undefined, url: string | undefined): LlmClientRef | undefined {
  if (id) return { id };
  const parsed = url === undefined ? undefined : parseLlmClientUrl(url);
  return parsed && { name: parsed.llmClientName, accountNumber: parsed.accountNumber };
}

export const openPrompt = z
  .object({
    sessionKey,
    llmClientId: optionalUuid,
    llmClientUrl: optionalString,
    ipAddress: z.string().refine((v) => v === '' || !validateIpAddress(v), 'must be an IPv4 or IPv6 address'),
    userAgent: z.string().transform(normalizeUserAgent),
    url: z
      .string()
      .superRefine((v, ctx) => {
        if (v !== '') rule(validatePromptUrl)(v, ctx);
      })
      .transform((v) => (v === '' ? '' : (normalizePromptUrl(v) ?? ''))),
    requestId,
    endUserId: optionalEndUserId,
    // Empty is none (undefined), so a retry of a request made before labels existed keeps its fingerprint.
    labels: labelsField.transform((l) => (Object.keys(l).length ? l : undefined)),
  })
  .superRefine((r, ctx) => {
    if (!r.sessionKey && !r.llmClientId && !r.llmClientUrl) {
      ctx.addIssue({ code: 'custom', path: ['sessionKey'], message: 'session_key, llm_client_id or llm_client_url is required' });
    } else if (!r.llmClientId && r.llmClientUrl && !parseLlmClientUrl(r.llmClientUrl)) {
      ctx.addIssue({ code: 'custom', path: ['llmClientUrl'], message: LLM_CLIENT_URL_SHAPE });
    }
  })
  .transform(({ llmClientId, llmClientUrl, ...r }) => ({ ...r, llmClient: llmClientRef(llmClientId, llmClientUrl) }));

const openLimits = (req: OpenPromptRequest) => {
  if (req.llmClientUrl && req.llmClientUrl.length > LLM_CLIENT_URL_MAX_LENGTH) {
    throw fieldTooLarge('llm_client_url', `must be at most ${LLM_CLIENT_URL_MAX_LENGTH} characters`);
  }
};

const byIdOrKey = z
  .object({ id: optionalUuid, sessionKey })
  .refine((r) => r.id || r.sessionKey, { path: ['id'], message: 'id or session_key is required' });

const listPrompts = z
  .object({
    ...page,
    llmClientId: optionalUuid,
    tag: optionalString.pipe(z.string().superRefine(rule(validateTag)).transform((t) => t.trim()).optional()),
    createdAfter: z.date().optional(),
    createdBefore: z.date().optional(),
    endUserId: optionalEndUserId,
    filter: z.string().optional(),
    orderBy: z.string().optional(),
    showTotalSize: z.boolean().optional(),
  })
  .refine((r) => !r.createdAfter || !r.createdBefore || r.createdAfter < r.createdBefore, {
    path: ['createdBefore'],
    message: 'must be later than created_after',
  });

/** proto3 `optional int64`: undefined when not sent. */
const expectedRevision = z.number().int().nonnegative('must not be negative').optional();

const deletePrompt = z.object({ id: uuid, requestId, expectedRevision });

const chatToolCall = z.object({ id: z.string(), callType: z.string(), functionName: z.string(), functionArguments: z.string() });
const chatMessage = z
  .object({
    role: z.number().transform((r) => roleFromProto.get(r)),
    content: z.string(),
    name: z.string(),
    toolCalls: z.array(chatToolCall),
    toolCallId: z.string(),
    contentParts: z.array(z.custom<ChatContentPart>().transform(fromContentPart)),
    contentShape: z.number().refine((s) => shapeFromProto.has(s), 'must be CHAT_CONTENT_SHAPE_UNSPECIFIED, CHAT_CONTENT_SHAPE_NULL or CHAT_CONTENT_SHAPE_OMITTED').transform((s) => shapeFromProto.get(s) ?? 'value'),
    refusal: z.string(),
    audio: z.custom<ChatMessage['audio']>(),
  })
  .transform(({ audio, ...m }): ChatMessageData => ({ ...m, audioId: audio?.id ?? '' }));
const chatMessages = z.array(chatMessage).superRefine((messages, ctx) => {
  for (const p of chatMessageProblems(messages)) ctx.addIssue({ code: 'custom', path: p.path, message: p.description });
});

export const appendHistory = z
  .object({ promptId: uuid, request: json, response: json, messages: chatMessages, requestId })
  .refine((r) => r.messages.length > 0 || Object.keys(r.request).length > 0 || Object.keys(r.response).length > 0, {
    path: ['messages'],
    message: 'an entry needs messages, a request or a response',
  });

export const appendHistoryLimits = (req: AppendHistoryRequest) =>
  checkEntrySize({
    request: structBytes(req.request),
    response: structBytes(req.response),
    messages: req.messages.reduce((n, m) => n + inList(chatMessageSize(m)), 0),
  });

export const recordToolCall = z.object({
  promptId: uuid,
  pluginId: optionalUuid,
  functionName: z.string().superRefine((v, ctx) => {
    if (v !== '') rule(validateToolCallFunctionName)(v, ctx);
  }),
  // Kept verbatim (models emit long and sometimes malformed JSON arguments), within the entry's 1 MiB.
  functionArgs: z.string(),
  request: json,
  response: json,
  requestId,
});

export const recordToolCallLimits = (req: RecordToolCallRequest) =>
  checkEntrySize({ function_args: textBytes(req.functionArgs), request: structBytes(req.request), response: structBytes(req.response) });

export const recordPluginUsage = z.object({ promptId: uuid, pluginId: uuid, inputText: z.string(), requestId });

export const recordPluginUsageLimits = (req: RecordPluginUsageRequest) => {
  if (textBytes(req.inputText) > INPUT_TEXT_MAX_BYTES) throw fieldTooLarge('input_text', `must be at most ${INPUT_TEXT_MAX_BYTES / 1024} KiB (UTF-8)`);
};

const listLog = z.object({ promptId: uuid, ...page });
const listPlugins = z.object(page);

/** What ListPromptsRequest.filter may name besides labels and times. */
const PROMPT_FILTER = { equality: ['end_user_id', 'llm_client_id'] } as const;

const UPDATABLE = ['name', 'description', 'version', 'annotations', 'tags', 'labels'] as const;
type Updatable = (typeof UPDATABLE)[number];
const OUTPUT_ONLY = new Set(['id', 'session_key', 'ip_address', 'user_agent', 'url', 'create_time', 'update_time', 'user_profile_id', 'llm_client_id', 'account_id', 'revision', 'end_user_id']);

/** The mask's fields; every path that names no updatable field is a violation naming it. */
function maskFields(req: UpdatePromptRequest): Set<Updatable> {
  const p = req.prompt;
  const paths = req.updateMask ?? [];
  const fields = new Set<Updatable>();
  if (paths.length === 0) {
    // AIP-134: no mask means the updatable fields the request sets (non-empty).
    if (p?.name) fields.add('name');
    if (p?.description) fields.add('description');
    if (p?.version) fields.add('version');
    if (p && Object.keys(p.annotations).length) fields.add('annotations');
    if (p?.tags.length) fields.add('tags');
    if (p && Object.keys(p.labels).length) fields.add('labels');
    return fields;
  }
  const bad: FieldViolation[] = [];
  for (const path of paths) {
    if (path === '*') UPDATABLE.forEach((f) => fields.add(f));
    else if ((UPDATABLE as readonly string[]).includes(path)) fields.add(path as Updatable);
    else {
      const why = OUTPUT_ONLY.has(path) ? 'is output only or immutable' : 'names no field of Prompt';
      bad.push({ field: 'update_mask', description: `path ${quote(path)} ${why}; updatable: ${UPDATABLE.join(', ')} or *` });
    }
  }
  if (bad.length) throw maskInvalid(bad);
  return fields;
}

/**
 * AIP-134: `update_mask` selects the fields taken from `prompt` (`*` all of them); without one, the fields
 * the request sets. Size limits are checked first (FIELD_TOO_LARGE), then each value.
 */
export function parseUpdate(req: UpdatePromptRequest): {
  id: string;
  patch: PromptPatch;
  requestId: string | undefined;
  expectedRevision: number | undefined;
} {
  const { requestId: rid, expectedRevision: expected } = parseInput(z.object({ requestId, expectedRevision }), {
    requestId: req.requestId,
    expectedRevision: req.expectedRevision,
  });
  const p = req.prompt;
  if (!p) throw invalidArgument('prompt', 'is required');
  if (!uuid.safeParse(p.id).success) throw invalidArgument('prompt.id', 'must be a UUID');
  const fields = maskFields(req);
  if (fields.has('description') && p.description.length > DESCRIPTION_MAX_LENGTH) {
    throw fieldTooLarge('prompt.description', `must be at most ${DESCRIPTION_MAX_LENGTH} characters`);
  }
  if (fields.has('tags') && p.tags.length > TAGS_MAX_COUNT) throw fieldTooLarge('prompt.tags', `must be at most ${TAGS_MAX_COUNT} tags`);
  if (fields.has('annotations')) {
    const entries = Object.entries(p.annotations);
    if (entries.length > ANNOTATIONS_MAX_COUNT) throw fieldTooLarge('prompt.annotations', `must be at most ${ANNOTATIONS_MAX_COUNT} entries`);
    const long = entries.find(([, v]) => v.length > ANNOTATION_STRING_VALUE_MAX_LENGTH);
    if (long) throw fieldTooLarge('prompt.annotations', `value of ${quote(long[0])} must be at most ${ANNOTATION_STRING_VALUE_MAX_LENGTH} characters`);
  }
  const violations: FieldViolation[] = [];
  const check = (field: string, problem: string | undefined) => problem && violations.push({ field: `prompt.${field}`, description: problem });
  const patch: PromptPatch = {};
  if (fields.has('name')) {
    check('name', validatePromptName(p.name));
    patch.name = p.name;
  }
  if (fields.has('description')) patch.description = normalizeDescription(p.description) ?? '';
  if (fields.has('version')) {
    check('version', validatePromptVersion(p.version));
    patch.version = normalizePromptVersion(p.version);
  }
  if (fields.has('tags')) {
    p.tags.forEach((t, i) => check(`tags[${i}]`, validateTag(t)));
    patch.tags = normalizeTags(p.tags);
  }
  if (fields.has('annotations')) {
    for (const k of Object.keys(p.annotations)) check('annotations', validateAnnotationKey(k));
    patch.annotations = { ...p.annotations };
  }
  if (fields.has('labels')) {
    const entries = Object.entries(p.labels);
    const why = labelsProblem(entries);
    if (why) violations.push({ field: 'prompt.labels', description: why });
    else patch.labels = labelsOf(entries);
  }
  if (violations.length) throw invalidArgument(violations);
  return { id: p.id, patch, requestId: rid, expectedRevision: expected };
}

/** GetPromptHistory's reply: the logs fill what the prompt and the latest entry leave of the budget. */
function historyReply(h: PromptHistorySnapshot): GetPromptHistoryResponse {
  const reply: GetPromptHistoryResponse = {
    prompt: toPrompt(h.prompt),
    promptHistory: h.messages.map((m) => toChatMessage(fromOpenAiMessage(m))),
    toolCalls: [],
    pluginUsage: [],
    latestHistory: h.latest ? toHistory(h.latest) : undefined,
    revision: h.revision,
    truncated: false,
  };
  let used = GetPromptHistoryResponse.encode(reply).finish().length;
  /** Adds rows while they fit the budget; false once one did not (the reply is then truncated). */
  const fill = <R, M>(rows: R[], sizeOf: (r: R) => number, toMessage: (r: R) => M, into: M[]): boolean => {
    for (const r of rows) {
      const n = sizeOf(r);
      if (used + n > REPLY_BUDGET_BYTES) return false;
      used += n;
      into.push(toMessage(r));
    }
    return true;
  };
  // Both logs get their turn: plugin usage still fills what tool calls left, even after a tool call did not fit.
  const toolCallsFit = fill(h.toolCalls, toolCallSize, toToolCall, reply.toolCalls);
  const pluginUsageFits = fill(h.pluginUsage, pluginUsageSize, toPluginUsage, reply.pluginUsage);
  reply.truncated = !toolCallsFit || !pluginUsageFits;
  return reply;
}

/** A log write's request: the input for the use case and its request id, apart. */
function logWrite<Req, Out extends { requestId?: string | undefined }>(schema: z.ZodType<Out, Partial<Req>>, req: Req, limits: (req: Req) => void): [Omit<Out, 'requestId'>, string | undefined] {
  const { requestId: rid, ...input } = parseRequest(schema, req, limits);
  return [input, rid];
}

/** A log write answers what it wrote (id, revision, time, size), never the content it was sent. */
function wroteEntry<R extends { id: string; revision: number; createdAt: Date }>(row: R, sizeOf: (row: R) => number) {
  return { id: row.id, revision: row.revision, createTime: row.createdAt, sizeBytes: sizeOf(row) };
}

/** A page of one of a prompt's logs. */
function logPage<R, M, Reply>(req: unknown, list: (r: z.infer<typeof listLog>) => Promise<Page<R>>, toMessage: (r: R) => M, reply: (items: M[], nextPageToken: string) => Reply): Promise<Reply> {
  return list(parseInput(listLog, req)).then((page) => pageReply(page, toMessage, reply));
}

export function promptHandlers(prompts: PromptUseCases): Omit<ServiceHandlers<PromptServiceServer>, 'watchPrompt' | 'importPrompt'> {
  return {
    openPrompt: async (req, ctx) => {
      const { requestId: rid, ...r } = parseRequest(openPrompt, req, openLimits);
      const { prompt, created } = await prompts.open(callerOf(ctx), r, rid);
      return { prompt: toPrompt(prompt), created };
    },
    getPrompt: async (req, ctx) => {
      const r = parseRequest(byIdOrKey, req);
      return { prompt: toPrompt(await prompts.get(callerOf(ctx), r)) };
    },
    listPrompts: async (req, ctx) => {
      const { pageSize: size, pageToken, filter: text, orderBy, showTotalSize, ...filter } = parseRequest(listPrompts, req);
      const query = { restrictions: parseFilter(text ?? '', PROMPT_FILTER), order: parseOrderBy(orderBy ?? ''), withTotal: showTotalSize ?? false };
      const page = await prompts.list(callerOf(ctx), filter, { pageSize: size, pageToken }, query);
      return { prompts: page.items.map(toPrompt), nextPageToken: page.nextPageToken, totalSize: page.totalSize };
    },
    updatePrompt: async (req, ctx) => {
      const { id, patch, requestId: rid, expectedRevision: expected } = parseUpdate(req);
      const { prompt, changed } = await prompts.update(callerOf(ctx), id, patch, expected, rid);
      return { prompt: toPrompt(prompt), changed };
    },
    deletePrompt: async (req, ctx) => {
      const r = parseRequest(deletePrompt, req);
      return { revision: await prompts.delete(callerOf(ctx), r.id, r.expectedRevision, r.requestId) };
    },
    appendHistory: async (req, ctx) => {
      const row = await prompts.appendHistory(callerOf(ctx), ...logWrite(appendHistory, req, appendHistoryLimits));
      return { ...wroteEntry(row, historySize), messageCount: row.messages.length };
    },
    listHistory: async (req, ctx) => logPage(req, (r) => prompts.listHistory(callerOf(ctx), r.promptId, r, historySize), toHistory, (history, nextPageToken) => ({ history, nextPageToken })),
    recordToolCall: async (req, ctx) => wroteEntry(await prompts.recordToolCall(callerOf(ctx), ...logWrite(recordToolCall, req, recordToolCallLimits)), toolCallSize),
    listToolCalls: async (req, ctx) => logPage(req, (r) => prompts.listToolCalls(callerOf(ctx), r.promptId, r, toolCallSize), toToolCall, (toolCalls, nextPageToken) => ({ toolCalls, nextPageToken })),
    recordPluginUsage: async (req, ctx) => wroteEntry(await prompts.recordPluginUsage(callerOf(ctx), ...logWrite(recordPluginUsage, req, recordPluginUsageLimits)), pluginUsageSize),
    listPluginUsage: async (req, ctx) => logPage(req, (r) => prompts.listPluginUsage(callerOf(ctx), r.promptId, r, pluginUsageSize), toPluginUsage, (pluginUsage, nextPageToken) => ({ pluginUsage, nextPageToken })),
    getPromptHistory: async (req, ctx) => {
      const r = parseRequest(byIdOrKey, req);
      return historyReply(await prompts.history(callerOf(ctx), r));
    },
    listPlugins: async (req, ctx) => {
      const r = parseRequest(listPlugins, req);
      const page = await prompts.listPlugins(callerOf(ctx), r);
      return { plugins: page.items.map(toPlugin), nextPageToken: page.nextPageToken };
    },
  };
}
