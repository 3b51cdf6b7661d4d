#!/usr/bin/env node
// Runs the compiled CLI (dist/, written by `npm run build`) in this process, with plain node: no TypeScript
// loader at run time, and the process a signal is sent to is the server itself.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('parley: dist/main.js is missing: run `npm run build` first\n');
  process.exit(1);
}
await import(main.href);
