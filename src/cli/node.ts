// Commands for a real node (not the lab): what the agent says about itself, and what the plugin's IPAM holds
// with the host veth each reservation should have (a reservation without one is a leak GC would remove).
import { request } from 'node:http';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DiskStore } from '../ipam/disk-store.ts';
import { DEFAULT_DATA_DIR } from '../ipam/disk-store.ts';
import { listLinks } from '../linux/iproute-pod.ts';
import { parseListen } from '../agent/options.ts';
import { HOST_VETH_PREFIX, hostVethName } from '../plugin/names.ts';
import { type Io, UsageError } from './usage.ts';

export const AGENT_USAGE = `usage: flatnet agent status|metrics|ready [--listen ADDR]

Asks the node's flatnetd (its --listen address: HOST:PORT or unix:/path; default 127.0.0.1:9642).
`;

export const IPAM_USAGE = `usage: flatnet ipam [--data-dir DIR] [--network NAME] [--netns NS] [--json]

Lists the plugin's reservations (host-local format) and whether each one's host veth exists in the node's
namespace (--netns NS to look in another namespace). "no veth" marks a leak that CNI GC would remove.
`;

function fetchAgent(listen: string, path: string): Promise<{ status: number; body: string }> {
  const addr = parseListen(listen);
  return new Promise((resolve, reject) => {
    const req = request(
      { ...(addr.kind === 'unix' ? { socketPath: addr.path } : { host: addr.host, port: addr.port }), path, method: 'GET', timeout: 3000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from flatnetd at ${listen}`)));
    req.on('error', (e) => reject(new Error(`cannot reach flatnetd at ${listen}: ${e.message}`)));
    req.end();
  });
}

export async function agentCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: [...argv], allowPositionals: true, options: { listen: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    io.out(AGENT_USAGE);
    return 0;
  }
  const what = positionals[0];
  const path = what === 'status' ? '/status' : what === 'metrics' ? '/metrics' : what === 'ready' ? '/readyz' : undefined;
  if (!path || positionals.length > 1) throw new UsageError(`flatnet agent: expected status, metrics or ready\n${AGENT_USAGE}`);
  const r = await fetchAgent(values.listen ?? '127.0.0.1:9642', path);
  io.out(r.body);
  return r.status === 200 ? 0 : 1;
}

export async function ipamCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: { 'data-dir': { type: 'string' }, network: { type: 'string' }, netns: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    io.out(IPAM_USAGE);
    return 0;
  }
  const dataDir = values['data-dir'] ?? DEFAULT_DATA_DIR;
  let networks: string[];
  try {
    networks = values.network !== undefined ? [values.network] : readdirSync(dataDir).sort();
  } catch (e) {
    throw new Error(`cannot read ${dataDir}: ${(e as Error).message}`);
  }
  const veths = new Set((await listLinks(HOST_VETH_PREFIX, values.netns)).map((l) => l.ifname));
  const rows = networks.flatMap((network) =>
    new DiskStore(dataDir, network).list().map((r) => {
      const veth = r.owner.ifname ? hostVethName(r.owner.containerID, r.owner.ifname) : '';
      return { network, ip: r.ip, containerID: r.owner.containerID, ifname: r.owner.ifname, hostVeth: veth, vethPresent: veth !== '' && veths.has(veth) };
    }),
  );
  if (values.json) {
    io.out(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (rows.length === 0) {
    io.out(`no reservations under ${join(dataDir, values.network ?? '')}\n`);
    return 0;
  }
  const table = [['NETWORK', 'ADDRESS', 'CONTAINER', 'IFNAME', 'HOST VETH'], ...rows.map((r) => [r.network, r.ip, r.containerID.slice(0, 16), r.ifname, r.vethPresent ? r.hostVeth : 'no veth (leak? see GC)'])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table) io.out(row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
  return 0;
}
