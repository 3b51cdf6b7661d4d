import { z } from 'zod';
import type { PromptService } from '../prompt/service.js';
import type { HistoryRow, PluginUsageRow, PromptPatch, PromptRow, ToolCallRow } from '../storage/prompt-repo.js';
import type { OwnedNameRow } from '../storage/admin-repo.js';
import {
  ChatRole,
  type ChatMessage,
  type PluginInfo,
  type Prompt,
  type PromptHistory,
  type PromptPluginUsage,
  type PromptToolCall,
  type UpdatePromptRequest,
} from '../gen/parley/prompt/v1/prompt.js';
import { AppError, invalidArgument, quote, type FieldViolation } from '../errors.js';
import { fromOpenAiMessage, validateChatMessages, type ChatMessageData, type ChatRoleName } from '../prompt/messages.js';
import {
  ANNOTATION_STRING_VALUE_MAX_LENGTH,
  normalizeDescription,
  normalizePromptUrl,
  normalizePromptVersion,
  normalizeSessionKey,
  normalizeTags,
  normalizeUserAgent,
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
import { callerOf } from './auth.js';
import { optionalString, optionalUuid, uuid } from './convert.js';
import { unary, type Handler } from './rpc.js';

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
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
  userProfileId: r.userProfileId,
  llmClientId: r.llmClientId,
  accountId: r.accountId,
});

const roleToProto: Record<ChatRoleName, ChatRole> = {
  system: ChatRole.CHAT_ROLE_SYSTEM,
  user: ChatRole.CHAT_ROLE_USER,
  assistant: ChatRole.CHAT_ROLE_ASSISTANT,
  tool: ChatRole.CHAT_ROLE_TOOL,
  developer: ChatRole.CHAT_ROLE_DEVELOPER,
};
const roleFromProto = new Map<number, ChatRoleName>(Object.entries(roleToProto).map(([k, v]) => [v, k as ChatRoleName]));

export const toChatMessage = (m: ChatMessageData): ChatMessage => ({
  role: m.role ? roleToProto[m.role] : ChatRole.CHAT_ROLE_UNSPECIFIED,
  content: m.content,
  name: m.name,
  toolCalls: m.toolCalls.map((c) => ({ ...c })),
  toolCallId: m.toolCallId,
});

export const toHistory = (r: HistoryRow): PromptHistory => ({
  id: r.id,
  promptId: r.promptId,
  request: r.request,
  response: r.response,
  messages: r.messages.map((m) => toChatMessage(fromOpenAiMessage(m))),
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
});

export const toToolCall = (r: ToolCallRow): PromptToolCall => ({
  id: r.id,
  promptId: r.promptId,
  pluginId: r.pluginId ?? '',
  functionName: r.functionName,
  functionArgs: r.functionArgs,
  request: r.request,
  response: r.response,
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
});

export const toPluginUsage = (r: PluginUsageRow): PromptPluginUsage => ({
  id: r.id,
  promptId: r.promptId,
  pluginId: r.pluginId,
  inputText: r.inputText,
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
});

const toPluginInfo = (r: OwnedNameRow): PluginInfo => ({ id: r.id, name: r.name, description: r.description, createdAt: r.createdAt });

/** Turns one of the pure rules (message or undefined) into a zod refinement. */
const rule = (check: (v: string) => string | undefined) => (v: string, ctx: z.RefinementCtx) => {
  const problem = check(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

/**
 * parseInput with AIP-193 paths: list indexes in brackets (`messages[0].role`), which parseInput writes
 * as dotted segments.
 */
function parse<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  try {
    return parseInput(schema, input);
  } catch (err) {
    if (err instanceof AppError && err.code === 'INVALID_ARGUMENT') {
      throw invalidArgument(err.violations.map((v) => ({ ...v, field: v.field.replace(/\.(\d+)(?=\.|$)/g, '[$1]') })));
    }
    throw err;
  }
}

export const sessionKey = optionalString.pipe(
  z.string().superRefine(rule(validateSessionKey)).transform(normalizeSessionKey).optional(),
);

/** AIP-155: a UUID the client picks per logical request and repeats on every retry of it. */
export const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());

const json = z.record(z.string(), z.unknown()).optional().transform((v) => v ?? {});
const pageSize = z.number().int().min(0, 'must not be negative');
const page = { pageSize, pageToken: optionalString };

const openPrompt = z.object({
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
});

const byIdOrKey = z.object({ id: optionalUuid, sessionKey });

const listPrompts = z
  .object({
    ...page,
    llmClientId: optionalUuid,
    tag: optionalString.pipe(z.string().superRefine(rule(validateTag)).transform((t) => t.trim()).optional()),
    createdAfter: z.date().optional(),
    createdBefore: z.date().optional(),
  })
  .refine((r) => !r.createdAfter || !r.createdBefore || r.createdAfter < r.createdBefore, {
    path: ['createdBefore'],
    message: 'must be later than created_after',
  });

const deletePrompt = z.object({ id: uuid, requestId });

const chatToolCall = z.object({ id: z.string(), type: z.string(), functionName: z.string(), functionArguments: z.string() });
const chatMessage = z.object({
  role: z.number().transform((r) => roleFromProto.get(r)),
  content: z.string(),
  name: z.string(),
  toolCalls: z.array(chatToolCall),
  toolCallId: z.string(),
});

const appendHistory = z.object({ promptId: uuid, request: json, response: json, messages: z.array(chatMessage), requestId });

const recordToolCall = z.object({
  promptId: uuid,
  pluginId: optionalUuid,
  functionName: z.string().superRefine((v, ctx) => {
    if (v !== '') rule(validateToolCallFunctionName)(v, ctx);
  }),
  // Kept verbatim and unbounded: models emit long (and sometimes malformed) JSON arguments.
  functionArgs: z.string(),
  request: json,
  response: json,
  requestId,
});

const recordPluginUsage = z.object({ promptId: uuid, pluginId: uuid, inputText: z.string(), requestId });

const listLog = z.object({ promptId: uuid, ...page });
const listPlugins = z.object(page);

const UPDATABLE = ['name', 'description', 'version', 'annotations', 'tags'] as const;
type Updatable = (typeof UPDATABLE)[number];

/**
 * AIP-134 with one deliberate choice: the mask is required (`*` selects every updatable field), because
 * proto3 sends an empty string for both "clear the description" and "left it alone".
 */
export function parseUpdate(req: UpdatePromptRequest): { id: string; patch: PromptPatch; requestId: string | undefined } {
  const { requestId: rid } = parse(z.object({ requestId }), { requestId: req.requestId });
  const violations: FieldViolation[] = [];
  const id = req.prompt?.id ?? '';
  if (!uuid.safeParse(id).success) violations.push({ field: 'prompt.id', description: 'must be a UUID' });
  const paths = req.updateMask ?? [];
  if (paths.length === 0) violations.push({ field: 'update_mask', description: `is required: list fields among ${UPDATABLE.join(', ')}, or *` });
  const fields = new Set<Updatable>();
  for (const p of paths) {
    if (p === '*') UPDATABLE.forEach((f) => fields.add(f));
    else if ((UPDATABLE as readonly string[]).includes(p)) fields.add(p as Updatable);
    else violations.push({ field: 'update_mask', description: `${quote(p)} is not an updatable field (${UPDATABLE.join(', ')})` });
  }
  const p = req.prompt;
  const patch: PromptPatch = {};
  if (p) {
    const check = (field: string, problem: string | undefined) => problem && violations.push({ field: `prompt.${field}`, description: problem });
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
      for (const [k, v] of Object.entries(p.annotations)) {
        check('annotations', validateAnnotationKey(k));
        if (v.length > ANNOTATION_STRING_VALUE_MAX_LENGTH) {
          check('annotations', `value of "${k}" must be at most ${ANNOTATION_STRING_VALUE_MAX_LENGTH} characters`);
        }
      }
      patch.annotations = { ...p.annotations };
    }
  } else {
    violations.push({ field: 'prompt', description: 'is required' });
  }
  if (violations.length) throw invalidArgument(violations);
  return { id, patch, requestId: rid };
}

const required = (cond: boolean, field: string, description: string) => {
  if (!cond) throw invalidArgument(field, description);
};

export function promptHandlers(prompts: PromptService): Record<string, Handler> {
  return {
    openPrompt: unary(async (req, ctx) => {
      const { requestId: rid, ...r } = parse(openPrompt, req);
      const { prompt, created } = await prompts.open(callerOf(ctx), r, rid);
      return { prompt: toPrompt(prompt), created };
    }),
    getPrompt: unary(async (req, ctx) => {
      const r = parse(byIdOrKey, req);
      required(!!(r.id || r.sessionKey), 'id', 'id or session_key is required');
      return { prompt: toPrompt(await prompts.get(callerOf(ctx), r)) };
    }),
    listPrompts: unary(async (req, ctx) => {
      const { pageSize: size, pageToken, ...filter } = parse(listPrompts, req);
      const page = await prompts.list(callerOf(ctx), filter, { pageSize: size, pageToken });
      return { prompts: page.items.map(toPrompt), nextPageToken: page.nextPageToken };
    }),
    updatePrompt: unary(async (req, ctx) => {
      const { id, patch, requestId: rid } = parseUpdate(req as UpdatePromptRequest);
      return { prompt: toPrompt(await prompts.update(callerOf(ctx), id, patch, rid)) };
    }),
    deletePrompt: unary(async (req, ctx) => {
      const r = parse(deletePrompt, req);
      await prompts.delete(callerOf(ctx), r.id, r.requestId);
      return {};
    }),
    appendHistory: unary(async (req, ctx) => {
      const { requestId: rid, ...r } = parse(appendHistory, req);
      const problems = validateChatMessages(r.messages);
      if (problems.length) throw invalidArgument(problems);
      required(
        r.messages.length > 0 || Object.keys(r.request).length > 0 || Object.keys(r.response).length > 0,
        'messages',
        'an entry needs messages, a request or a response',
      );
      return { history: toHistory(await prompts.appendHistory(callerOf(ctx), r, rid)) };
    }),
    listHistory: unary(async (req, ctx) => {
      const r = parse(listLog, req);
      const page = await prompts.listHistory(callerOf(ctx), r.promptId, r);
      return { history: page.items.map(toHistory), nextPageToken: page.nextPageToken };
    }),
    recordToolCall: unary(async (req, ctx) => {
      const { requestId: rid, ...r } = parse(recordToolCall, req);
      return { toolCall: toToolCall(await prompts.recordToolCall(callerOf(ctx), r, rid)) };
    }),
    listToolCalls: unary(async (req, ctx) => {
      const r = parse(listLog, req);
      const page = await prompts.listToolCalls(callerOf(ctx), r.promptId, r);
      return { toolCalls: page.items.map(toToolCall), nextPageToken: page.nextPageToken };
    }),
    recordPluginUsage: unary(async (req, ctx) => {
      const { requestId: rid, ...r } = parse(recordPluginUsage, req);
      return { pluginUsage: toPluginUsage(await prompts.recordPluginUsage(callerOf(ctx), r, rid)) };
    }),
    listPluginUsage: unary(async (req, ctx) => {
      const r = parse(listLog, req);
      const page = await prompts.listPluginUsage(callerOf(ctx), r.promptId, r);
      return { pluginUsage: page.items.map(toPluginUsage), nextPageToken: page.nextPageToken };
    }),
    getPromptHistory: unary(async (req, ctx) => {
      const r = parse(byIdOrKey, req);
      required(!!(r.id || r.sessionKey), 'id', 'id or session_key is required');
      const h = await prompts.history(callerOf(ctx), r);
      return {
        prompt: toPrompt(h.prompt),
        promptHistory: h.messages.map((m) => toChatMessage(fromOpenAiMessage(m))),
        toolCalls: h.toolCalls.map(toToolCall),
        pluginUsage: h.pluginUsage.map(toPluginUsage),
        latestHistory: h.latest ? toHistory(h.latest) : undefined,
        revision: h.revision,
      };
    }),
    listPlugins: unary(async (req, ctx) => {
      const r = parse(listPlugins, req);
      const page = await prompts.listPlugins(callerOf(ctx), r);
      return { plugins: page.items.map(toPluginInfo), nextPageToken: page.nextPageToken };
    }),
  };
}
