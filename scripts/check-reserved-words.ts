/**
 * CI check: no identifier of our contracts is a reserved word of Python, Go, Java, C# or TypeScript
 * (see scripts/reserved-words.ts for what each language reserves).
 *
 *   npm run check:names                                   # builds proto/ with buf and checks parley.*
 *   tsx scripts/check-reserved-words.ts --image x.binpb   # checks a built image (FileDescriptorSet, binary)
 *
 * Prints one line per offender (file:line:col, full name, kind, languages) and exits 1 when there is any;
 * 0 when there is none; 2 when the image cannot be built or read.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { findReservedNames, formatOffender, LANGUAGES } from './reserved-words.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const usage = 'usage: check-reserved-words.ts [--image <file.binpb>] [--proto <module dir>] [--package <prefix>]';

function main(argv: string[]): number {
  let image: string | undefined;
  let protoDir = 'proto';
  let prefix = 'parley';
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined || !['--image', '--proto', '--package'].includes(flag!)) {
      console.error(usage);
      return 2;
    }
    if (flag === '--image') image = value;
    else if (flag === '--proto') protoDir = value;
    else prefix = value;
    i++;
  }

  let bytes: Uint8Array;
  let fileRoot = '';
  try {
    if (image) {
      bytes = readFileSync(image);
    } else {
      // The protos as they are now (not src/gen/parley.binpb, which is only as fresh as the last generate),
      // with source info so that each offender gets its line.
      bytes = execFileSync(path.join(root, 'node_modules/.bin/buf'), ['build', protoDir, '-o', '-'], {
        cwd: root,
        maxBuffer: 256 * 1024 * 1024,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      fileRoot = `${protoDir.replace(/\/+$/, '')}/`;
    }
  } catch (err) {
    console.error(`check-reserved-words: cannot ${image ? `read ${image}` : `build ${protoDir} with buf`}: ${(err as Error).message}`);
    return 2;
  }

  const set = fromBinary(FileDescriptorSetSchema, bytes);
  const checked = set.file.filter((f) => f.package === prefix || f.package.startsWith(`${prefix}.`));
  if (checked.length === 0) {
    console.error(`check-reserved-words: no file of package ${prefix}.* in the image; nothing to check is an error`);
    return 2;
  }
  const offenders = findReservedNames(set, prefix);
  if (offenders.length === 0) {
    console.log(`reserved words: none in ${checked.length} files of ${prefix}.* (${LANGUAGES.join(', ')})`);
    return 0;
  }
  console.error(`reserved words: ${offenders.length} identifiers of ${prefix}.* are reserved in a client language:`);
  for (const o of offenders) console.error(formatOffender(o, fileRoot));
  console.error('Rename them (as written in the proto, case-sensitive); scripts/reserved-words.ts lists the words.');
  return 1;
}

process.exitCode = main(process.argv.slice(2));
