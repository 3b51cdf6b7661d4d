import { z } from 'zod';
import type { EndUserErasure } from '../enduser/erasure.js';
import type { EndUserServiceServer, EraseEndUserRequest } from '../gen/parley/enduser/v1/enduser.js';
import { parseInput } from '../validate.js';
import { callerOf } from './authenticate.js';
import { endUserId, type RequestSchema } from './zod-fields.js';
import type { ServiceHandlers } from './rpc.js';

const eraseEndUser = z.object({ endUserId }) satisfies RequestSchema<EraseEndUserRequest>;

export function endUserHandlers(erasure: EndUserErasure): ServiceHandlers<EndUserServiceServer> {
  return {
    eraseEndUser: async (req, ctx) => {
      const r = parseInput(eraseEndUser, req);
      return erasure.erase(callerOf(ctx), r.endUserId);
    },
  };
}
