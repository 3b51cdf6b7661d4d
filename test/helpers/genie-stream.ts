import { BadRequest, ErrorInfo } from '../../src/gen/google/rpc/error_details.js';
import type { Status } from '../../src/gen/google/rpc/status.js';
import { Actor, type StreamUtteranceRequest } from '../../src/gen/parley/genie/v1/genie.js';

/** The proto Actor of a stored actor name; '' is ACTOR_UNSPECIFIED. */
export function actor(name: 'user' | 'assistant' | 'system' | '' | string): Actor {
  return ({ user: Actor.ACTOR_USER, assistant: Actor.ACTOR_ASSISTANT, system: Actor.ACTOR_SYSTEM } as Record<string, Actor>)[name] ?? Actor.ACTOR_UNSPECIFIED;
}

/** A StreamUtterance message: everything unset but what is given (actor by name or value). */
export function chunk(c: Partial<Omit<StreamUtteranceRequest, 'actor'>> & { actor?: Actor | string } = {}): StreamUtteranceRequest {
  const { actor: a, ...rest } = c;
  return {
    sessionId: '',
    eventName: '',
    utteranceId: '',
    text: '',
    expectedRevision: undefined,
    lastChunk: false,
    requestId: '',
    ...rest,
    actor: typeof a === 'string' ? actor(a) : (a ?? Actor.ACTOR_UNSPECIFIED),
  };
}

/** The google.rpc.ErrorInfo among a Status's details (as a ChatError carries it), or undefined. */
export function decodeErrorInfo(s: Status): ErrorInfo | undefined {
  const any = s.details.find((d) => d.typeUrl === 'type.googleapis.com/google.rpc.ErrorInfo');
  return any && ErrorInfo.decode(any.value);
}

/** The fields named by the google.rpc.BadRequest among a Status's details. */
export function decodeViolatedFields(s: Status): string[] {
  const any = s.details.find((d) => d.typeUrl === 'type.googleapis.com/google.rpc.BadRequest');
  return any ? BadRequest.decode(any.value).fieldViolations.map((v) => v.field) : [];
}
