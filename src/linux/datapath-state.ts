// Reading the datapath entries flatnet owns from the kernel, and applying a plan to them.
// Reads (in parallel): `ip -o route` (one process per family, read line by line), and in vxlan mode
// `ip -j neigh` and `bridge -j fdb` on the VXLAN device. Writes: the plan's batches (at most three processes:
// ip, bridge, ip; one for host-gw), each run with -force so one bad entry does not block the
// rest; failures are collected and reported after the whole plan ran.
import { CommandError, inNetns, run, runLines, runOk } from './run.ts';
import type { ActualState, KernelFdb, KernelNeighbour, KernelRoute } from '../agent/desired.ts';
import type { CommandBatch } from '../agent/reconcile.ts';
import { parseFdb, parseNeighbours, parseRouteLine } from './iproute-json.ts';

export class DatapathReadError extends Error {
  override readonly name = 'DatapathReadError';
}

export interface BatchFailure {
  readonly tool: 'ip' | 'bridge';
  readonly line: string;
  readonly message: string;
}

export class DatapathApplyError extends Error {
  override readonly name = 'DatapathApplyError';
  constructor(
    readonly failures: readonly BatchFailure[],
    options?: ErrorOptions,
  ) {
    super(`${failures.length} datapath change(s) failed: ${failures.map((f) => `"${f.line}": ${f.message}`).join('; ')}`, options);
  }
}

export interface NetnsOption {
  /** Network namespace (path or name under /run/netns); the current one when absent. */
  readonly netns?: string;
}

/** Every route of the main table, both families (foreign ones are needed for conflict checks), read line by line. */
export async function listMainRoutes(opts: NetnsOption = {}): Promise<KernelRoute[]> {
  const read = async (family: 4 | 6): Promise<KernelRoute[]> => {
    const argv = inNetns(opts.netns, ['ip', '-o', `-${family}`, 'route', 'show', 'table', 'main']);
    const routes: KernelRoute[] = [];
    try {
      await runLines(argv, (line) => {
        const r = parseRouteLine(line, family);
        if (r) routes.push(r);
      });
    } catch (cause) {
      throw new DatapathReadError(`cannot list IPv${family} routes`, { cause });
    }
    return routes;
  };
  const [v4, v6] = await Promise.all([read(4), read(6)]);
  return [...v4, ...v6];
}

export async function listNeighbours(dev: string, opts: NetnsOption = {}): Promise<KernelNeighbour[]> {
  const argv = inNetns(opts.netns, ['ip', '-j', 'neigh', 'show', 'dev', dev]);
  try {
    return parseNeighbours((await runOk(argv)).stdout, dev);
  } catch (cause) {
    throw new DatapathReadError(`cannot list neighbours on ${dev}`, { cause });
  }
}

export async function listFdb(dev: string, opts: NetnsOption = {}): Promise<KernelFdb[]> {
  const argv = inNetns(opts.netns, ['bridge', '-j', 'fdb', 'show', 'dev', dev]);
  try {
    return parseFdb((await runOk(argv)).stdout, dev);
  } catch (cause) {
    throw new DatapathReadError(`cannot list FDB entries on ${dev}`, { cause });
  }
}

/**
 * The kernel's side of the diff: main-table routes, plus neighbours/FDB on `vxlanDev` (pass it
 * only when the device exists, i.e. right after ensureVxlanDevice). Reads run in parallel.
 */
export async function readActualState(vxlanDev: string | undefined, opts: NetnsOption = {}): Promise<ActualState> {
  const [routes, neighbours, fdb] = await Promise.all([
    listMainRoutes(opts),
    vxlanDev !== undefined ? listNeighbours(vxlanDev, opts) : Promise.resolve([]),
    vxlanDev !== undefined ? listFdb(vxlanDev, opts) : Promise.resolve([]),
  ]);
  return { routes, neighbours, fdb };
}

/**
 * Maps `ip -batch` stderr to the failed lines. iproute2 prints the error, then
 * "Command failed -:N" (1-based line number of the batch input).
 */
export function batchFailures(tool: 'ip' | 'bridge', lines: readonly string[], stderr: string): BatchFailure[] {
  const out: BatchFailure[] = [];
  let pending: string[] = [];
  for (const l of stderr.split('\n')) {
    const m = /^Command failed -:(\d+)$/.exec(l.trim());
    if (m) {
      const line = lines[Number(m[1]) - 1] ?? `line ${m[1]}`;
      out.push({ tool, line, message: pending.join(' ').trim() || 'failed' });
      pending = [];
    } else if (l.trim() !== '') {
      pending.push(l.trim());
    }
  }
  return out;
}

/** A delete that found nothing to delete raced with someone else's removal: the goal is met. */
function alreadyGone(f: BatchFailure): boolean {
  return / del /.test(` ${f.line} `) && /No such (process|file or directory|device)|Cannot find device/.test(f.message);
}

/** Runs the batches in order; throws DatapathApplyError listing every failed line (after running all). */
export async function applyBatches(batches: readonly CommandBatch[], opts: NetnsOption = {}): Promise<void> {
  const failures: BatchFailure[] = [];
  for (const b of batches) {
    const argv = inNetns(opts.netns, [b.tool, '-force', '-batch', '-']);
    const r = await run(argv, { input: `${b.lines.join('\n')}\n` });
    if (r.code === 0) continue;
    const parsed = batchFailures(b.tool, b.lines, r.stderr);
    if (parsed.length === 0) {
      throw new DatapathApplyError([{ tool: b.tool, line: '(batch)', message: r.stderr.trim() }], {
        cause: new CommandError(argv, r),
      });
    }
    failures.push(...parsed.filter((f) => !alreadyGone(f)));
  }
  if (failures.length > 0) throw new DatapathApplyError(failures);
}
