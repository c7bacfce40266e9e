// The ADD result, held internally in the 1.1.0 shape and converted on output to exactly the format of
// the version the runtime asked for. prevResult of any supported version is read back into the same shape.
import { tryParseIP, tryParsePrefix } from '../net/ip.ts';
import { CniError, ErrorCode } from './errors.ts';
import { versionAtLeast } from './version.ts';

export interface ResultInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface ResultIP {
  /** "10.1.0.5/24": the address with the subnet's prefix length. */
  address: string;
  gateway?: string;
  interface?: number;
}

export interface ResultRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIP[];
  routes?: ResultRoute[];
  dns?: DNS;
}

function hasDns(d: DNS | undefined): d is DNS {
  return !!d && Object.values(d).some((v) => (Array.isArray(v) ? v.length > 0 : v !== undefined && v !== ''));
}

/** Renders `r` in the format of `version` (one of the supported versions). */
export function formatResult(r: Result, version: string): Record<string, unknown> {
  const v11 = versionAtLeast(version, '1.1.0');
  const v10 = versionAtLeast(version, '1.0.0');
  const out: Record<string, unknown> = { cniVersion: version };
  if (r.interfaces && r.interfaces.length > 0) {
    out['interfaces'] = r.interfaces.map((i) => {
      const o: Record<string, unknown> = { name: i.name };
      if (i.mac) o['mac'] = i.mac;
      if (v11 && i.mtu) o['mtu'] = i.mtu;
      if (i.sandbox) o['sandbox'] = i.sandbox;
      if (v11 && i.socketPath) o['socketPath'] = i.socketPath;
      if (v11 && i.pciID) o['pciID'] = i.pciID;
      return o;
    });
  }
  if (r.ips && r.ips.length > 0) {
    out['ips'] = r.ips.map((ip) => {
      const o: Record<string, unknown> = {};
      // 0.3.x and 0.4.0 require the family of each address.
      if (!v10) o['version'] = ip.address.includes(':') ? '6' : '4';
      o['address'] = ip.address;
      if (ip.gateway) o['gateway'] = ip.gateway;
      if (ip.interface !== undefined) o['interface'] = ip.interface;
      return o;
    });
  }
  if (r.routes && r.routes.length > 0) {
    out['routes'] = r.routes.map((rt) => {
      const o: Record<string, unknown> = { dst: rt.dst };
      if (rt.gw) o['gw'] = rt.gw;
      if (v11) {
        if (rt.mtu) o['mtu'] = rt.mtu;
        if (rt.advmss) o['advmss'] = rt.advmss;
        if (rt.priority) o['priority'] = rt.priority;
        if (rt.table !== undefined) o['table'] = rt.table;
        if (rt.scope !== undefined) o['scope'] = rt.scope;
      }
      return o;
    });
  }
  if (hasDns(r.dns)) out['dns'] = r.dns;
  return out;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(field: string, why: string): CniError {
  return new CniError(ErrorCode.DecodingFailure, `failed to decode ${field}: ${why}`);
}

/**
 * Reads a result (prevResult, or a delegated IPAM plugin's output) of any supported version into the internal
 * shape. `field` names where it came from in error messages.
 */
export function parseResult(raw: unknown, field: string): Result {
  if (!isObject(raw)) throw bad(field, 'not an object');
  const version = raw['cniVersion'];
  if (typeof version !== 'string') throw bad(`${field}.cniVersion`, 'missing or not a string');
  const r: Result = { cniVersion: version };
  const ifs = raw['interfaces'];
  if (ifs !== undefined) {
    if (!Array.isArray(ifs)) throw bad(`${field}.interfaces`, 'not a list');
    r.interfaces = ifs.map((i: unknown, n) => {
      if (!isObject(i) || typeof i['name'] !== 'string') throw bad(`${field}.interfaces[${n}].name`, 'missing');
      const o: ResultInterface = { name: i['name'] };
      if (typeof i['mac'] === 'string') o.mac = i['mac'];
      if (typeof i['mtu'] === 'number') o.mtu = i['mtu'];
      if (typeof i['sandbox'] === 'string') o.sandbox = i['sandbox'];
      if (typeof i['socketPath'] === 'string') o.socketPath = i['socketPath'];
      if (typeof i['pciID'] === 'string') o.pciID = i['pciID'];
      return o;
    });
  }
  const ips = raw['ips'];
  if (ips !== undefined) {
    if (!Array.isArray(ips)) throw bad(`${field}.ips`, 'not a list');
    r.ips = ips.map((ip: unknown, n) => {
      if (!isObject(ip) || typeof ip['address'] !== 'string' || !tryParsePrefix(ip['address'])) {
        throw bad(`${field}.ips[${n}].address`, 'missing or not an address/prefix');
      }
      const o: ResultIP = { address: ip['address'] };
      if (ip['gateway'] !== undefined) {
        if (typeof ip['gateway'] !== 'string' || !tryParseIP(ip['gateway'])) throw bad(`${field}.ips[${n}].gateway`, 'not an address');
        o.gateway = ip['gateway'];
      }
      if (ip['interface'] !== undefined) {
        if (typeof ip['interface'] !== 'number' || !Number.isInteger(ip['interface']) || ip['interface'] < 0) {
          throw bad(`${field}.ips[${n}].interface`, 'not an index');
        }
        o.interface = ip['interface'];
      }
      return o;
    });
  }
  const routes = raw['routes'];
  if (routes !== undefined) {
    if (!Array.isArray(routes)) throw bad(`${field}.routes`, 'not a list');
    r.routes = routes.map((rt: unknown, n) => parseRoute(rt, `${field}.routes[${n}]`, ErrorCode.DecodingFailure));
  }
  if (isObject(raw['dns'])) r.dns = raw['dns'];
  return r;
}

export function parseRoute(rt: unknown, field: string, code: number): ResultRoute {
  const fail = (why: string) => new CniError(code, `${field}: ${why}`);
  if (!isObject(rt) || typeof rt['dst'] !== 'string' || !tryParsePrefix(rt['dst'])) throw fail('"dst" missing or not a CIDR');
  const o: ResultRoute = { dst: rt['dst'] };
  if (rt['gw'] !== undefined) {
    if (typeof rt['gw'] !== 'string' || !tryParseIP(rt['gw'])) throw fail('"gw" is not an address');
    o.gw = rt['gw'];
  }
  for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
    const v = rt[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw fail(`"${k}" must be a non-negative integer`);
    o[k] = v;
  }
  return o;
}
