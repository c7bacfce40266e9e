// A tripwire for the in-process fuzzer: while armed, every way the plugin could reach the kernel (spawning
// a program: all iproute2/nft/nsenter work goes through run.ts's spawn) or change the disk (the IPAM store's
// mkdir/open/link/unlink/rename/rm) throws and is recorded. "Refused before any kernel work" is then checked,
// not assumed: a case whose handler got past validation trips the wire and the property fails.
// ESM named imports of built-ins are live bindings, so syncBuiltinESMExports() reaches modules that did
// `import { spawn } from 'node:child_process'` before the wire was armed.
import { createRequire, syncBuiltinESMExports } from 'node:module';

const require = createRequire(import.meta.url);
const cp = require('node:child_process') as Record<string, unknown>;
const fs = require('node:fs') as Record<string, unknown>;

const CP_FUNCS = ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork'] as const;
const FS_FUNCS = ['mkdirSync', 'linkSync', 'unlinkSync', 'renameSync', 'rmSync', 'writeFileSync', 'openSync', 'mkdtempSync'] as const;

export class Tripwire {
  readonly hits: string[] = [];
  private saved: [Record<string, unknown>, string, unknown][] = [];

  arm(): void {
    if (this.saved.length > 0) return;
    for (const [mod, names, label] of [[cp, CP_FUNCS, 'child_process'], [fs, FS_FUNCS, 'fs']] as const) {
      for (const name of names) {
        const original = mod[name];
        this.saved.push([mod, name, original]);
        mod[name] = (...args: unknown[]) => {
          const what = `${label}.${name}(${JSON.stringify(args[0])?.slice(0, 120) ?? ''})`;
          this.hits.push(what);
          throw new Error(`tripwire: ${what}`);
        };
      }
    }
    syncBuiltinESMExports();
  }

  disarm(): void {
    for (const [mod, name, original] of this.saved.splice(0)) mod[name] = original;
    syncBuiltinESMExports();
  }

  /** Returns and clears what was hit since the last call. */
  take(): string[] {
    return this.hits.splice(0);
  }
}
