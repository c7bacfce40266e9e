// Runs flatnetd's plugin-call server (src/agent/cni-server.ts, the real code) on its own, without the
// rest of the agent, for root tests that need an agent in a throwaway node namespace but no store or
// lease: `nsenter --net=/run/netns/NODE node --import tsx test/tools/cni-server-host.ts`.
// Prints "listening <socket>" once it serves; on SIGUSR1 prints its plugin-call metrics as one JSON line
// ({"<series>": value}: the calls by command and result, those in flight, the ADDs undone); on SIGTERM stops as the agent does (in-flight calls finish) and exits.
import { CniServer } from '../../src/agent/cni-server.ts';
import { createLogger } from '../../src/agent/log.ts';
import { agentMetrics } from '../../src/agent/metrics.ts';

const metrics = agentMetrics();
const server = new CniServer({ log: createLogger('json', { component: 'cni-server-host' }), metrics });

function metricsLine(): string {
  const out: Record<string, number> = {};
  for (const line of metrics.registry.render().split('\n')) {
    const m = /^(flatnet_cni_calls_total\{[^}]*\}|flatnet_cni_calls_in_flight|flatnet_cni_adds_undone_total) (\d+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return JSON.stringify(out);
}

process.on('SIGUSR1', () => process.stdout.write(`metrics ${metricsLine()}\n`));
process.on('SIGTERM', () => {
  void server.stop().then(() => process.exit(0));
});
void server.start().then((ok) => process.stdout.write(ok ? `listening ${server.socketPath ?? ''}\n` : 'not serving\n'));
