import { z } from 'zod';
import type { PromptService } from '../prompt/service.js';
import type { PromptRow } from '../storage/prompt-repo.js';
import type { Prompt } from '../gen/parley/prompt/v1/prompt.js';
import { invalidArgument } from '../errors.js';
import { normalizePromptUrl, normalizeSessionKey, normalizeUserAgent, validateIpAddress, validatePromptUrl, validateSessionKey } from '../prompt/rules.js';
import { parseInput } from '../validate.js';
import { callerOf } from './auth.js';
import { optionalString, optionalUuid } from './convert.js';
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

/** Turns one of the pure rules (message or undefined) into a zod refinement. */
const rule = (check: (v: string) => string | undefined) => (v: string, ctx: z.RefinementCtx) => {
  const problem = check(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

export const sessionKey = optionalString.pipe(
  z.string().superRefine(rule(validateSessionKey)).transform(normalizeSessionKey).optional(),
);

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
});

const getPrompt = z.object({ id: optionalUuid, sessionKey });

export function promptHandlers(prompts: PromptService): Record<string, Handler> {
  return {
    openPrompt: unary(async (req, ctx) => {
      const r = parseInput(openPrompt, req);
      const { prompt, created } = await prompts.open(callerOf(ctx), r);
      return { prompt: toPrompt(prompt), created };
    }),
    getPrompt: unary(async (req, ctx) => {
      const r = parseInput(getPrompt, req);
      if (!r.id && !r.sessionKey) throw invalidArgument('id', 'id or session_key is required');
      return { prompt: toPrompt(await prompts.get(callerOf(ctx), r)) };
    }),
  };
}
