// `flatnet lab ...`: argument handling only; the work is in src/lab/.
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { LabExistsError, addNode, addPod, down, removeNode, removePod, up } from '../lab/lab.ts';
import type { LabPaths } from '../lab/lab.ts';
import { collectStatus, renderStatus } from '../lab/status.ts';
import { DEFAULT_PREFIX, DEFAULT_ROOT, LabOptionsError, validatePrefix } from '../lab/topology.ts';
import type { Backend, LabOptions, StoreKind, TopologyKind } from '../lab/topology.ts';
import { trace } from '../lab/trace.ts';
import { verify } from '../lab/verify.ts';
import { UsageError } from './usage.ts';
import type { Io } from './usage.ts';

export const LAB_USAGE = `flatnet lab: a real multi-node cluster on this machine, out of network namespaces

usage: flatnet lab <command> [options]

commands:
  up [--nodes 3] [--pods 2] [--backend host-gw|vxlan] [--store embedded|etcd|kubernetes] [--ipv6]
     [--topology flat|routed]        build the fabric, nodes with their agents, the outside host and pods
                                     (--store kubernetes: against a STAND-IN API server, as there is no real one here)
  down                               remove everything the lab made (works after a crash too)
  status [--json]                    nodes, pods, addresses and agent health
  verify [--json]                    check the Kubernetes network model end to end (exit 1 on failure)
  trace SRC DST                      the hop-by-hop path between pods, nodes, the outside host or addresses
  add-node [--pods N]                add a node (with N pods, default: the lab's --pods)
  remove-node NAME                   delete its pods, stop its agent, release its lease, remove it
  add-pod NODE [NAME]                add a pod on NODE (name: a suffix like "web" or the full name)
  remove-pod NAME                    delete a pod (CNI DEL, then its namespace)

options for every command:
  --root DIR       lab state directory (default ${DEFAULT_ROOT})
  --prefix PFX     namespace name prefix (default ${DEFAULT_PREFIX})
  -h, --help       show this help

Run as root. The lab changes nothing in the machine's own network namespace.
See docs/lab.md for the topology and addresses.
`;

const COMMON = {
  root: { type: 'string' },
  prefix: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: readonly string[], options: O) {
  try {
    return parseArgs({ args: [...argv], options: { ...COMMON, ...options }, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function oneOf<T extends string>(v: string | undefined, allowed: readonly T[], flag: string, dflt: T): T {
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

function int(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`${flag} must be a whole number, got "${v}"`);
  return Number(v);
}

function location(values: { root?: string | undefined; prefix?: string | undefined }): { root: string; prefix: string } {
  const root = values.root ?? DEFAULT_ROOT;
  const prefix = values.prefix ?? DEFAULT_PREFIX;
  try {
    validatePrefix(prefix);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (!root.startsWith('/') || root === '/') throw new UsageError(`--root must be an absolute directory other than "/", got "${root}"`);
  return { root, prefix };
}

function noPositionals(positionals: readonly string[], cmd: string): void {
  if (positionals.length) throw new UsageError(`lab ${cmd}: unexpected argument "${positionals[0]}"`);
}

/** Thrown from progress() once a signal asked `lab up` to stop: the build unwinds at its next step. */
class UpInterrupted extends Error {
  override readonly name = 'UpInterrupted';
  constructor(signal: string) {
    super(`interrupted by ${signal}`);
  }
}

/** The --root/--prefix options a follow-up command needs to find this lab, when they are not the defaults. */
function where(root: string, prefix: string): string {
  return `${root !== DEFAULT_ROOT ? ` --root ${root}` : ''}${prefix !== DEFAULT_PREFIX ? ` --prefix ${prefix}` : ''}`;
}

export async function labCommand(argv: readonly string[], io: Io, paths: LabPaths): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    io.out(LAB_USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(LAB_USAGE);
    return 0;
  }
  const ctx = { paths, progress: (line: string) => io.err(`${line}\n`) };
  switch (cmd) {
    case 'up': {
      const { values, positionals } = parse(rest, {
        nodes: { type: 'string' },
        pods: { type: 'string' },
        backend: { type: 'string' },
        store: { type: 'string' },
        ipv6: { type: 'boolean' },
        topology: { type: 'string' },
      });
      noPositionals(positionals, cmd);
      const { root, prefix } = location(values);
      const o: LabOptions = {
        nodes: int(values.nodes, '--nodes', 3),
        pods: int(values.pods, '--pods', 2),
        backend: oneOf<Backend>(values.backend, ['host-gw', 'vxlan'], '--backend', 'host-gw'),
        store: oneOf<StoreKind>(values.store, ['embedded', 'etcd', 'kubernetes'], '--store', 'embedded'),
        ipv6: values.ipv6 ?? false,
        topology: oneOf<TopologyKind>(values.topology, ['flat', 'routed'], '--topology', 'flat'),
        root,
        prefix,
      };
      // Ctrl-C (or SIGTERM) while the lab is being built: finish the step under way, then remove everything
      // built so far, so an interrupted up leaves nothing behind. A second signal gives up at once.
      let interrupted: string | undefined;
      const onSignal = (sig: NodeJS.Signals): void => {
        if (interrupted) {
          io.err(`${sig} again: stopping now; remove what is left with: flatnet lab down${where(root, prefix)}\n`);
          process.exit(130);
        }
        interrupted = sig;
        io.err(`\n${sig}: stopping after the current step, then removing what was built\n`);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const stoppable = {
        ...ctx,
        progress: (line: string) => {
          if (interrupted) throw new UpInterrupted(interrupted);
          ctx.progress(line);
        },
      };
      try {
        await up(stoppable, o);
        if (interrupted) throw new UpInterrupted(interrupted);
      } catch (e) {
        if (e instanceof UpInterrupted || interrupted) {
          await down(ctx, prefix, root);
          io.err(`lab up interrupted (${interrupted ?? ''}): removed what it had built\n`);
          return 130;
        }
        if (e instanceof LabExistsError || e instanceof LabOptionsError) throw e;
        io.err(`lab up failed: ${(e as Error).message}\n`);
        io.err(`the partly built lab is left in place for inspection (logs under ${root}); remove it with: flatnet lab down${where(root, prefix)}\n`);
        return 1;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      io.out(renderStatus(await collectStatus(root)) + '\n');
      return 0;
    }
    case 'down': {
      const { values, positionals } = parse(rest, {});
      noPositionals(positionals, cmd);
      const { root, prefix } = location(values);
      await down(ctx, prefix, root);
      io.err(`lab down: nothing left with prefix ${prefix} or under ${root}\n`);
      return 0;
    }
    case 'status': {
      const { values, positionals } = parse(rest, { json: { type: 'boolean' } });
      noPositionals(positionals, cmd);
      const { root } = location(values);
      const s = await collectStatus(root);
      io.out(values.json ? JSON.stringify(s, null, 2) + '\n' : renderStatus(s) + '\n');
      return 0;
    }
    case 'verify': {
      const { values, positionals } = parse(rest, { json: { type: 'boolean' } });
      noPositionals(positionals, cmd);
      const { root } = location(values);
      const report = await verify(ctx, root);
      if (values.json) {
        io.out(
          JSON.stringify(
            {
              ok: report.ok,
              agents: report.agents,
              checks: report.results.map((r) => ({
                from: r.check.from,
                to: r.check.to,
                family: r.check.family,
                category: r.check.category,
                proto: r.check.request.proto,
                size: r.check.request.size,
                addr: r.check.request.addr,
                expectReach: r.check.expectReach,
                pass: r.pass,
                saw: r.outcome.saw ?? null,
                error: r.outcome.error ?? null,
                why: r.why,
              })),
            },
            null,
            2,
          ) + '\n',
        );
      } else {
        io.out(report.text + '\n');
      }
      return report.ok ? 0 : 1;
    }
    case 'trace': {
      const { values, positionals } = parse(rest, {});
      const { root } = location(values);
      const [src, dst, extra] = positionals;
      if (src === undefined || dst === undefined || extra !== undefined) throw new UsageError('usage: flatnet lab trace SRC DST');
      const t = await trace(root, src, dst);
      io.out(t.text + '\n');
      return t.ok ? 0 : 1;
    }
    case 'add-node': {
      const { values, positionals } = parse(rest, { pods: { type: 'string' } });
      noPositionals(positionals, cmd);
      const { root } = location(values);
      const n = await addNode(ctx, root, values.pods === undefined ? undefined : int(values.pods, '--pods', 0));
      io.out(`added node ${n.name} (${n.netns}, ${n.underlayIPs.join(', ')})\n`);
      return 0;
    }
    case 'remove-node': {
      const { values, positionals } = parse(rest, {});
      const { root } = location(values);
      const [name, extra] = positionals;
      if (name === undefined || extra !== undefined) throw new UsageError('usage: flatnet lab remove-node NAME');
      await removeNode(ctx, root, name);
      io.out(`removed node ${name}\n`);
      return 0;
    }
    case 'add-pod': {
      const { values, positionals } = parse(rest, {});
      const { root } = location(values);
      const [node, name, extra] = positionals;
      if (node === undefined || extra !== undefined) throw new UsageError('usage: flatnet lab add-pod NODE [NAME]');
      const p = await addPod(ctx, root, node, name);
      io.out(`added pod ${p.name} on ${p.node}: ${p.ips.join(', ')}\n`);
      return 0;
    }
    case 'remove-pod': {
      const { values, positionals } = parse(rest, {});
      const { root } = location(values);
      const [name, extra] = positionals;
      if (name === undefined || extra !== undefined) throw new UsageError('usage: flatnet lab remove-pod NAME');
      await removePod(ctx, root, name);
      io.out(`removed pod ${name}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown lab command "${cmd}" (see flatnet lab --help)`);
  }
}
