// Saving V8's compiled code of the plugin beside the plugin: after the first successful ADD, and again
// (a superset) after the first successful DEL.
//
// Why: a CNI plugin is a new process per call, and V8 compiles every function the first time it runs;
// for an ADD that is about a third of what the plugin does above Node's own start. The launcher that
// scripts/build.mjs writes compiles the bundle through vm.Script with the best cache it finds
// (`<base>.full.cache`, else `<base>.add.cache`) and tells main() which one it had. Saving happens after
// the answer is written, so no runtime ever waits for it.
//
// Safety: the files sit in the plugin's own directory, so only someone who could replace the plugin can
// write them; their name carries a hash of the bundle, so they are never applied to other code (and V8
// checks its own version and flags). Each is written to a temp file and renamed, so a reader sees all of
// it or none; a read-only directory just means running without a cache.
import { readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface CodeCacheSlot {
  /** Path prefix: `<dir>/.flatnet-<build>`. */
  readonly base: string;
  /** Which cache the launcher loaded (V8 accepting it). */
  readonly have: 'none' | 'add' | 'full';
  create(): Buffer;
}

/** Which file, if any, this call should write: pure, so the policy is tested without a plugin. */
export function cacheToWrite(have: CodeCacheSlot['have'], command: string | undefined, succeeded: boolean): 'add' | 'full' | undefined {
  if (!succeeded) return undefined;
  if (command === 'ADD' && have === 'none') return 'add';
  // A cache of ADD plus what DEL ran. A DEL with no cache at all writes nothing: an ADD-less "full" cache
  // would keep the next ADDs from ever saving theirs.
  if (command === 'DEL' && have === 'add') return 'full';
  return undefined;
}

export function saveCodeCache(slot: CodeCacheSlot, kind: 'add' | 'full'): void {
  const file = `${slot.base}.${kind}.cache`;
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, slot.create(), { mode: 0o644, flag: 'wx' });
    renameSync(tmp, file);
    // Caches of earlier builds can never be used again.
    const dir = dirname(file);
    const mine = basename(slot.base);
    for (const name of readdirSync(dir)) {
      if (/^\.flatnet-[0-9a-f]{16}\.(add|full)\.cache$/.test(name) && !name.startsWith(`${mine}.`)) rmSync(join(dir, name), { force: true });
    }
  } catch {
    rmSync(tmp, { force: true });
  }
}
