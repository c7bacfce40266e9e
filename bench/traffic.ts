// Traffic measurements shared by the data-plane benchmarks: bounded iperf3 runs and ping latency.
import { inNetns, run } from '../src/linux/run.ts';
import { sleep } from './topology.ts';

export const IPERF_PORT = 5201;

export interface Contender<Id extends string = string> {
  readonly id: Id;
  /** Namespace the client runs in. */
  readonly from: string;
  /** Server address. */
  readonly to: string;
  /** Namespace of the server. */
  readonly serverNs: string;
  /** MTU of the sending interface. */
  mtu?: number;
}

export interface IperfRun {
  readonly gbps: number;
  readonly retransmits: number;
  readonly cpuSender: number;
  readonly cpuReceiver: number;
}

export async function iperf(c: Contender, seconds: number): Promise<IperfRun> {
  const argv = inNetns(c.from, ['iperf3', '-c', c.to, '-p', String(IPERF_PORT), '-t', String(seconds), '-O', '1', '-J']);
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await run(argv, { timeoutMs: (seconds + 20) * 1000 });
    last = r.stdout || r.stderr;
    if (r.code !== 0) {
      // "the server is busy running a test": a previous run is still being torn down.
      await sleep(500);
      continue;
    }
    const j = JSON.parse(r.stdout) as {
      end?: {
        sum_received?: { bits_per_second?: number };
        sum_sent?: { retransmits?: number };
        cpu_utilization_percent?: { host_total?: number; remote_total?: number };
      };
    };
    const bps = j.end?.sum_received?.bits_per_second;
    if (bps === undefined) throw new Error(`iperf3 ${c.id}: no result: ${r.stdout.slice(0, 300)}`);
    return {
      gbps: bps / 1e9,
      retransmits: j.end?.sum_sent?.retransmits ?? 0,
      cpuSender: j.end?.cpu_utilization_percent?.host_total ?? Number.NaN,
      cpuReceiver: j.end?.cpu_utilization_percent?.remote_total ?? Number.NaN,
    };
  }
  throw new Error(`iperf3 ${c.id} failed: ${last.slice(0, 500)}`);
}

export async function ping(c: Contender, count: number): Promise<{ rtts: number[]; lost: number }> {
  const r = await run(inNetns(c.from, ['ping', '-n', '-c', String(count), '-i', '0.01', '-W', '1', c.to]), {
    timeoutMs: count * 100 + 10_000,
  });
  const rtts = [...r.stdout.matchAll(/time=([0-9.]+) ms/g)].map((m) => Number(m[1]));
  return { rtts, lost: count - rtts.length };
}

export async function waitReachable(from: string, to: string, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const r = await run(inNetns(from, ['ping', '-n', '-c', '1', '-W', '1', to]));
    if (r.code === 0) return;
    await sleep(200);
  }
  throw new Error(`${from} cannot reach ${to} after ${timeoutMs} ms`);
}

