import { create, createFileRegistry, fromBinary, type DescField, type DescMessage, type DescService } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { ServerReflectionClient, type ServerReflectionResponse } from '../gen/grpc/reflection/v1/reflection.js';

/**
 * `parley describe`: what grpcurl's `describe` does, over server reflection, for machines without grpcurl
 * (`buf curl` can list and invoke but not describe). Works against any server with reflection v1.
 */
export async function describe(address: string, symbol: string | undefined, creds: ChannelCredentials = credentials.createInsecure()): Promise<string> {
  const client = new ServerReflectionClient(address, creds);
  try {
    const ask = (req: { listServices?: string; fileContainingSymbol?: string }) =>
      new Promise<ServerReflectionResponse>((resolve, reject) => {
        const call = client.serverReflectionInfo();
        call.on('data', (r: ServerReflectionResponse) => {
          resolve(r);
          call.end();
        });
        call.on('error', reject);
        call.write({ host: '', ...req });
      });
    if (!symbol) {
      const r = await ask({ listServices: '' });
      return (r.listServicesResponse?.service ?? []).map((s) => s.name).join('\n');
    }
    const r = await ask({ fileContainingSymbol: symbol });
    if (r.errorResponse) throw new Error(r.errorResponse.errorMessage);
    const files = (r.fileDescriptorResponse?.fileDescriptorProto ?? []).map((b) => fromBinary(FileDescriptorProtoSchema, b));
    // Reflection answers with the file first and its imports after; a registry needs imports first.
    const byName = new Map(files.map((f) => [f.name, f]));
    const ordered: typeof files = [];
    const visit = (name: string) => {
      const f = byName.get(name);
      if (!f || ordered.includes(f)) return;
      f.dependency.forEach(visit);
      ordered.push(f);
    };
    files.forEach((f) => visit(f.name));
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
    const desc = registry.get(symbol);
    if (desc?.kind === 'service') return renderService(desc);
    if (desc?.kind === 'message') return renderMessage(desc);
    if (desc?.kind === 'enum') return `enum ${desc.typeName} {\n${desc.values.map((v) => `  ${v.name} = ${v.number};`).join('\n')}\n}`;
    throw new Error(`${symbol} is not a service, message or enum`);
  } finally {
    client.close();
  }
}

function renderService(s: DescService): string {
  const methods = s.methods.map((m) => {
    const input = `${m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming' ? 'stream ' : ''}.${m.input.typeName}`;
    const output = `${m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming' ? 'stream ' : ''}.${m.output.typeName}`;
    return `  rpc ${m.name} ( ${input} ) returns ( ${output} );`;
  });
  return `service ${s.name} {\n${methods.join('\n')}\n}`;
}

function fieldType(f: DescField): string {
  switch (f.fieldKind) {
    case 'map':
      return `map<${scalarName(f.mapKey)}, ${f.mapKind === 'scalar' ? scalarName(f.scalar ?? 9) : `.${(f.mapKind === 'enum' ? f.enum : f.message).typeName}`}>`;
    case 'message':
      return `.${f.message.typeName}`;
    case 'enum':
      return `.${f.enum.typeName}`;
    default:
      return scalarName(f.fieldKind === "scalar" ? f.scalar : 9);
  }
}

const scalarNames: Record<number, string> = {
  1: 'double', 2: 'float', 3: 'int64', 4: 'uint64', 5: 'int32', 6: 'fixed64', 7: 'fixed32', 8: 'bool', 9: 'string',
  12: 'bytes', 13: 'uint32', 15: 'sfixed32', 16: 'sfixed64', 17: 'sint32', 18: 'sint64',
};
const scalarName = (n: number) => scalarNames[n] ?? `scalar${n}`;

function renderMessage(m: DescMessage): string {
  const fields = m.fields.map((f) => {
    const repeated = f.fieldKind === 'list' ? 'repeated ' : '';
    const type = f.fieldKind === 'list' ? (f.listKind === 'scalar' ? scalarName(f.scalar) : `.${(f.listKind === 'enum' ? f.enum : f.message).typeName}`) : fieldType(f);
    const oneof = f.oneof ? ` /* oneof ${f.oneof.name} */` : '';
    return `  ${repeated}${type} ${f.name} = ${f.number};${oneof}`;
  });
  return `message ${m.name} {\n${fields.join('\n')}\n}`;
}
