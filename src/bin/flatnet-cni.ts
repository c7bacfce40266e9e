// Entry point of the CNI plugin executable (dist/cni/flatnet). The only place that reads process.env,
// stdin and writes stdout for the plugin; logs go to stderr only when FLATNET_CNI_DEBUG is set.
import { readFileSync } from 'node:fs';
import { dispatch } from '../cni/dispatch.ts';
import { cmdAdd } from '../plugin/add.ts';
import { cmdCheck } from '../plugin/check.ts';
import { cmdDel } from '../plugin/del.ts';
import { cmdGc } from '../plugin/gc.ts';
import { cmdStatus } from '../plugin/status.ts';

async function main(): Promise<void> {
  const outcome = await dispatch(process.env, () => readFileSync(0), { add: cmdAdd, del: cmdDel, check: cmdCheck, status: cmdStatus, gc: cmdGc });
  if (outcome.error !== undefined && process.env['FLATNET_CNI_DEBUG']) {
    process.stderr.write(`flatnet-cni ${process.env['CNI_COMMAND'] ?? ''}: ${outcome.error instanceof Error ? (outcome.error.stack ?? outcome.error.message) : JSON.stringify(outcome.error)}\n`);
  }
  if (outcome.stdout !== '') process.stdout.write(outcome.stdout + '\n');
  process.exitCode = outcome.exitCode;
}

void main();
