// Entry point of the node agent. Reads argv, runs until SIGTERM/SIGINT, exits non-zero on a fatal error.
import { hostname } from 'node:os';
import { Agent } from '../agent/daemon.ts';
import { OptionsError, USAGE, parseAgentOptions } from '../agent/options.ts';

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
