import { AppError, invalidArgument, resourceExhausted } from '../errors.js';
import { PromptRecord as PromptRecordMessage, type ImportPromptRequest, type PromptRecord, type PromptServiceServer } from '../gen/parley/prompt/v1/prompt.js';
import type { ImportLogInput, ImportPromptInput, PromptUseCases } from '../prompt/service.js';
import { parseInput } from '../validate.js';
import { z } from 'zod';
import { callerOf } from './authenticate.js';
import type { Limits } from './limits.js';
import { appendHistory, appendHistoryLimits, openPrompt, parseUpdate, recordPluginUsage, recordPluginUsageLimits, recordToolCall, recordToolCallLimits, toPrompt } from './prompt-handlers.js';
import type { ServiceHandlers } from './rpc.js';
import { Incoming } from './streams.js';
import { labelsField } from './zod-fields.js';

/** ImportPrompt's bounds: log entries, and the records' encoded bytes, per import. */
export const PROMPT_IMPORT_LIMITS = { entries: 10_000, bytes: 64 * 1024 * 1024 };

// The write RPCs' own schemas check each record; they want a prompt id and take none from an import.
const PLACEHOLDER_ID = '00000000-0000-4000-8000-000000000000';

/** Runs one of the write RPCs' checks, its violations named under `path` (e.g. `records[2].history`). */
function under<T>(path: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (!(err instanceof AppError) || err.violations.length === 0) throw err;
    const violations = err.violations.map((v) => ({ ...v, field: `${path}.${v.field.replace(/^prompt\./, '')}` }));
    throw new AppError(err.code, err.message, violations, { reason: err.reason, metadata: err.metadata });
  }
}

const time = z.date({ error: 'is required' });

function header(h: NonNullable<PromptRecord['header']>, path: string): Omit<ImportPromptInput, 'logs'> {
  const times = under(path, () => parseInput(z.object({ createTime: time, updateTime: time }), { createTime: h.createTime, updateTime: h.updateTime }));
  if (times.updateTime < times.createTime) throw invalidArgument(`${path}.update_time`, 'must not be before create_time');
  const opened = under(path, () =>
    parseInput(openPrompt, { sessionKey: h.sessionKey, llmClientId: h.llmClientId, llmClientUrl: '', ipAddress: h.ipAddress, userAgent: h.userAgent, url: h.url, requestId: '', endUserId: h.endUserId }),
  );
  const labels = under(path, () => parseInput(z.object({ labels: labelsField }), { labels: h.labels }).labels);
  if (!opened.sessionKey) throw invalidArgument(`${path}.session_key`, 'is required');
  if (!opened.llmClient || !('id' in opened.llmClient)) throw invalidArgument(`${path}.llm_client_id`, 'is required');
  // UpdatePrompt's checks of the five fields, all of them taken (an empty name or version takes the default).
  const { patch } = under(path, () =>
    parseUpdate({
      prompt: { ...emptyPrompt, id: PLACEHOLDER_ID, name: h.name, description: h.description, version: h.version, annotations: h.annotations, tags: h.tags },
      updateMask: h.name ? ['*'] : ['description', 'version', 'annotations', 'tags'],
      requestId: '',
      expectedRevision: undefined,
    }),
  );
  return {
    sessionKey: opened.sessionKey,
    name: patch.name ?? '',
    description: patch.description ?? '',
    version: patch.version ?? '',
    annotations: patch.annotations ?? {},
    tags: patch.tags ?? [],
    ipAddress: opened.ipAddress,
    userAgent: opened.userAgent,
    url: opened.url,
    endUserId: opened.endUserId ?? '',
    llmClientId: opened.llmClient.id,
    labels,
    createdAt: times.createTime,
    updatedAt: times.updateTime,
  };
}

const emptyPrompt = {
  id: '',
  name: '',
  description: '',
  version: '',
  annotations: {},
  labels: {},
  tags: [],
  sessionKey: '',
  ipAddress: '',
  userAgent: '',
  url: '',
  createTime: undefined,
  updateTime: undefined,
  userProfileId: '',
  llmClientId: '',
  accountId: '',
  revision: 0,
  endUserId: '',
};

function createdAt(path: string, t: Date | undefined): Date {
  return under(path, () => parseInput(z.object({ createTime: time }), { createTime: t })).createTime;
}

/** One log record, checked as AppendHistory, RecordToolCall or RecordPluginUsage check theirs. */
function logEntry(r: PromptRecord, path: string): ImportLogInput | undefined {
  if (r.history) {
    const h = r.history;
    const at = `${path}.history`;
    const v = under(at, () => {
      const req = { promptId: PLACEHOLDER_ID, request: h.request, response: h.response, messages: h.messages, requestId: '' };
      appendHistoryLimits(req);
      return parseInput(appendHistory, req);
    });
    return { table: 'prompt_history', createdAt: createdAt(at, h.createTime), request: v.request, response: v.response, messages: v.messages };
  }
  if (r.toolCall) {
    const c = r.toolCall;
    const at = `${path}.tool_call`;
    const v = under(at, () => {
      const req = { promptId: PLACEHOLDER_ID, pluginId: c.pluginId, functionName: c.functionName, functionArgs: c.functionArgs, request: c.request, response: c.response, requestId: '' };
      recordToolCallLimits(req);
      return parseInput(recordToolCall, req);
    });
    return { table: 'prompt_tool_calls', createdAt: createdAt(at, c.createTime), pluginId: v.pluginId, functionName: v.functionName, functionArgs: v.functionArgs, request: v.request, response: v.response };
  }
  if (r.pluginUsage) {
    const u = r.pluginUsage;
    const at = `${path}.plugin_usage`;
    const v = under(at, () => {
      const req = { promptId: PLACEHOLDER_ID, pluginId: u.pluginId, inputText: u.inputText, requestId: '' };
      recordPluginUsageLimits(req);
      return parseInput(recordPluginUsage, req);
    });
    return { table: 'prompt_plugin_usage', createdAt: createdAt(at, u.createTime), pluginId: v.pluginId, inputText: v.inputText };
  }
  return undefined;
}

const tooLarge = (what: string) =>
  resourceExhausted('IMPORT_SIZE_LIMIT', `the import holds ${what}; a prompt this large cannot be imported`, new Map([['max_entries', String(PROMPT_IMPORT_LIMITS.entries)], ['max_bytes', String(PROMPT_IMPORT_LIMITS.bytes)]]));

export function promptImportHandlers(prompts: PromptUseCases, limits: Limits): Pick<ServiceHandlers<PromptServiceServer>, 'importPrompt'> {
  return {
    importPrompt: async (requests, ctx) => {
      const caller = callerOf(ctx);
      const messages = new Incoming(requests, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
      try {
        let head: Omit<ImportPromptInput, 'logs'> | undefined;
        const logs: ImportLogInput[] = [];
        let bytes = 0;
        let ended = false;
        for (let i = 0; ; i++) {
          const next = await messages.next();
          if (next.done) break;
          const path = `records[${i}]`;
          const r = (next.value as ImportPromptRequest).record;
          if (!r) throw invalidArgument(path, 'is required');
          if (ended) throw invalidArgument(path, 'comes after the trailer, which must be the last record');
          bytes += PromptRecordMessage.encode(r).finish().length;
          if (bytes > PROMPT_IMPORT_LIMITS.bytes) throw tooLarge(`more than ${PROMPT_IMPORT_LIMITS.bytes} bytes`);
          if (i === 0) {
            if (!r.header) throw invalidArgument(`${path}.header`, 'is required: the header is the first record');
            head = header(r.header, `${path}.header`);
            continue;
          }
          if (r.header) throw invalidArgument(`${path}.header`, 'is allowed in the first record only');
          if (r.trailer) {
            const t = r.trailer;
            const counts = { history_count: 'prompt_history', tool_call_count: 'prompt_tool_calls', plugin_usage_count: 'prompt_plugin_usage' } as const;
            const sent = { history_count: t.historyCount, tool_call_count: t.toolCallCount, plugin_usage_count: t.pluginUsageCount };
            for (const [field, table] of Object.entries(counts) as Array<[keyof typeof counts, (typeof counts)[keyof typeof counts]]>) {
              const n = logs.filter((l) => l.table === table).length;
              if (sent[field] !== n) throw invalidArgument(`${path}.trailer.${field}`, `is ${sent[field]} but ${n} came; nothing was written`);
            }
            ended = true;
            continue;
          }
          const entry = logEntry(r, path);
          if (!entry) throw invalidArgument(path, 'must be one of header, history, tool_call, plugin_usage, trailer');
          if (logs.length >= PROMPT_IMPORT_LIMITS.entries) throw tooLarge(`more than ${PROMPT_IMPORT_LIMITS.entries} log entries`);
          logs.push(entry);
        }
        if (!head) throw invalidArgument('records[0].header', 'is required: the stream ended before its first record');
        if (!ended) throw invalidArgument('records.trailer', 'is required: the stream ended before the trailer; nothing was written');
        const prompt = await prompts.importPrompt(caller, { ...head, logs });
        const count = (table: ImportLogInput['table']) => logs.filter((l) => l.table === table).length;
        return { prompt: toPrompt(prompt), historyCount: count('prompt_history'), toolCallCount: count('prompt_tool_calls'), pluginUsageCount: count('prompt_plugin_usage') };
      } finally {
        messages.close();
      }
    },
  };
}
