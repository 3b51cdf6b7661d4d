import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { AdminServiceService } from '../../../src/gen/parley/admin/v1/admin.js';
import { GenieServiceService } from '../../../src/gen/parley/genie/v1/genie.js';
import { PromptServiceService } from '../../../src/gen/parley/prompt/v1/prompt.js';
import { EndUserServiceService } from '../../../src/gen/parley/enduser/v1/enduser.js';
import { loadImage } from '../../../src/transport/reflection.js';

export type Kind = 'unary' | 'server-stream' | 'client-stream' | 'bidi';

/** One RPC of the public services, as the generated service definitions describe it. */
export interface Rpc {
  /** `GenieService/SendEvent`: ListPlugins exists on two services, so the service is part of the name. */
  name: string;
  path: string;
  kind: Kind;
  serialize: (req: never) => Buffer;
  deserialize: (bytes: Buffer) => unknown;
}

export const FUZZED_SERVICES = ['parley.prompt.v1.PromptService', 'parley.genie.v1.GenieService', 'parley.admin.v1.AdminService', 'parley.enduser.v1.EndUserService'];

interface Definition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (req: never) => Buffer;
  responseDeserialize: (bytes: Buffer) => unknown;
}

const kindOf = (clientStreaming: boolean, serverStreaming: boolean): Kind =>
  clientStreaming ? (serverStreaming ? 'bidi' : 'client-stream') : serverStreaming ? 'server-stream' : 'unary';

/** Every RPC of the public services, from the generated definitions, in a stable order. */
export function allRpcs(): Rpc[] {
  const defs = [AdminServiceService, PromptServiceService, GenieServiceService, EndUserServiceService] as unknown as Array<Record<string, Definition>>;
  return defs
    .flatMap((d) => Object.values(d))
    .map((d) => ({
      name: d.path.replace(/^\/parley\.\w+\.v1\./, ''),
      path: d.path,
      kind: kindOf(d.requestStream, d.responseStream),
      serialize: d.requestSerialize,
      deserialize: d.responseDeserialize,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The same list read from the buf image the server's reflection serves: `Service/Method` → kind. */
export function rpcsOfImage(): Map<string, Kind> {
  const out = new Map<string, Kind>();
  for (const file of fromBinary(FileDescriptorSetSchema, loadImage()).file) {
    for (const service of file.service) {
      if (!FUZZED_SERVICES.includes(`${file.package}.${service.name}`)) continue;
      for (const m of service.method) out.set(`${service.name}/${m.name}`, kindOf(m.clientStreaming ?? false, m.serverStreaming ?? false));
    }
  }
  return out;
}
