// Turns `ip -j` / `bridge -j` output into the agent's kernel-state types. Pure parsing (no I/O),
// kept next to the code that runs the commands because its shape is iproute2's, not ours.
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

/** Canonical prefix for a route destination as `ip` prints it ("default", "10.0.0.5", "10.0.0.0/24"). */
function routeDst(dst: string, family: Family): string | undefined {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  const p = tryParsePrefix(dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`);
  return p ? formatPrefix(p) : undefined;
}

/** Routes of `ip -j -<family> route show table main`; entries that are not unicast prefixes are skipped. */
export function parseRoutes(text: string, family: Family): KernelRoute[] {
  const out: KernelRoute[] = [];
  for (const o of parseArray(text, 'ip route')) {
    const type = str(o, 'type');
    if (type !== undefined && type !== 'unicast') continue;
    const dstText = str(o, 'dst');
    const dst = dstText === undefined ? undefined : routeDst(dstText, family);
    if (dst === undefined) continue;
    const gwText = str(o, 'gateway');
    const gateway = gwText === undefined ? undefined : canonicalIPText(gwText);
    const dev = str(o, 'dev');
    const metric = typeof o.metric === 'number' ? o.metric : undefined;
    const protocol = str(o, 'protocol') ?? (typeof o.protocol === 'number' ? String(o.protocol) : 'boot');
    out.push({
      family,
      dst,
      ...(gateway !== undefined ? { gateway } : {}),
      ...(dev !== undefined ? { dev } : {}),
      onlink: flags(o, 'flags').includes('onlink'),
      protocol,
      ...(metric !== undefined ? { metric } : {}),
    });
  }
  return out;
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
