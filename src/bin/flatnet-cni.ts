// Entry point of the CNI plugin executable (dist/cni/flatnet). The only place that reads process.env,
// stdin and writes stdout for the plugin; logs go to stderr only when FLATNET_CNI_DEBUG is set.
// It does not run by itself: the executable's launcher (written by scripts/build.mjs) compiles this
// bundle with V8's code cache when there is one, and calls main().
import { dispatch } from '../cni/dispatch.ts';
import { cmdAdd } from '../plugin/add.ts';
import { cmdCheck } from '../plugin/check.ts';
import { cmdDel } from '../plugin/del.ts';
import { cmdGc } from '../plugin/gc.ts';
import { cmdStatus } from '../plugin/status.ts';
import { type CodeCacheSlot, cacheToWrite, saveCodeCache } from '../plugin/code-cache.ts';
import { mark, startTiming, timingLine } from '../plugin/timing.ts';
import { adoptAddon, exitWithoutTeardown } from '../linux/native-addon.ts';
import { fileCalls } from '../linux/files.ts';

const HANDLERS = { add: cmdAdd, del: cmdDel, check: cmdCheck, status: cmdStatus, gc: cmdGc };

/** The line logged to stderr for a failed call when FLATNET_CNI_DEBUG is set. */
function errorLine(env: Readonly<Record<string, string | undefined>>, error: unknown): string {
  return `flatnet-cni ${env['CNI_COMMAND'] ?? ''}: ${error instanceof Error ? (error.stack ?? error.message) : JSON.stringify(error)}\n`;
}

/** Called by the loader with the code cache it used and the addon it loaded (if any). */
export async function main(codeCache?: CodeCacheSlot, addon?: unknown): Promise<void> {
  startTiming(process.env);
  mark('main');
  adoptAddon(addon);
  // Plain writes to fd 1 and 2: creating process.stdout loads Node's stream machinery (~4 ms per call of
  // a plugin that prints one line).
  const files = fileCalls();
  const outcome = await dispatch(process.env, () => files.readFd(0), HANDLERS);
  if (outcome.error !== undefined && process.env['FLATNET_CNI_DEBUG']) files.writeFd(2, errorLine(process.env, outcome.error));
  if (outcome.stdout !== '') files.writeFd(1, outcome.stdout + '\n');
  mark('answered');
  const timing = timingLine();
  if (timing !== '') files.writeFd(2, timing);
  // The code this call compiled is what the next calls need (see code-cache.ts).
  const save = codeCache && cacheToWrite(codeCache.have, process.env['CNI_COMMAND'], outcome.exitCode === 0);
  if (codeCache && save) saveCodeCache(codeCache, save);
  // Exit at once: the answer is written, and an orderly Node shutdown costs a few ms per call.
  exitWithoutTeardown(outcome.exitCode);
}


/**
 * One plugin call served inside flatnetd (src/agent/cni-server.ts) instead of a process of its own: the
 * caller's environment and stdin in, what the process would have printed and its exit status out. The
 * agent evaluates a fresh copy of this bundle for every call, so no module state is shared between calls.
 */
export async function serve(env: Readonly<Record<string, string | undefined>>, stdin: Buffer, addon?: unknown): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  startTiming(env, performance.now(), 'the agent started serving the call');
  adoptAddon(addon);
  const outcome = await dispatch(env, () => stdin, HANDLERS);
  mark('answered');
  return {
    exitCode: outcome.exitCode,
    stdout: outcome.stdout === '' ? '' : outcome.stdout + '\n',
    stderr: (outcome.error !== undefined && env['FLATNET_CNI_DEBUG'] ? errorLine(env, outcome.error) : '') + timingLine(),
  };
}
