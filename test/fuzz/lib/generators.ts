import fc from 'fast-check';
import type { World } from './world.js';
import type { Kind } from './rpcs.js';
import { honest, hostile, rawTime, unicode, type Vocabulary } from './values.js';
import { rawTimestamp, rawVarint, unknownField } from './wire.js';

export type Caller = keyof World['md'];

/** One request message: what the generated encoder takes, bytes appended after encoding, or junk instead. */
export interface Message {
  req: unknown;
  extra: Buffer[];
  /** `truncate` cuts the encoded message short; bytes replace it altogether. */
  mangle?: 'truncate' | Uint8Array;
}

/** What a stream does once its messages are sent (unary calls always wait for their answer). */
export type Action = 'wait' | 'cancel-now' | 'cancel-soon' | 'half-close';

export interface Case {
  caller: Caller;
  messages: Message[];
  action: Action;
  /** How long `cancel-soon` lets the stream run before cancelling it (or less, when it ends first). */
  lingerMs: number;
}

type Req = fc.Arbitrary<Record<string, unknown>>;

/** A request arbitrary and, optionally, the raw extras (timestamps, enum numbers) only bytes can carry. */
interface Spec {
  kind: Kind;
  req: Req;
  extras?: fc.Arbitrary<Buffer>[];
  /** Who calls: AdminService wants the admin token, the others an API key. */
  admin?: boolean;
}

const ts = (path: number[]) => rawTime.map((t) => rawTimestamp(path, t.seconds, t.nanos));

/** The fuzz generator of every RPC, by `Service/Method`. The coverage test fails when one is missing. */
export { honest };

export function generators(w: World, v: Vocabulary = hostile): Record<string, Spec> {
  const { date, enumNumber, huge, int32, int64, json, oneOfOr, pageToken, str, stringMap, struct } = v;
  const self = w.self;
  const peer = w.peer;
  const others = [...peer.promptIds, ...peer.sessionIds, ...w.victimIds];
  const id = (mine: string[]) =>
    v === honest ? (mine.length ? fc.constantFrom(...mine) : fc.uuid()) : fc.oneof(
      { weight: mine.length ? 8 : 0, arbitrary: fc.constantFrom(...mine, '') },
      { weight: 2, arbitrary: fc.constantFrom(...others) },
      { weight: 1, arbitrary: fc.uuid() },
      { weight: 2, arbitrary: str },
    );
  const accounts = id([self.tenant.accountId, peer.tenant.accountId]);
  const profiles = id([self.tenant.userProfileId, peer.tenant.userProfileId]);
  const llmClients = id([self.tenant.llmClientId]);
  const prompts = id(self.promptIds);
  const sessions = id(self.sessionIds);
  const plugins = id(self.pluginIds);
  const requestId = fc.oneof(fc.constant(''), fc.uuid(), str);
  const revision = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 3, arbitrary: int64 });
  const firstPrompt = fc.oneof({ weight: 4, arbitrary: fc.constant(self.promptIds[0]!) }, { weight: 1, arbitrary: prompts });
  const firstSession = fc.oneof({ weight: 4, arbitrary: fc.constant(self.sessionIds[0]!) }, { weight: 1, arbitrary: sessions });
  const event = oneOfOr(['user_input', 'ai_response', '']);
  // The world's own sessions and prompts name no end user, so an erasure never takes them.
  const endUser = oneOfOr(['', 'user-1', 'user-2']);
  // GenieService's messages: the Actor enum (enumNumber adds undefined values), Durations.
  const actorEnum = enumNumber([0, 1, 2, 3]);
  const duration = fc.oneof(fc.constant(undefined), fc.record({ seconds: int64, nanos: int32 }));
  const mask = (valid: string[]) => fc.oneof(fc.constant(undefined), fc.array(oneOfOr([...valid, '__proto__', 'fields.__proto__.x', 'a..b', '*']), { maxLength: 4 }));
  // A content part: one kind set (as a oneof decodes), several (a hand-made encoding may send them), or none.
  const noPart = { text: undefined, imageUrl: undefined, inputAudio: undefined, file: undefined, refusal: undefined };
  const contentPart = fc.oneof(
    str.map((text) => ({ ...noPart, text })),
    fc.record({ url: oneOfOr(['https://example.com/a.png', 'data:image/png;base64,AAAA', '']), detail: oneOfOr(['', 'auto', 'low', 'high']) }).map((imageUrl) => ({ ...noPart, imageUrl })),
    fc.record({ data: oneOfOr(['UklGRg==', '']), format: oneOfOr(['wav', 'mp3', '']) }).map((inputAudio) => ({ ...noPart, inputAudio })),
    fc.record({ fileData: oneOfOr(['', 'JVBERi0=']), fileId: oneOfOr(['', 'file-1']), filename: oneOfOr(['', 'a.pdf']) }).map((file) => ({ ...noPart, file })),
    str.map((refusal) => ({ ...noPart, refusal })),
    fc.constant(noPart),
    fc.record({ text: str, refusal: str }).map((both) => ({ ...noPart, ...both })),
  );
  const chatMessage = fc.record({
    role: enumNumber([0, 1, 2, 3, 4, 5, 6, 7]),
    content: str,
    name: oneOfOr(['']),
    toolCalls: fc.array(fc.record({ id: str, callType: oneOfOr(['function']), functionName: str, functionArguments: str }), { maxLength: 2 }),
    toolCallId: oneOfOr(['']),
    contentParts: fc.array(contentPart, { maxLength: 3 }),
    contentShape: enumNumber([0, 1, 2]),
    refusal: oneOfOr(['']),
    audio: fc.option(fc.record({ id: oneOfOr(['audio_1']) }), { nil: undefined }),
  });
  const machine = fc.oneof(
    fc.constant({
      states: ['awaiting_question', 'awaiting_answer'],
      initialState: 'awaiting_question',
      transitions: [
        { fromState: 'awaiting_question', eventName: 'user_input', toState: 'awaiting_answer', actor: 1 },
        { fromState: 'awaiting_answer', eventName: 'ai_response', toState: 'awaiting_question', actor: 2 },
      ],
    }),
    fc.record({
      states: fc.array(oneOfOr(['a', 'b']), { maxLength: 4 }),
      initialState: oneOfOr(['a']),
      transitions: fc.array(fc.record({ fromState: oneOfOr(['a', 'b']), eventName: oneOfOr(['go']), toState: oneOfOr(['a', 'b']), actor: actorEnum }), { maxLength: 3 }),
    }),
  );
  const schema = fc.oneof(
    fc.constant(undefined),
    fc.constant({ type: 'object', properties: { topic: { type: 'string', minLength: 1 } }, required: ['topic'] }),
    fc.constantFrom<Record<string, unknown>>(
      { type: 'object', properties: { s: { type: 'string', pattern: '^(a+)+$' } } },
      { $ref: '#' },
      { type: 'object', properties: { n: { type: 'number', maximum: Number.POSITIVE_INFINITY } } },
      { $ref: 'http://example.com/schema' },
      { type: 'nonsense' },
    ),
    struct,
  );
  const upgrade = fc.record({
    fromVersion: int32,
    renameField: fc.option(fc.record({ oldName: str, newName: str }), { nil: undefined }),
    dropField: fc.constant(undefined),
    addField: fc.option(fc.record({ name: str, defaultValue: json }), { nil: undefined }),
    mapStates: fc.option(fc.record({ mapping: stringMap }), { nil: undefined }),
  });
  // Labels: good keys, keys the bounds refuse (upper case, reserved, too long) and arbitrary values.
  const labels = fc.oneof(
    { weight: 2, arbitrary: fc.constant({}) },
    { weight: 3, arbitrary: fc.dictionary(fc.constantFrom('team', 'tier', 'x-y', 'Bad', '9lives', 'constructor', 'k'.repeat(64)), str, { maxKeys: 7 }) },
  );
  // Filters: each accepted form, each refused one, and arbitrary text.
  const filter = fc.oneof(
    { weight: 2, arbitrary: fc.constant('') },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        'labels.team = "a"',
        'labels.team:*',
        'state = "start" AND model_type = "qa"',
        'end_user_id = "u1"',
        'create_time >= "2020-01-01T00:00:00Z" AND update_time < "2999-01-01T00:00:00Z"',
        'labels.team = "a" OR labels.team = "b"',
        'NOT labels.team:*',
        '-labels.team:*',
        'state != "x"',
        'fields.topic = "x"',
        'actor_input = "x"',
        'llm_client_id = "x"',
        'labels.team = "unterminated',
        'labels.team = "a" AND '.repeat(20) + 'labels.team = "a"',
      ),
    },
    { weight: 1, arbitrary: str },
  );
  const orderBy = fc.constantFrom('', 'create_time', 'create_time desc', 'update_time', 'update_time desc', 'update_time up', 'seq');
  const session = fc.record({
    sessionId: sessions,
    modelType: oneOfOr(['', 'qa']),
    schemaVersion: int32,
    state: oneOfOr(['']),
    dialogue: fc.constant([]),
    actor: actorEnum,
    actorInput: str,
    fields: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: struct }),
    currentResponse: fc.constant(undefined),
    revision: revision,
    createTime: date,
    updateTime: fc.constant(undefined),
    forkedFromSessionId: oneOfOr(['']),
    forkedFromRevision: fc.constant(0),
    expireTime: date,
    dialogueLength: fc.constant(0),
    dialogueTokenCount: fc.constant(0),
    endUserId: endUser,
    labels,
  });
  // The streaming RPCs' own shapes: optional revisions (the Actor enum is above).
  const optionalRevision = fc.option(revision, { nil: undefined });
  const utterance = fc.record({
    sessionId: firstSession,
    actor: actorEnum,
    eventName: oneOfOr(['', 'ai_response', 'user_input']),
    utteranceId: oneOfOr(['', 'u1']),
    text: fc.oneof({ weight: 6, arbitrary: unicode(30) }, { weight: 1, arbitrary: str }),
    expectedRevision: optionalRevision,
    lastChunk: fc.boolean(),
    requestId: fc.oneof(fc.constant(''), fc.uuid(), str),
  });
  // Where a watch starts: delta positions (hostile ids included) and a snapshot's rendering.
  const afterDeltas = fc.array(fc.record({ utteranceId: fc.oneof(oneOfOr(['', 'u1', '__proto__', 'constructor']), str), chunkIndex: int32 }), { maxLength: 20 });
  const budget = fc.option(int32, { nil: undefined });
  const encoding = oneOfOr(['', 'o200k_base', 'cl100k_base', 'gpt2']);
  const snapshot = fc.option(fc.record({ format: enumNumber([0, 1, 2, 3, 4]), tokenBudget: budget, tokenizerEncoding: encoding }), { nil: undefined });
  const chat = fc.oneof(
    fc.record({ requestId, open: fc.record({ sessionId: firstSession, afterRevision: optionalRevision, afterDeltas, snapshot }) }),
    fc.record({ requestId, sendEvent: fc.record({ eventName: event, actor: actorEnum, actorInput: str, expectedRevision: optionalRevision }) }),
    fc.record({ requestId, appendDialogue: fc.record({ actor: actorEnum, actorText: str, expectedRevision: optionalRevision }) }),
    fc.record({ requestId }),
  );
  // Updates and deletes only ever name spare resources (or made-up ids): never the fuzz's or the victim's own.
  const spareOr = (spareId: string) => fc.oneof({ weight: 4, arbitrary: fc.constant(spareId) }, { weight: 1, arbitrary: fc.uuid() }, { weight: 1, arbitrary: str });
  const optRevision = fc.oneof(fc.constant(undefined), int64);
  // ImportPrompt: one record per message, in any order (an honest import is header … trailer; the hostile
  // ones break the order, the counts, the keys, the ids and the sizes).
  const newSessionKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
  const promptRecord = fc.oneof(
    fc.record({
      header: fc.record({
        sessionKey: fc.oneof(newSessionKey, oneOfOr(self.sessionKeys)),
        name: oneOfOr(['', 'imported']),
        description: str,
        version: oneOfOr(['', '1.0.0']),
        annotations: stringMap,
        tags: fc.array(oneOfOr(['vip', 'eu']), { maxLength: 3 }),
        ipAddress: oneOfOr(['', '192.0.2.1', '::1']),
        userAgent: str,
        url: oneOfOr(['', 'https://example.com/chat']),
        createTime: date,
        updateTime: date,
        endUserId: endUser,
        llmClientId: llmClients,
      }),
    }),
    fc.record({ history: fc.record({ request: struct, response: struct, messages: fc.array(chatMessage, { maxLength: 3 }), createTime: date }) }),
    fc.record({
      toolCall: fc.record({ pluginId: fc.oneof(plugins, fc.constant('')), functionName: oneOfOr(['get_weather']), functionArgs: oneOfOr(['{}']), request: struct, response: struct, createTime: date }),
    }),
    fc.record({ pluginUsage: fc.record({ pluginId: plugins, inputText: str, createTime: date }) }),
    fc.record({ trailer: fc.record({ historyCount: int64, toolCallCount: int64, pluginUsageCount: int64 }) }),
    fc.constant({}),
  );
  const importPromptMessage = fc.record({ record: fc.oneof(promptRecord, fc.constant(undefined)) });
  // ImportSession: one record per message, in any order (an honest import is header … trailer; the
  // hostile ones break the order, the counts, the ids and the sizes).
  const sessionRecord = fc.oneof(
    fc.record({
      header: fc.record({
        sessionId: fc.oneof(sessions, fc.uuid()),
        modelType: oneOfOr(w.modelTypes),
        schemaVersion: int32,
        state: oneOfOr(['awaiting_question', 'awaiting_answer', 'open']),
        createTime: date,
        updateTime: date,
        expireTime: date,
        endUserId: endUser,
        forkedFromSessionId: oneOfOr(['']),
        forkedFromRevision: int64,
        tokenizerEncoding: encoding,
        revision: int64,
        revisionCount: int64,
      }),
    }),
    fc.record({
      revision: fc.record({
        revision: int64,
        schemaVersion: int32,
        state: oneOfOr(['awaiting_question', 'awaiting_answer']),
        actor: actorEnum,
        actorInput: str,
        fields: struct,
        dialogueLength: int32,
        updateTime: date,
        updateMask: fc.array(oneOfOr(['actor', 'fields', 'expire_time']), { maxLength: 5 }),
      }),
    }),
    fc.record({
      element: fc.record({ index: int32, actor: actorEnum, actorText: str, timestamp: date, eventName: event, revision: int64, tokenCount: int32, utteranceId: oneOfOr(['']) }),
    }),
    fc.record({
      secondary: fc.record({
        key: oneOfOr(['doc', 'k1']),
        value: fc.oneof({ weight: 6, arbitrary: fc.uint8Array({ maxLength: 64 }) }, { weight: 1, arbitrary: huge.map((h) => Buffer.from(h)) }),
        revision: int64,
        createTime: date,
      }),
    }),
    fc.record({ trailer: fc.record({ revisionCount: int64, elementCount: int32, secondaryCount: int32 }) }),
    fc.constant({}),
  );
  const importMessage = fc.record({ record: fc.oneof(sessionRecord, fc.constant(undefined)), keepSessionId: fc.boolean(), requestId });
  const page = (list: keyof World['tokens']) => ({ pageSize: int32, pageToken: pageToken(w.tokens[list]) });

  return {
    // AdminService
    'AdminService/CreateAccount': { kind: 'unary', admin: true, req: fc.record({ accountNumber: oneOfOr(['', 'ACC-1', self.tenant.accountNumber]), displayName: str, requestId }) },
    'AdminService/GetAccount': { kind: 'unary', admin: true, req: fc.oneof(fc.record({ id: accounts }), fc.record({ accountNumber: oneOfOr(['', self.tenant.accountNumber]) }), fc.constant({})) },
    'AdminService/ListAccounts': { kind: 'unary', admin: true, req: fc.record({ pageSize: int32, pageToken: pageToken([]) }) },
    'AdminService/UpdateAccount': {
      kind: 'unary',
      admin: true,
      req: fc.record({ account: fc.record({ id: spareOr(w.self.spare.accountId), displayName: str, accountNumber: oneOfOr(['']), revision: fc.constant(0) }), updateMask: mask(['display_name', 'account_number', 'revision']), expectedRevision: optRevision, requestId }),
    },
    'AdminService/DeleteAccount': { kind: 'unary', admin: true, req: fc.record({ id: spareOr(w.peer.spare.accountId), expectedRevision: optRevision, requestId }) },
    'AdminService/CreateUserProfile': { kind: 'unary', admin: true, req: fc.record({ accountId: accounts, username: oneOfOr(['bob']), email: oneOfOr(['bob@example.com']), requestId }) },
    'AdminService/GetUserProfile': { kind: 'unary', admin: true, req: fc.record({ id: profiles }) },
    'AdminService/ListUserProfiles': { kind: 'unary', admin: true, req: fc.record({ accountId: accounts, pageSize: int32, pageToken: pageToken([]) }) },
    'AdminService/UpdateUserProfile': {
      kind: 'unary',
      admin: true,
      req: fc.record({ userProfile: fc.record({ id: spareOr(w.self.spare.userProfileId), accountId: fc.constant(''), username: oneOfOr(['carol', 'spare']), email: str, revision: fc.constant(0) }), updateMask: mask(['username', 'email', 'account_id']), expectedRevision: optRevision, requestId }),
    },
    'AdminService/DeleteUserProfile': { kind: 'unary', admin: true, req: fc.record({ id: spareOr(w.self.spare.userProfileId), expectedRevision: optRevision, requestId }) },
    'AdminService/CreateLlmClient': { kind: 'unary', admin: true, req: fc.record({ accountId: accounts, name: oneOfOr(['gpt', 'hr']), description: str, requestId }) },
    'AdminService/GetLlmClient': { kind: 'unary', admin: true, req: fc.record({ id: llmClients }) },
    'AdminService/ListLlmClients': { kind: 'unary', admin: true, req: fc.record({ accountId: accounts, pageSize: int32, pageToken: pageToken([]) }) },
    'AdminService/UpdateLlmClient': {
      kind: 'unary',
      admin: true,
      req: fc.record({ llmClient: fc.record({ id: spareOr(w.self.spare.llmClientId), accountId: fc.constant(''), name: oneOfOr(['spare', 'other']), description: str, revision: fc.constant(0) }), updateMask: mask(['name', 'description', 'id']), expectedRevision: optRevision, requestId }),
    },
    'AdminService/DeleteLlmClient': { kind: 'unary', admin: true, req: fc.record({ id: spareOr(w.self.spare.llmClientId), expectedRevision: optRevision, requestId }) },
    'AdminService/CreateApiKey': { kind: 'unary', admin: true, req: fc.record({ userProfileId: profiles, description: str, requestId }) },
    'AdminService/GetApiKey': { kind: 'unary', admin: true, req: fc.record({ id: fc.oneof(fc.constantFrom(self.tenant.apiKeyId, ...self.spareKeyIds), fc.uuid(), str) }) },
    'AdminService/ListApiKeys': {
      kind: 'unary',
      admin: true,
      req: fc.record({ accountId: fc.oneof(fc.constant(''), accounts), userProfileId: fc.oneof(fc.constant(''), profiles), pageSize: int32, pageToken: pageToken([]) }),
    },
    'AdminService/UpdateApiKey': {
      kind: 'unary',
      admin: true,
      req: fc.record({ apiKey: fc.record({ id: fc.oneof(fc.constantFrom(...self.spareKeyIds), fc.uuid(), str), userProfileId: fc.constant(''), accountId: fc.constant(''), description: str, keyPrefix: fc.constant(''), revision: fc.constant(0) }), updateMask: mask(['description', 'key_prefix']), expectedRevision: optRevision, requestId }),
    },
    // Only spare keys: revoking or deleting the keys the fuzz or the victim call with is what an admin may do.
    'AdminService/RevokeApiKey': { kind: 'unary', admin: true, req: fc.record({ id: fc.oneof(fc.constantFrom(...self.spareKeyIds, ...peer.spareKeyIds), fc.uuid(), str), expectedRevision: optRevision, requestId }) },
    'AdminService/DeleteApiKey': { kind: 'unary', admin: true, req: fc.record({ id: fc.oneof(fc.constantFrom(...self.spareKeyIds, ...peer.spareKeyIds), fc.uuid(), str), expectedRevision: optRevision, requestId }) },
    'AdminService/CreatePlugin': { kind: 'unary', admin: true, req: fc.record({ accountId: accounts, name: oneOfOr(['weather', 'p1', 'zeta']), description: str, requestId }) },
    'AdminService/GetPlugin': { kind: 'unary', admin: true, req: fc.record({ id: plugins }) },
    'AdminService/ListPlugins': { kind: 'unary', admin: true, req: fc.record({ accountId: fc.oneof({ weight: 4, arbitrary: fc.constant(self.tenant.accountId) }, { weight: 1, arbitrary: accounts }), ...page('adminPlugins') }) },
    'AdminService/UpdatePlugin': {
      kind: 'unary',
      admin: true,
      req: fc.record({ plugin: fc.record({ id: spareOr(w.self.spare.pluginId), accountId: fc.constant(''), name: oneOfOr(['spare', 'other']), description: str, revision: fc.constant(0) }), updateMask: mask(['name', 'description', 'create_time']), expectedRevision: optRevision, requestId }),
    },
    'AdminService/DeletePlugin': { kind: 'unary', admin: true, req: fc.record({ id: spareOr(w.peer.spare.pluginId), expectedRevision: optRevision, requestId }) },
    'AdminService/PurgeExpiredData': {
      kind: 'unary',
      admin: true,
      // Purging is global: an operator may purge every account's idle data. So a valid cutoff is at least an hour
      // (the world and the victim are younger than that); the hostile ones are out of range.
      req: fc.record({
        olderThan: fc.option(
          fc.record({
            seconds: fc.constantFrom<number | string>(3600, 86_400 * 30, 100 * 365 * 86_400, 100 * 365 * 86_400 + 1, -1, 2 ** 53 + 1, '9223372036854775807', '-9223372036854775808'),
            nanos: fc.constantFrom(0, 999_999_999, -1, 1_000_000_000, 2 ** 31 - 1),
          }),
          { nil: undefined },
        ),
        batchSize: int32,
      }),
    },

    // EndUserService
    'EndUserService/EraseEndUser': { kind: 'unary', req: fc.record({ endUserId: endUser }) },

    // PromptService
    'PromptService/OpenPrompt': {
      kind: 'unary',
      req: fc.record({
        sessionKey: oneOfOr(['', ...self.sessionKeys, ...peer.sessionKeys]),
        llmClientId: fc.oneof({ weight: 3, arbitrary: llmClients }, { weight: 1, arbitrary: fc.constant(peer.tenant.llmClientId) }),
        llmClientUrl: oneOfOr(['', 'https://llm.example.com']),
        ipAddress: oneOfOr(['', '10.0.0.1', '::1', '999.1.1.1']),
        userAgent: str,
        url: oneOfOr(['', 'https://example.com/chat']),
        requestId,
        endUserId: endUser,
        labels,
      }),
    },
    // The keys are a oneof: the generator sends one, the other, or both (a binary client may; the last wins on
    // the wire for most decoders, and parley takes the session key then).
    'PromptService/GetPrompt': { kind: 'unary', req: fc.record({ id: fc.oneof(prompts, fc.constant('')), sessionKey: oneOfOr(['', ...self.sessionKeys]) }) },
    'PromptService/ListPrompts': {
      kind: 'unary',
      req: fc.record({
        ...page('prompts'),
        llmClientId: oneOfOr(['', self.tenant.llmClientId]),
        tag: oneOfOr(['']),
        createdAfter: fc.oneof(fc.constant(undefined), date),
        createdBefore: fc.oneof(fc.constant(undefined), date),
        endUserId: endUser,
        filter: fc.oneof(filter, fc.constantFrom('llm_client_id = "x"', `llm_client_id = "${self.tenant.llmClientId}"`, 'state = "x"')),
        orderBy,
        showTotalSize: fc.boolean(),
      }),
      extras: [ts([5]), ts([6])],
    },
    'PromptService/UpdatePrompt': {
      kind: 'unary',
      req: fc.record({
        prompt: fc.record({
          id: prompts,
          name: str,
          description: str,
          version: oneOfOr(['1.0']),
          annotations: stringMap,
          tags: fc.array(oneOfOr(['a', 'b']), { maxLength: 5 }),
          sessionKey: oneOfOr(['']),
          ipAddress: oneOfOr(['']),
          userAgent: oneOfOr(['']),
          url: oneOfOr(['']),
          createTime: date,
          updateTime: fc.constant(undefined),
          userProfileId: oneOfOr(['']),
          llmClientId: oneOfOr(['']),
          accountId: oneOfOr(['']),
          revision,
          labels,
        }),
        updateMask: mask(['name', 'description', 'version', 'annotations', 'tags', 'annotations.k', 'account_id', 'id', 'revision', 'labels']),
        requestId,
        expectedRevision: fc.oneof(fc.constant(undefined), revision),
      }),
      extras: [ts([1, 11])],
    },
    'PromptService/DeletePrompt': {
      kind: 'unary',
      req: fc.record({ id: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...self.promptIds.slice(1)) }, { weight: 4, arbitrary: id([]) }), requestId, expectedRevision: fc.oneof(fc.constant(undefined), revision) }),
    },
    'PromptService/AppendHistory': {
      kind: 'unary',
      req: fc.record({ promptId: prompts, request: struct, response: struct, messages: fc.array(chatMessage, { maxLength: 3 }), requestId }),
      extras: [enumNumber([77, -1]).map((n) => rawVarint([4, 1], n))],
    },
    'PromptService/ListHistory': { kind: 'unary', req: fc.record({ promptId: firstPrompt, ...page('history') }) },
    'PromptService/RecordToolCall': {
      kind: 'unary',
      req: fc.record({ promptId: prompts, pluginId: fc.oneof(plugins, fc.constant('')), functionName: oneOfOr(['get_weather']), functionArgs: oneOfOr(['{}', '{"city":"Oslo"}']), request: struct, response: struct, requestId }),
    },
    'PromptService/ListToolCalls': { kind: 'unary', req: fc.record({ promptId: firstPrompt, ...page('toolCalls') }) },
    'PromptService/RecordPluginUsage': { kind: 'unary', req: fc.record({ promptId: prompts, pluginId: plugins, inputText: str, requestId }) },
    'PromptService/ListPluginUsage': { kind: 'unary', req: fc.record({ promptId: firstPrompt, ...page('pluginUsage') }) },
    'PromptService/GetPromptHistory': { kind: 'unary', req: fc.record({ id: fc.oneof(prompts, fc.constant('')), sessionKey: oneOfOr(['', ...self.sessionKeys]) }) },
    'PromptService/ListPlugins': { kind: 'unary', req: fc.record(page('plugins')) },
    'PromptService/WatchPrompt': { kind: 'server-stream', req: fc.record({ promptId: prompts, afterRevision: revision }) },
    'PromptService/ImportPrompt': { kind: 'client-stream', req: importPromptMessage },

    // GenieService
    'GenieService/RegisterModelType': {
      kind: 'unary',
      req: fc.record({
        modelType: fc.record({
          name: oneOfOr(['qa', 'free', 'm1']),
          schemaVersion: int32,
          jsonSchema: schema,
          stateMachine: fc.oneof(machine, fc.constant(undefined)),
          upgrades: fc.array(upgrade, { maxLength: 2 }),
          cacheTtl: duration,
          createTime: date,
          sessionTtl: duration,
          tokenizerEncoding: encoding,
        }),
        requestId,
      }),
    },
    'GenieService/GetModelType': { kind: 'unary', req: fc.record({ name: oneOfOr(w.modelTypes), schemaVersion: fc.oneof(fc.constant(undefined), int32) }) },
    'GenieService/ListModelTypes': { kind: 'unary', req: fc.record({ name: oneOfOr(['']), ...page('modelTypes') }) },
    'GenieService/CreateSession': { kind: 'unary', req: fc.record({ modelType: oneOfOr(w.modelTypes), fields: struct, expireTime: date, requestId, endUserId: endUser, labels }), extras: [ts([3])] },
    'GenieService/GetSession': { kind: 'unary', req: fc.record({ sessionId: sessions, revision: optRevision }) },
    'GenieService/UpdateSession': {
      kind: 'unary',
      req: fc.record({
        session,
        updateMask: mask(['fields', 'fields.topic', 'actor', 'actor_input', 'expire_time', 'state', 'revision', 'labels', 'labels.team']),
        expectedRevision: optRevision,
        fieldsPatch: fc.oneof(fc.constant(undefined), struct),
        requestId,
      }),
      extras: [ts([1, 15])],
    },
    'GenieService/DeleteSession': { kind: 'unary', req: fc.record({ sessionId: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...self.sessionIds.slice(1)) }, { weight: 4, arbitrary: id([]) }), expectedRevision: optRevision, requestId }) },
    'GenieService/ListSessions': { kind: 'unary', req: fc.record({ modelType: oneOfOr(['']), state: oneOfOr(['']), ...page('sessions'), endUserId: endUser, filter, orderBy, showTotalSize: fc.boolean() }) },
    'GenieService/ForkSession': { kind: 'unary', req: fc.record({ sessionId: sessions, revision: optRevision, requestId }) },
    'GenieService/SendEvent': { kind: 'unary', req: fc.record({ sessionId: sessions, eventName: event, actor: actorEnum, actorInput: str, expectedRevision: optRevision, requestId }) },
    'GenieService/AppendDialogue': { kind: 'unary', req: fc.record({ sessionId: sessions, actor: actorEnum, actorText: str, expectedRevision: optRevision, requestId }) },
    'GenieService/ListDialogue': { kind: 'unary', req: fc.record({ sessionId: firstSession, revision: optRevision, ...page('dialogue') }) },
    'GenieService/FormatDialogue': {
      kind: 'unary',
      req: fc.record({ sessionId: sessions, format: enumNumber([0, 1, 2, 3, 4]), revision: optRevision, tokenBudget: budget, tokenizerEncoding: encoding }),
    },
    'GenieService/PutSecondary': {
      kind: 'unary',
      req: fc.record({
        sessionId: sessions,
        key: oneOfOr(['doc', 'k1', 'k2']),
        value: fc.oneof({ weight: 6, arbitrary: fc.uint8Array({ maxLength: 64 }) }, { weight: 1, arbitrary: huge.map((h) => Buffer.from(h)) }),
        expectedRevision: optRevision,
        requestId,
      }),
    },
    'GenieService/GetSecondary': { kind: 'unary', req: fc.record({ sessionId: sessions, key: oneOfOr(self.secondaryKeys) }) },
    'GenieService/ListSecondaryKeys': { kind: 'unary', req: fc.record({ sessionId: firstSession, ...page('secondaryKeys') }) },
    'GenieService/WatchSession': {
      kind: 'server-stream',
      req: fc.record({ sessionId: sessions, afterRevision: fc.option(revision, { nil: undefined }), afterDeltas, snapshot }),
    },
    'GenieService/StreamUtterance': { kind: 'client-stream', req: utterance },
    'GenieService/Chat': { kind: 'bidi', req: chat },
    'GenieService/ExportSession': { kind: 'server-stream', req: fc.record({ sessionId: sessions, allRevisions: fc.boolean() }) },
    'GenieService/ImportSession': { kind: 'client-stream', req: importMessage },
  };
}

const junk = fc.oneof(fc.constant<'truncate'>('truncate'), fc.uint8Array({ minLength: 1, maxLength: 64 }));

function message(spec: Spec): fc.Arbitrary<Message> {
  const extra = fc.array(fc.oneof(...(spec.extras ?? []), fc.uint8Array({ maxLength: 16 }).map(unknownField)), { maxLength: 1 });
  return fc.record({
    req: spec.req,
    extra: fc.oneof({ weight: 5, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: extra }),
    mangle: fc.oneof({ weight: 25, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: junk }),
  }, { requiredKeys: ['req', 'extra'] }) as fc.Arbitrary<Message>;
}

/**
 * A whole call: who makes it, its messages and what a stream does. Two in five are honest (the caller's
 * own credentials, values a correct client sends) so that the handlers' deep paths are reached; the rest
 * are hostile.
 */
export function caseOf(spec: Spec, honestSpec?: Spec): fc.Arbitrary<Case> {
  if (!honestSpec) return hostileCase(spec);
  const streaming = spec.kind === 'client-stream' || spec.kind === 'bidi';
  const plain = fc.record({
    caller: fc.constant<Caller>(spec.admin ? 'admin' : 'self'),
    messages: streaming ? fc.array(honestSpec.req.map((req) => ({ req, extra: [] })), { minLength: 1, maxLength: 4 }) : honestSpec.req.map((req) => [{ req, extra: [] }]),
    action: spec.kind === 'unary' ? fc.constant<Action>('wait') : fc.constantFrom<Action>('cancel-soon', ...(streaming ? (['half-close'] as const) : ([] as const))),
    lingerMs: fc.integer({ min: 0, max: 300 }),
  });
  return fc.oneof({ weight: 3, arbitrary: hostileCase(spec) }, { weight: 2, arbitrary: plain });
}

function hostileCase(spec: Spec): fc.Arbitrary<Case> {
  const caller = spec.admin
    ? fc.oneof({ weight: 17, arbitrary: fc.constant<Caller>('admin') }, { weight: 1, arbitrary: fc.constantFrom<Caller>('self', 'none', 'bogus') })
    : fc.oneof({ weight: 16, arbitrary: fc.constant<Caller>('self') }, { weight: 2, arbitrary: fc.constant<Caller>('peer') }, { weight: 1, arbitrary: fc.constantFrom<Caller>('admin', 'none', 'bogus') });
  const streaming = spec.kind === 'client-stream' || spec.kind === 'bidi';
  return fc.record({
    caller,
    messages: streaming ? fc.array(message(spec), { maxLength: 5 }) : message(spec).map((m) => [m]),
    action: spec.kind === 'unary' ? fc.constant<Action>('wait') : fc.constantFrom<Action>('cancel-now', 'cancel-soon', ...(streaming ? (['half-close', 'half-close'] as const) : ([] as const))),
    lingerMs: fc.integer({ min: 0, max: 300 }),
  });
}
