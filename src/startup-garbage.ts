import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * One full garbage collection, for a server on the embedded database once it is serving. PGlite's first
 * start on a new data dir runs initdb in a WebAssembly instance of its own; afterwards that instance and its
 * file bundle (about 400 MiB) are garbage, but only allocation triggers a collection, so an idle server would
 * hold them for good. `--expose-gc` is turned on only to reach `gc` from a fresh context: the process's own
 * global gets no `gc`.
 */
export function collectStartupGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}
