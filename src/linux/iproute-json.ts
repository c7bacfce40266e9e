// Turns `ip -j` / `bridge -j` output, and the one-line text of `ip -o route`, into the agent's kernel-state
// types. Pure parsing (no I/O), kept next to the code that runs the commands because its shape is
// iproute2's, not ours.
import { canonicalIPText, formatPrefix, tryParsePrefix } from '../net/ip.ts';
import type { Family } from '../net/ip.ts';
import type { KernelFdb, KernelNeighbour, KernelRoute } from '../agent/desired.ts';

export class IprouteOutputError extends Error {
  override readonly name = 'IprouteOutputError';
}

type Obj = Record<string, unknown>;

function parseArray(text: string, what: string): Obj[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(trimmed);
  } catch (cause) {
    throw new IprouteOutputError(`unparseable JSON from ${what}`, { cause });
  }
  if (!Array.isArray(v)) throw new IprouteOutputError(`expected a JSON array from ${what}`);
  return v.filter((x): x is Obj => typeof x === 'object' && x !== null);
}

function str(o: Obj, k: string): string | undefined {
  const v = o[k];
  return typeof v === 'string' ? v : undefined;
}

function flags(o: Obj, k: string): string[] {
  const v = o[k];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return typeof v === 'string' ? [v] : [];
}

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
/**
 * IPv4 text already in canonical form, as iproute2 prints it (inet_ntop). Recognising it skips a parse and a
 * format per address: a reconcile reads every route of the main table, ~5,000 at that many peers.
 */
const CANONICAL_V4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const CANONICAL_V4_PREFIX = new RegExp(`^${OCTET}(\\.${OCTET}){3}/(3[0-2]|[12]?[0-9])$`);

function canonicalIP(text: string): string | undefined {
  return CANONICAL_V4.test(text) ? text : canonicalIPText(text);
}

/** Canonical prefix for a route destination as `ip` prints it ("default", "10.0.0.5", "10.0.0.0/24"). */
function routeDst(dst: string, family: Family): string | undefined {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  if (family === 4 && CANONICAL_V4_PREFIX.test(dst)) return dst;
  const p = tryParsePrefix(dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`);
  return p ? formatPrefix(p) : undefined;
}

/** Route types `ip route` prints before the destination of a route that is not unicast (or always, with -d). */
const ROUTE_TYPES = new Set([
  'unicast', 'local', 'broadcast', 'anycast', 'multicast', 'blackhole', 'unreachable', 'prohibit', 'throw', 'nat', 'xresolve',
]);

/**
 * One line of `ip -o -<family> route show table main`, e.g.
 * "10.1.2.0/24 via 172.29.0.12 dev eth0 proto 241 onlink"; undefined for a route that is not a unicast prefix. Text, not `ip -j`: the agent reads every route of the
 * main table on each reconcile, and line by line it keeps only these objects, never ~500 KB of JSON and its
 * parsed copy at 5,000 routes. Only the fields flatnet compares are read; anything else on the line is
 * skipped word by word. A multipath route's hops ("nexthop via ...") are not the route's own gateway or
 * device, as in `ip -j`, where they are a separate "nexthops" list.
 */
export function parseRouteLine(line: string, family: Family): KernelRoute | undefined {
  const words = line.trim().split(/\s+/);
  let i = 0;
  const first = words[0];
  if (first === undefined || first === '') return undefined;
  if (ROUTE_TYPES.has(first)) {
    if (first !== 'unicast') return undefined;
    i++;
  }
  const dstText = words[i++];
  const dst = dstText === undefined ? undefined : routeDst(dstText, family);
  if (dst === undefined) return undefined;
  let gateway: string | undefined;
  let dev: string | undefined;
  let protocol = 'boot';
  let metric: number | undefined;
  let onlink = false;
  for (; i < words.length; i++) {
    const w = words[i];
    if (w === 'nexthop') break;
    const next = words[i + 1];
    if (w === 'via') {
      // "via inet6 ADDR": a gateway of the other family, which `ip -j` reports apart from "gateway".
      if (next !== 'inet' && next !== 'inet6' && next !== undefined) gateway = canonicalIP(next);
      i++;
    } else if (w === 'dev' && next !== undefined) {
      dev = next;
      i++;
    } else if (w === 'proto' && next !== undefined) {
      protocol = next;
      i++;
    } else if (w === 'metric' && next !== undefined) {
      if (/^[0-9]+$/.test(next)) metric = Number(next);
      i++;
    } else if (w === 'onlink') {
      onlink = true;
    }
  }
  const route: { -readonly [K in keyof KernelRoute]: KernelRoute[K] } = { family, dst, onlink, protocol };
  if (gateway !== undefined) route.gateway = gateway;
  if (dev !== undefined) route.dev = dev;
  if (metric !== undefined) route.metric = metric;
  return route;
}

/** Neighbours of `ip -j neigh show dev DEV` (both families). */
export function parseNeighbours(text: string, dev: string): KernelNeighbour[] {
  const out: KernelNeighbour[] = [];
  for (const o of parseArray(text, 'ip neigh')) {
    const ipText = str(o, 'dst');
    const ip = ipText === undefined ? undefined : canonicalIPText(ipText);
    if (ip === undefined) continue;
    const mac = str(o, 'lladdr')?.toLowerCase();
    out.push({
      family: ip.includes(':') ? 6 : 4,
      dev,
      ip,
      ...(mac !== undefined ? { mac } : {}),
      permanent: flags(o, 'state').includes('PERMANENT'),
    });
  }
  return out;
}

/** Entries of `bridge -j fdb show dev DEV`. */
export function parseFdb(text: string, dev: string): KernelFdb[] {
  const out: KernelFdb[] = [];
  for (const o of parseArray(text, 'bridge fdb')) {
    const mac = str(o, 'mac')?.toLowerCase();
    if (mac === undefined) continue;
    const dstText = str(o, 'dst');
    const dst = dstText === undefined ? undefined : canonicalIPText(dstText);
    out.push({ dev, mac, ...(dst !== undefined ? { dst } : {}), permanent: flags(o, 'state').includes('permanent') });
  }
  return out;
}
