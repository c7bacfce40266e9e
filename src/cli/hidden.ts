// The CLI's hidden subcommands: tools the lab runs inside its namespaces. Not in --help.
//   __echo --tcp PORT --udp PORT [--ttl SECONDS]   echo server (prints "listening" once ready)
//   __probe tcp|udp ADDR PORT [--size N]           one probe, prints the reply as JSON
//   __probe --batch                                probes from a JSON list on stdin, JSON list on stdout
//   __release-lease --node N --store embedded --store-dir DIR | --store etcd --etcd-endpoints URL [--lab-root DIR]
//   __kube-apiserver-standin --listen HOST:PORT --token-file F [--cluster-cidr C]... [--node-prefix-v4 N] [--node-prefix-v6 N]
//                                                  the lab's STAND-IN API server (prints "listening" once ready)
//   __kube-node register|delete --node N --kube-api URL --kube-token-file F
//                                                  what a kubelet (register) or an operator (delete) does to a Node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { probe, probeAll, startEcho } from '../lab/echo.ts';
import type { ProbeRequest } from '../lab/echo.ts';
import { releaseLease } from '../lab/release-lease.ts';
import { KubeApiStandin } from '../lab/kube-apiserver-standin.ts';
import { parseListen } from '../agent/options.ts';
import { UsageError } from './usage.ts';
import type { Io } from './usage.ts';

function port(v: string | undefined, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`${flag} must be a port number, got "${v}"`);
  return n;
}

export async function echoCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { tcp: { type: 'string' }, udp: { type: 'string' }, ttl: { type: 'string' } }, strict: true });
  const server = await startEcho(port(values.tcp, '--tcp'), port(values.udp, '--udp'));
  io.out('listening\n');
  // A safety net: an echo server left behind by a crashed verify ends itself.
  const ttl = Number(values.ttl ?? 300);
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ttl * 1000);
    process.once('SIGTERM', () => {
      clearTimeout(t);
      resolve();
    });
  });
  server.close();
  return 0;
}

export async function probeCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: [...argv], options: { size: { type: 'string' }, batch: { type: 'boolean' }, timeout: { type: 'string' } }, strict: true, allowPositionals: true });
  if (values.batch) {
    const reqs = JSON.parse(readFileSync(0, 'utf8')) as ProbeRequest[];
    io.out(JSON.stringify(await probeAll(reqs)) + '\n');
    return 0;
  }
  const [proto, addr, p] = positionals;
  if ((proto !== 'tcp' && proto !== 'udp') || addr === undefined) throw new UsageError('usage: flatnet __probe tcp|udp ADDR PORT [--size N]');
  const size = Number(values.size ?? 64);
  if (!Number.isInteger(size) || size < 0 || size > 60_000) throw new UsageError('--size must be 0..60000');
  const outcome = await probe({ id: 'p', proto, addr, port: port(p, 'PORT'), size, timeoutMs: Number(values.timeout ?? 3000) });
  io.out(JSON.stringify(outcome) + '\n');
  return outcome.ok ? 0 : 1;
}

export async function releaseLeaseCommand(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: { node: { type: 'string' }, store: { type: 'string' }, 'store-dir': { type: 'string' }, 'etcd-endpoints': { type: 'string' }, 'lab-root': { type: 'string' } },
    strict: true,
  });
  if (!values.node) throw new UsageError('--node is required');
  if (values.store === 'embedded' && values['store-dir']) await releaseLease(values.node, { kind: 'embedded', dir: values['store-dir'] });
  else if (values.store === 'etcd' && values['etcd-endpoints']) {
    const labRoot = values['lab-root'];
    await releaseLease(values.node, { kind: 'etcd', endpoints: values['etcd-endpoints'].split(','), ...(labRoot !== undefined ? { labRoot } : {}) });
  }
  else throw new UsageError('use --store embedded --store-dir DIR or --store etcd --etcd-endpoints URL');
  return 0;
}

export async function kubeStandinCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: { listen: { type: 'string' }, 'token-file': { type: 'string' }, 'cluster-cidr': { type: 'string', multiple: true }, 'node-prefix-v4': { type: 'string' }, 'node-prefix-v6': { type: 'string' } },
    strict: true,
  });
  const listen = parseListen(values.listen ?? '');
  if (listen.kind !== 'tcp') throw new UsageError('--listen must be HOST:PORT');
  if (!values['token-file']) throw new UsageError('--token-file is required');
  const token = readFileSync(values['token-file'], 'utf8').trim();
  const cidrs = values['cluster-cidr'] ?? [];
  const network = cidrs.length > 0 ? { clusterCIDRs: cidrs, nodePrefixLength: { 4: Number(values['node-prefix-v4'] ?? 24), 6: Number(values['node-prefix-v6'] ?? 64) } } : undefined;
  const api = new KubeApiStandin(token, network);
  await api.start(listen.host, listen.port);
  io.out('listening\n');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await api.stop();
  return 0;
}

export async function kubeNodeCommand(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: { node: { type: 'string' }, 'kube-api': { type: 'string' }, 'kube-token-file': { type: 'string' } },
    strict: true,
    allowPositionals: true,
  });
  const [verb] = positionals;
  if ((verb !== 'register' && verb !== 'delete') || !values.node || !values['kube-api'] || !values['kube-token-file']) {
    throw new UsageError('usage: flatnet __kube-node register|delete --node N --kube-api URL --kube-token-file F');
  }
  const token = readFileSync(values['kube-token-file'], 'utf8').trim();
  const base = values['kube-api'].replace(/\/$/, '');
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const r =
    verb === 'register'
      ? await fetch(`${base}/api/v1/nodes`, { method: 'POST', headers, body: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: values.node } }), signal: AbortSignal.timeout(5_000) })
      : await fetch(`${base}/api/v1/nodes/${encodeURIComponent(values.node)}`, { method: 'DELETE', headers, signal: AbortSignal.timeout(5_000) });
  // Already there (register) or already gone (delete) is the state wanted.
  if (r.ok || (verb === 'register' && r.status === 409) || (verb === 'delete' && r.status === 404)) return 0;
  throw new Error(`${verb} node ${values.node}: HTTP ${r.status}: ${(await r.text()).slice(0, 300)}`);
}
