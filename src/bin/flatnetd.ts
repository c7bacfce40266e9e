// Entry point of the node agent. Reads argv, runs until SIGTERM/SIGINT, exits non-zero on a fatal error.
import { hostname } from 'node:os';
import { Agent } from '../agent/daemon.ts';
import type { Logger } from '../agent/log.ts';
import { OptionsError, USAGE, parseAgentOptions } from '../agent/options.ts';

/**
 * Node prints its process warnings as plain text on stderr, in the middle of the agent's JSON log; they go
 * through the logger instead. DEP0123 is left out: grpc names the server for TLS by the endpoint's host,
 * and an etcd addressed by IP (the usual way) makes Node warn about that on every connection.
 */
function routeProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => {
    if (w.code === 'DEP0123') return;
    log.warn('node.js warning', { warning: w.name, ...(w.code !== undefined ? { code: w.code } : {}), message: w.message });
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  let agent: Agent;
  try {
    agent = new Agent(parseAgentOptions(argv, hostname(), process.env));
  } catch (e) {
    if (e instanceof OptionsError) {
      process.stderr.write(`flatnetd: ${e.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
  routeProcessWarnings(agent.log);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await agent.start();
}

main().catch((e: unknown) => {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'fatal', error: e instanceof Error ? e.message : String(e) })}\n`);
  process.exit(1);
});
