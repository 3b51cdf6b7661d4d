import type { DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet } from '@bufbuild/protobuf/wkt';

/**
 * Reserved words of the languages our contracts are generated for, as the languages spell them
 * (case-sensitive). An identifier of a proto is compared as written in the proto, so `from` matches but
 * `From` or `FROM` does not: generators that change case (Go, C#) then never see the word, and those
 * that keep it (Python, TypeScript, Java fields) must otherwise mangle it (`from_`, `from$`, `_from`).
 *
 * What counts, per language:
 * - Python: the hard keywords of 3.12 (`keyword.kwlist`), which include `None`, `True`, `False`. Not the soft
 *   keywords (`match`, `case`, `type`, `_`): they stay valid identifiers everywhere.
 * - Go: the 25 keywords of the spec. Not the predeclared identifiers (`string`, `len`, `nil`…): they can be
 *   shadowed.
 * - Java: the reserved keywords of JLS 3.9 (`const`, `goto` and `_` included) and the literals `true`,
 *   `false`, `null`. Not the contextual keywords (`var`, `yield`, `record`, `sealed`, `permits`, `when`,
 *   `module`…): they are valid field, method and package names, and the only place they are not
 *   (type names) is PascalCase in our protos, which never matches a lower-case word.
 * - C#: the keywords of the C# reference, not the contextual ones (`var`, `global`, `async`, `record`…),
 *   which are valid identifiers in the positions generated code uses them.
 * - TypeScript/JavaScript: the ECMAScript reserved words (keywords, `enum`, the literals `null`, `true`,
 *   `false`), `await` (reserved in modules), and the strict-mode reserved words (`let`, `static`,
 *   `implements`, `interface`, `package`, `private`, `protected`, `public`, `yield`); generated code is
 *   modules, hence strict. Not TypeScript's contextual words (`type`, `declare`, `namespace`, `any`…).
 */
export const RESERVED_WORDS = {
  Python: [
    'False', 'None', 'True', 'and', 'as', 'assert', 'async', 'await', 'break', 'class', 'continue', 'def', 'del',
    'elif', 'else', 'except', 'finally', 'for', 'from', 'global', 'if', 'import', 'in', 'is', 'lambda', 'nonlocal',
    'not', 'or', 'pass', 'raise', 'return', 'try', 'while', 'with', 'yield',
  ],
  Go: [
    'break', 'case', 'chan', 'const', 'continue', 'default', 'defer', 'else', 'fallthrough', 'for', 'func', 'go',
    'goto', 'if', 'import', 'interface', 'map', 'package', 'range', 'return', 'select', 'struct', 'switch', 'type',
    'var',
  ],
  Java: [
    '_', 'abstract', 'assert', 'boolean', 'break', 'byte', 'case', 'catch', 'char', 'class', 'const', 'continue',
    'default', 'do', 'double', 'else', 'enum', 'extends', 'final', 'finally', 'float', 'for', 'goto', 'if',
    'implements', 'import', 'instanceof', 'int', 'interface', 'long', 'native', 'new', 'package', 'private',
    'protected', 'public', 'return', 'short', 'static', 'strictfp', 'super', 'switch', 'synchronized', 'this',
    'throw', 'throws', 'transient', 'try', 'void', 'volatile', 'while', 'true', 'false', 'null',
  ],
  'C#': [
    'abstract', 'as', 'base', 'bool', 'break', 'byte', 'case', 'catch', 'char', 'checked', 'class', 'const',
    'continue', 'decimal', 'default', 'delegate', 'do', 'double', 'else', 'enum', 'event', 'explicit', 'extern',
    'false', 'finally', 'fixed', 'float', 'for', 'foreach', 'goto', 'if', 'implicit', 'in', 'int', 'interface',
    'internal', 'is', 'lock', 'long', 'namespace', 'new', 'null', 'object', 'operator', 'out', 'override', 'params',
    'private', 'protected', 'public', 'readonly', 'ref', 'return', 'sbyte', 'sealed', 'short', 'sizeof',
    'stackalloc', 'static', 'string', 'struct', 'switch', 'this', 'throw', 'true', 'try', 'typeof', 'uint', 'ulong',
    'unchecked', 'unsafe', 'ushort', 'using', 'virtual', 'void', 'volatile', 'while',
  ],
  TypeScript: [
    'await', 'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default', 'delete', 'do', 'else',
    'enum', 'export', 'extends', 'false', 'finally', 'for', 'function', 'if', 'import', 'in', 'instanceof', 'new',
    'null', 'return', 'super', 'switch', 'this', 'throw', 'true', 'try', 'typeof', 'var', 'void', 'while', 'with',
    'yield', 'implements', 'interface', 'let', 'package', 'private', 'protected', 'public', 'static',
  ],
} as const satisfies Record<string, readonly string[]>;

export type Language = keyof typeof RESERVED_WORDS;
export const LANGUAGES = Object.keys(RESERVED_WORDS) as Language[];

const byWord = new Map<string, Language[]>();
for (const lang of LANGUAGES) {
  for (const word of RESERVED_WORDS[lang]) byWord.set(word, [...(byWord.get(word) ?? []), lang]);
}

/** The languages that reserve `name` as written (case-sensitive); empty when none does. */
export function reservedIn(name: string): Language[] {
  return byWord.get(name) ?? [];
}

export type Kind = 'package' | 'service' | 'rpc' | 'message' | 'field' | 'oneof' | 'enum' | 'enum value';

export interface Offender {
  /** The identifier as written in the proto. */
  name: string;
  /** Its fully qualified name; for a package part, the package; for an enum value, `<enum>.<VALUE>`. */
  fullName: string;
  kind: Kind;
  languages: Language[];
  /** The file, as named in the image (relative to its module). */
  file: string;
  /** 1-based line and column of the name when the image carries source info. */
  line?: number;
  column?: number;
}

/**
 * Every identifier of the files whose package is `packagePrefix` or below it (`parley` → `parley.*`) that
 * some language reserves: package parts, services, RPCs, messages (nested too), fields, oneofs, enums (nested
 * too) and enum values. Names the proto does not write are left out: map entry messages (`XEntry`) and the
 * synthetic oneofs of proto3 `optional` fields (`_name`). Files are taken in image order, elements in
 * declaration order.
 */
export function findReservedNames(set: FileDescriptorSet, packagePrefix = 'parley'): Offender[] {
  const out: Offender[] = [];
  for (const file of set.file) {
    if (file.package !== packagePrefix && !file.package.startsWith(`${packagePrefix}.`)) continue;
    const locate = locator(file);
    const add = (name: string, fullName: string, kind: Kind, path: number[]) => {
      const languages = reservedIn(name);
      if (languages.length > 0) out.push({ name, fullName, kind, languages, file: file.name, ...locate(path) });
    };
    for (const part of file.package.split('.')) add(part, file.package, 'package', [2]);
    const enums = (e: EnumDescriptorProto, scope: string, path: number[]) => {
      add(e.name, `${scope}.${e.name}`, 'enum', [...path, 1]);
      e.value.forEach((v, i) => add(v.name, `${scope}.${e.name}.${v.name}`, 'enum value', [...path, 2, i, 1]));
    };
    const messages = (m: DescriptorProto, scope: string, path: number[]) => {
      if (m.options?.mapEntry) return;
      const full = `${scope}.${m.name}`;
      add(m.name, full, 'message', [...path, 1]);
      const synthetic = new Set(m.field.filter((f) => f.proto3Optional && f.oneofIndex !== undefined).map((f) => f.oneofIndex));
      m.field.forEach((f, i) => add(f.name, `${full}.${f.name}`, 'field', [...path, 2, i, 1]));
      m.oneofDecl.forEach((o, i) => synthetic.has(i) || add(o.name, `${full}.${o.name}`, 'oneof', [...path, 8, i, 1]));
      m.nestedType.forEach((n, i) => messages(n, full, [...path, 3, i]));
      m.enumType.forEach((e, i) => enums(e, full, [...path, 4, i]));
    };
    file.messageType.forEach((m, i) => messages(m, file.package, [4, i]));
    file.enumType.forEach((e, i) => enums(e, file.package, [5, i]));
    file.service.forEach((s, i) => {
      const full = `${file.package}.${s.name}`;
      add(s.name, full, 'service', [6, i, 1]);
      s.method.forEach((m, j) => add(m.name, `${full}.${m.name}`, 'rpc', [6, i, 2, j, 1]));
    });
  }
  return out;
}

/** Looks up the source position of a descriptor path, when the file carries source info. */
function locator(file: FileDescriptorProto): (path: number[]) => { line?: number; column?: number } {
  const spans = new Map<string, number[]>();
  for (const loc of file.sourceCodeInfo?.location ?? []) {
    const key = loc.path.join('.');
    if (!spans.has(key)) spans.set(key, loc.span);
  }
  return (path) => {
    // The name's own span, else the element's (a name path ends in 1; its parent is the element).
    const span = spans.get(path.join('.')) ?? spans.get(path.slice(0, -1).join('.'));
    return span && span.length >= 2 ? { line: span[0]! + 1, column: span[1]! + 1 } : {};
  };
}

/** One line per offender: `file:line:col: full.name (kind `name`) is reserved in Python, C#`. */
export function formatOffender(o: Offender, fileRoot = ''): string {
  const where = `${fileRoot}${o.file}${o.line !== undefined ? `:${o.line}:${o.column}` : ''}`;
  return `${where}: ${o.fullName} (${o.kind} \`${o.name}\`) is reserved in ${o.languages.join(', ')}`;
}
