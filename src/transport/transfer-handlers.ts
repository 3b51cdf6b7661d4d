import { z } from 'zod';
import {
  SessionRecord as SessionRecordMessage,
  type ExportSessionRequest,
  type GenieServiceServer,
  type ImportSessionRequest,
  type SessionRecord as ProtoRecord,
} from '../gen/parley/genie/v1/genie.js';
import { invalidArgument } from '../errors.js';
import { MAX_SECONDARY_BYTES } from '../genie/service.js';
import { MODEL_TYPE_NAME, STATE_OR_EVENT } from '../genie/model-type.js';
import { DEFAULT_ENCODING } from '../genie/tokens.js';
import { RecordsDigest, type SessionRecord, type SessionTransfer } from '../genie/transfer.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { actor, actorToProto, optionalActor, requestId, secondaryKey, toSession, tokenizerEncoding, userFields, utterance } from './genie-handlers.js';
import type { Limits } from './limits.js';
import type { ServiceHandlers } from './rpc.js';
import { Incoming } from './streams.js';
import { bytesOfAtMost, labelsField, optionalEndUserId, optionalUuid, uuid, type RequestSchema } from './zod-fields.js';

// ---------------------------------------------------------------------------------------------------------
// Domain → proto

/** A record as ExportSession sends it. */
export function toRecord(r: SessionRecord): ProtoRecord {
  switch (r.kind) {
    case 'header': {
      const h = r.header;
      return {
        header: {
          sessionId: h.sessionId,
          modelType: h.modelType,
          schemaVersion: h.schemaVersion,
          state: h.state,
          createTime: h.createTime,
          updateTime: h.updateTime,
          expireTime: h.expireTime,
          endUserId: h.endUserId ?? '',
          forkedFromSessionId: h.forkedFromSessionId ?? '',
          forkedFromRevision: h.forkedFromRevision ?? 0,
          tokenizerEncoding: h.tokenEncoding,
          revision: h.revision,
          revisionCount: h.revisionCount,
          labels: { ...h.labels },
        },
      };
    }
    case 'revision': {
      const v = r.revision;
      return {
        revision: {
          revision: v.revision,
          schemaVersion: v.schemaVersion,
          state: v.state,
          actor: actorToProto(v.actor),
          actorInput: v.actorInput,
          fields: v.fields,
          dialogueLength: v.dialogueLength,
          updateTime: v.updateTime,
          updateMask: v.updateMask,
        },
      };
    }
    case 'element': {
      const e = r.element;
      return {
        element: {
          index: e.index,
          actor: actorToProto(e.actor),
          actorText: e.actorText,
          timestamp: e.timestamp,
          eventName: e.event,
          revision: e.revision,
          tokenCount: e.tokenCount,
          utteranceId: e.utteranceId,
        },
      };
    }
    case 'secondary': {
      const s = r.secondary;
      return { secondary: { key: s.key, value: s.value, revision: s.revision, createTime: s.createTime } };
    }
    case 'trailer':
      return { trailer: { ...r.trailer } };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Proto → domain: each record's fields checked as the write RPCs check theirs.

const required = { error: 'is required' };
const time = z.date(required);
const revisionNumber = z.number().int().min(1, 'must be 1 or more');
const count = z.number().int().nonnegative('must not be negative');

const header = z.object({
  sessionId: uuid,
  modelType: z.string().regex(MODEL_TYPE_NAME, 'must be 1–100 letters, digits, _ . or -, starting with a letter'),
  schemaVersion: z.number().int().min(1, 'must be 1 or more'),
  state: z.string().regex(STATE_OR_EVENT, 'must be 1–100 letters, digits, _ . : or -'),
  createTime: time,
  updateTime: time,
  expireTime: z.date().optional(),
  endUserId: optionalEndUserId,
  forkedFromSessionId: optionalUuid,
  forkedFromRevision: count,
  tokenizerEncoding,
  revision: revisionNumber,
  revisionCount: revisionNumber,
  labels: labelsField,
});

const revision = z.object({
  revision: revisionNumber,
  schemaVersion: z.number().int().min(1, 'must be 1 or more'),
  state: z.string().regex(STATE_OR_EVENT, 'must be 1–100 letters, digits, _ . : or -'),
  actor: optionalActor,
  actorInput: utterance,
  fields: userFields.optional(),
  dialogueLength: count,
  updateTime: time,
  updateMask: z.array(z.string()).max(4, 'must name at most 4 paths'),
});

const element = z.object({
  index: revisionNumber,
  actor,
  actorText: utterance,
  timestamp: time,
  eventName: z.string().refine((e) => e === '' || STATE_OR_EVENT.test(e), 'must be empty or 1–100 letters, digits, _ . : or -'),
  revision: revisionNumber,
  tokenCount: z.number().int(),
  utteranceId: z.string().max(100, 'must be at most 100 characters'),
});

const secondary = z.object({
  key: secondaryKey,
  value: bytesOfAtMost(MAX_SECONDARY_BYTES).transform((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)),
  revision: revisionNumber,
  createTime: time,
});

const trailer = z.object({ revisionCount: count, elementCount: count, secondaryCount: count });

const record = z
  .object({ header: header.optional(), revision: revision.optional(), element: element.optional(), secondary: secondary.optional(), trailer: trailer.optional() }, required)
  .transform((r, ctx): SessionRecord => {
    if (r.header) {
      const { tokenizerEncoding: enc, forkedFromRevision, ...h } = r.header;
      return {
        kind: 'header',
        header: {
          ...h,
          expireTime: h.expireTime,
          endUserId: h.endUserId,
          forkedFromSessionId: h.forkedFromSessionId,
          tokenEncoding: enc ?? DEFAULT_ENCODING,
          forkedFromRevision: forkedFromRevision || undefined,
        },
      };
    }
    if (r.revision) return { kind: 'revision', revision: { ...r.revision, actor: r.revision.actor ?? '', fields: r.revision.fields ?? {} } };
    if (r.element) {
      const { eventName: event, ...e } = r.element;
      return { kind: 'element', element: { ...e, event } };
    }
    if (r.secondary) return { kind: 'secondary', secondary: r.secondary };
    if (r.trailer) return { kind: 'trailer', trailer: r.trailer };
    ctx.issues.push({ code: 'custom', input: r, message: 'must be one of header, revision, element, secondary, trailer' });
    return z.NEVER;
  });

const importOptions = z.object({ keepSessionId: z.boolean(), requestId }) satisfies RequestSchema<ImportSessionRequest>;
const exportSession = z.object({ sessionId: uuid, allRevisions: z.boolean() }) satisfies RequestSchema<ExportSessionRequest>;

// ---------------------------------------------------------------------------------------------------------

export function transferHandlers(transfer: SessionTransfer, limits: Limits): Pick<ServiceHandlers<GenieServiceServer>, 'exportSession' | 'importSession'> {
  return {
    exportSession: async (req, out, ctx) => {
      const r = parseInput(exportSession, req);
      // One record at a time: the next page is read only once the client has taken what came before.
      for await (const rec of transfer.exportSession(callerOf(ctx), r.sessionId, r.allRevisions)) {
        if (ctx.signal.aborted) return;
        await out.send({ record: toRecord(rec) });
      }
    },

    importSession: async (requests, ctx) => {
      const caller = callerOf(ctx);
      const messages = new Incoming(requests, limits.clientStreamIdleMs, ctx.signal, () => limits.idle(caller.accountId, ctx.method));
      try {
        const opening = await messages.next();
        if (opening.done) throw invalidArgument('records[0].header', 'is required: the stream ended before its first message');
        const options = parseInput(importOptions, opening.value);
        const digest = new RecordsDigest();
        const records = (async function* () {
          let message: ImportSessionRequest = opening.value;
          for (let i = 0; ; i++) {
            const path = `records[${i}]`;
            if (i > 0 && (message.keepSessionId || message.requestId)) {
              throw invalidArgument(`${path}.${message.keepSessionId ? 'keep_session_id' : 'request_id'}`, 'is set in the first message only');
            }
            const rec = parseInput(record, message.record, path);
            if (message.record) digest.add(SessionRecordMessage.encode(message.record).finish());
            yield { record: rec, path };
            const next = await messages.next();
            if (next.done) return;
            message = next.value;
          }
        })();
        const r = await transfer.importSession(caller, records, { keepSessionId: options.keepSessionId, requestId: options.requestId, fingerprint: () => digest.digest() });
        return {
          session: toSession({ session: r.session, dialogue: undefined, currentResponse: undefined }),
          revisionCount: r.revisionCount,
          elementCount: r.elementCount,
          secondaryCount: r.secondaryCount,
        };
      } finally {
        messages.close();
      }
    },
  };
}
