// What every subcommand shares: where output goes (injected, so commands are testable) and the error
// that means "the command line was wrong" (exit 2 with usage), as opposed to a failure doing the work.

export interface Io {
  /** The command's result (tables, JSON). */
  out(text: string): void;
  /** Progress and errors. */
  err(text: string): void;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const MAIN_USAGE = `flatnet: the flatnet pod network's command-line tool

usage: flatnet <command> [options]

commands:
  lab       a real multi-node cluster on this machine, built from network namespaces (flatnet lab --help)
  agent     ask this node's flatnetd: status, metrics, ready (flatnet agent --help)
  ipam      the plugin's reservations and whether each has its host veth (flatnet ipam --help)

options:
  -h, --help   show this help
`;
