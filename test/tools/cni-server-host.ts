// Runs flatnetd's plugin-call server (src/agent/cni-server.ts, the real code) on its own, without the
// rest of the agent, for root tests that need an agent in a throwaway node namespace but no store or
// lease: `nsenter --net=/run/netns/NODE node --import tsx test/tools/cni-server-host.ts`.
// Prints "listening <socket>" once it serves; on SIGUSR1 prints its plugin-call metrics as one JSON line
// ({"<series>": value}: the calls by command and result, those in flight, the ADDs undone), then
// "loop" and the longest its event loop was held since the previous such line in ms (what serving plugin
// calls costs the rest of an agent); on SIGTERM stops as the agent does (in-flight calls finish) and exits.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { CniServer } from '../../src/agent/cni-server.ts';
import { createLogger } from '../../src/agent/log.ts';
import { agentMetrics } from '../../src/agent/metrics.ts';
import { seriesOf } from './cni-agent.ts';

const metrics = agentMetrics();
const server = new CniServer({ log: createLogger('json', { component: 'cni-server-host' }), metrics });

// Sampled every 10 ms: a call that holds the loop for less than that can go unseen, longer ones cannot.
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

function metricsLine(): string {
  const out = seriesOf(metrics.registry.render(), /^(flatnet_cni_calls_total\{|flatnet_cni_calls_in_flight$|flatnet_cni_adds_undone_total$)/);
  const loop = loopDelay.max / 1e6;
  loopDelay.reset();
  return `${JSON.stringify(out)} loop ${loop.toFixed(1)}`;
}

process.on('SIGUSR1', () => process.stdout.write(`metrics ${metricsLine()}\n`));
process.on('SIGTERM', () => {
  void server.stop().then(() => process.exit(0));
});
void server.start().then((ok) => process.stdout.write(ok ? `listening ${server.socketPath ?? ''}\n` : 'not serving\n'));
