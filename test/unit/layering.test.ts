// The layering rule, checked without ESLint: the domain folders (src/prompt, src/genie, src/admin, src/enduser) import neither
// knex, grpc-js, pg nor ioredis, nor anything under src/storage, src/transport or src/gen. eslint.config.js states the
// same rule for the editor; this test is what `npm test` (and so CI) enforces.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DOMAIN = ['src/prompt', 'src/genie', 'src/admin', 'src/enduser'];
const FORBIDDEN_PACKAGES = ['knex', '@grpc/grpc-js', 'pg', 'ioredis'];
const FORBIDDEN_FOLDERS = ['src/storage', 'src/transport', 'src/gen'];

/** Every module specifier in a source text: static imports (type-only too), re-exports, `import x = require()`,
 *  dynamic `import()` and `typeof import()` types. */
function importsOf(fileName: string, text: string): string[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const literal = (n: ts.Node | undefined) => {
    if (n && ts.isStringLiteralLike(n)) found.push(n.text);
  };
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) literal(n.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(n) && ts.isExternalModuleReference(n.moduleReference)) literal(n.moduleReference.expression);
    else if (ts.isCallExpression(n) && (n.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(n.expression) && n.expression.text === 'require')))
      literal(n.arguments[0]);
    else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) literal(n.argument.literal);
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return found;
}

/** Why `specifier`, imported from `file` (relative to the repository), crosses the line; undefined when it does not. */
function crossing(file: string, specifier: string): string | undefined {
  const pkg = FORBIDDEN_PACKAGES.find((p) => specifier === p || specifier.startsWith(`${p}/`));
  if (pkg) return `package ${pkg}`;
  if (!specifier.startsWith('.')) return undefined;
  const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier));
  const folder = FORBIDDEN_FOLDERS.find((f) => target === f || target.startsWith(`${f}/`));
  return folder ? `${folder}/` : undefined;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return sourceFiles(rel);
    return /\.(m|c)?[jt]s$/.test(e.name) ? [rel] : [];
  });
}

function violations(): Array<{ file: string; specifier: string; why: string }> {
  return DOMAIN.flatMap((dir) => sourceFiles(dir)).flatMap((file) =>
    importsOf(file, readFileSync(path.join(root, file), 'utf8')).flatMap((specifier) => {
      const why = crossing(file, specifier);
      return why ? [{ file, specifier, why }] : [];
    }),
  );
}

test('layering: the scanner sees static, type-only, re-export, require and dynamic imports', (t) => {
  const text = [
    "import a from 'a';",
    "import type { B } from 'b';",
    "import {\n  c,\n  type C,\n} from 'c';",
    "import 'd';",
    "export { e } from 'e';",
    "export * from 'f';",
    "import g = require('g');",
    "const h = await import('h');",
    "type I = typeof import('i').default;",
    "// import j from 'j';",
    "const k = \"import l from 'l'\";",
  ].join('\n');
  t.deepEqual(importsOf('x.ts', text), ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']);
});

test('layering: crossing names forbidden packages (and their subpaths) and folders, nothing else', (t) => {
  t.is(crossing('src/genie/x.ts', 'knex'), 'package knex');
  t.is(crossing('src/genie/x.ts', '@grpc/grpc-js/build/src/metadata.js'), 'package @grpc/grpc-js');
  t.is(crossing('src/genie/x.ts', 'pg'), 'package pg');
  t.is(crossing('src/genie/x.ts', 'ioredis'), 'package ioredis');
  t.is(crossing('src/genie/x.ts', '../storage/db.js'), 'src/storage/');
  t.is(crossing('src/genie/sub/x.ts', '../../transport/rpc.js'), 'src/transport/');
  t.is(crossing('src/admin/x.ts', '../gen/parley/admin/v1/admin.js'), 'src/gen/');
  t.is(crossing('src/genie/x.ts', 'pg-protocol'), undefined);
  t.is(crossing('src/genie/x.ts', '../ports/kv.js'), undefined);
  t.is(crossing('src/genie/x.ts', '../storage-notes.js'), undefined);
  t.is(crossing('src/genie/x.ts', './storage/x.js'), undefined);
  t.is(crossing('src/genie/x.ts', '../admin/service.js'), undefined);
});

test('layering: domain folders import no knex, grpc-js, pg, ioredis, storage, transport or gen', (t) => {
  const unexpected = violations();
  t.deepEqual(
    unexpected.map((v) => `${v.file} imports '${v.specifier}' (${v.why})`),
    [],
    'the domain reaches past its ports: depend on an interface in src/ports or the aggregate store.ts instead',
  );
});

test('layering: ESLint refuses a domain file that reaches into storage or knex', async (t) => {
  const { ESLint } = await import('eslint');
  const eslint = new ESLint({ cwd: root });
  const file = path.join(root, 'src/genie/model-type.ts');
  const text = `${readFileSync(file, 'utf8')}\nimport type { Knex } from 'knex';\nimport { KnexSessionStore } from '../storage/genie-store.js';\nexport type Leak = [Knex, KnexSessionStore];\n`;
  const [result] = await eslint.lintText(text, { filePath: file });
  const layering = (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.line);
  const lineOf = (needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;
  t.deepEqual(layering, [lineOf("from 'knex'"), lineOf("from '../storage/genie-store.js'")]);
});
