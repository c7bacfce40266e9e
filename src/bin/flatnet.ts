// Entry point of the flatnet CLI (dist/bin/flatnet): the only place that reads argv and the process's
// own location, and sets the exit code. Executables are found next to this bundle: dist/bin/flatnetd
// and dist/cni/flatnet.
import { realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { echoCommand, kubeNodeCommand, kubeStandinCommand, probeCommand, releaseLeaseCommand } from '../cli/hidden.ts';
import { labCommand } from '../cli/lab.ts';
import { agentCommand, ipamCommand } from '../cli/node.ts';
import { MAIN_USAGE, UsageError } from '../cli/usage.ts';
import type { Io } from '../cli/usage.ts';

const io: Io = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
};

function labPaths(): { self: string; flatnetd: string; cniDir: string } {
  const self = realpathSync(process.argv[1] ?? '');
  const binDir = dirname(self);
  return { self, flatnetd: resolve(binDir, 'flatnetd'), cniDir: resolve(binDir, '../cni') };
}

async function main(argv: readonly string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
      io.err(MAIN_USAGE);
      return 2;
    case '-h':
    case '--help':
    case 'help':
      io.out(MAIN_USAGE);
      return 0;
    case 'lab':
      return labCommand(rest, io, labPaths());
    case 'agent':
      return agentCommand(rest, io);
    case 'ipam':
      return ipamCommand(rest, io);
    case '__echo':
      return echoCommand(rest, io);
    case '__probe':
      return probeCommand(rest, io);
    case '__release-lease':
      return releaseLeaseCommand(rest);
    case '__kube-apiserver-standin':
      return kubeStandinCommand(rest, io);
    case '__kube-node':
      return kubeNodeCommand(rest);
    default:
      throw new UsageError(`unknown command "${cmd}" (see flatnet --help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      io.err(`flatnet: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    const err = e as Error;
    io.err(`flatnet: ${err.message}\n`);
    let cause = err.cause;
    while (cause instanceof Error) {
      io.err(`  caused by: ${cause.message}\n`);
      cause = cause.cause;
    }
    process.exitCode = 1;
  },
);
