#!/usr/bin/env node
// Loads the TypeScript entry point in this process through tsx, so `parley serve` needs no build step
// and receives signals itself.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
