import { readFileSync } from 'node:fs';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  type DescriptorProto,
  type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';
import { status as Status, type Server, type ServerDuplexStream } from '@grpc/grpc-js';
import * as v1 from '../gen/grpc/reflection/v1/reflection.js';
import * as v1alpha from '../gen/grpc/reflection/v1alpha/reflection.js';
import { clip } from '../errors.js';

/** The `buf build` image of every proto the server serves, imports included. */
export const loadImage = (): Uint8Array => readFileSync(new URL('../gen/parley.binpb', import.meta.url));

/**
 * Server reflection served from the raw FileDescriptorProtos of `buf build` (src/gen/parley.binpb), imports
 * included, so `buf curl`/grpcurl can resolve every type. (Descriptors rebuilt by proto-loader drop their
 * dependency lists, which is why we do not use @grpc/reflection.)
 */
export class DescriptorIndex {
  private readonly files = new Map<string, { bytes: Buffer; deps: string[] }>();
  private readonly symbols = new Map<string, string>();

  constructor(image: Uint8Array) {
    const set = fromBinary(FileDescriptorSetSchema, image);
    for (const file of set.file) {
      this.files.set(file.name, { bytes: Buffer.from(toBinary(FileDescriptorProtoSchema, file)), deps: file.dependency });
      this.indexFile(file);
    }
  }

  static load(): DescriptorIndex {
    return new DescriptorIndex(loadImage());
  }

  /** The file and everything it imports, transitively, the file itself first. */
  fileWithDeps(name: string): Buffer[] | undefined {
    if (!this.files.has(name)) return undefined;
    const seen = new Set<string>();
    const out: Buffer[] = [];
    const visit = (n: string) => {
      const f = this.files.get(n);
      if (!f || seen.has(n)) return;
      seen.add(n);
      out.push(f.bytes);
      f.deps.forEach(visit);
    };
    visit(name);
    return out;
  }

  fileOfSymbol(symbol: string): string | undefined {
    return this.symbols.get(symbol.replace(/^\./, ''));
  }

  private indexFile(file: FileDescriptorProto): void {
    const pkg = file.package ? `${file.package}.` : '';
    const add = (name: string) => this.symbols.set(name, file.name);
    const message = (prefix: string, m: DescriptorProto) => {
      const full = `${prefix}${m.name}`;
      add(full);
      m.nestedType.forEach((n) => message(`${full}.`, n));
      m.enumType.forEach((e) => add(`${full}.${e.name}`));
      m.extension.forEach((x) => add(`${full}.${x.name}`));
    };
    file.messageType.forEach((m) => message(pkg, m));
    file.enumType.forEach((e) => add(`${pkg}${e.name}`));
    file.extension.forEach((x) => add(`${pkg}${x.name}`));
    for (const s of file.service) {
      add(`${pkg}${s.name}`);
      s.method.forEach((m) => add(`${pkg}${s.name}.${m.name}`));
    }
  }
}

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

function answer(index: DescriptorIndex, services: string[], req: Request): Response {
  const base = { validHost: req.host, originalRequest: req } as Response;
  const notFound = (what: string) => ({
    ...base,
    errorResponse: { errorCode: Status.NOT_FOUND, errorMessage: `${clip(what, 200)} not found` },
  });
  if (req.listServices !== undefined) {
    return { ...base, listServicesResponse: { service: services.map((name) => ({ name })) } };
  }
  if (req.fileByFilename !== undefined) {
    const files = index.fileWithDeps(req.fileByFilename);
    return files ? { ...base, fileDescriptorResponse: { fileDescriptorProto: files } } : notFound(`file ${req.fileByFilename}`);
  }
  if (req.fileContainingSymbol !== undefined) {
    const file = index.fileOfSymbol(req.fileContainingSymbol);
    const files = file ? index.fileWithDeps(file) : undefined;
    return files ? { ...base, fileDescriptorResponse: { fileDescriptorProto: files } } : notFound(`symbol ${req.fileContainingSymbol}`);
  }
  if (req.allExtensionNumbersOfType !== undefined) {
    // Our contracts declare no extensions; answer with an empty list for known types.
    return index.fileOfSymbol(req.allExtensionNumbersOfType)
      ? { ...base, allExtensionNumbersResponse: { baseTypeName: req.allExtensionNumbersOfType, extensionNumber: [] } }
      : notFound(`type ${req.allExtensionNumbersOfType}`);
  }
  if (req.fileContainingExtension !== undefined) return notFound('extension');
  return { ...base, errorResponse: { errorCode: Status.INVALID_ARGUMENT, errorMessage: 'empty reflection request' } };
}

/** Adds grpc.reflection.v1 and v1alpha, listing `services` (fully-qualified names). */
export function addReflection(server: Server, index: DescriptorIndex, services: string[]): void {
  const handler = (call: ServerDuplexStream<Request, Response>) => {
    call.on('data', (req: Request) => call.write(answer(index, services, req)));
    call.on('end', () => call.end());
    call.on('error', () => {});
  };
  // v1alpha's messages are field-for-field the same as v1's, so one handler serves both.
  server.addService(v1.ServerReflectionService, { serverReflectionInfo: handler });
  server.addService(v1alpha.ServerReflectionService, { serverReflectionInfo: handler as never });
}
