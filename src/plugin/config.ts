// flatnet-cni's network configuration: parsed from unknown JSON into a typed value, strictly. Unknown keys
// are refused with code 2 naming the key (a typo such as "isgateway" must not silently change behaviour);
// the keys libcni and the spec reserve (capabilities, runtimeConfig, args, prevResult, cni.dev/*) pass.
import { CniError, ErrorCode, invalidConfig, unsupportedField } from '../cni/errors.ts';
import { validateInterfaceName } from '../cni/identifiers.ts';
import { MAC_ADDRESS } from '../cni/args.ts';
import { type DNS, type Result, type ResultRoute, parseResult, parseRoute } from '../cni/result.ts';
import { tryParseIP } from '../net/ip.ts';
import { type RangeSet, RangeConfigError, parseRangeSets } from '../ipam/ranges.ts';
import { DEFAULT_DATA_DIR } from '../ipam/disk-store.ts';

export const DEFAULT_BRIDGE = 'flat0';
export const DEFAULT_MTU = 1500;

export interface BuiltinIpam {
  readonly kind: 'builtin';
  readonly sets: readonly RangeSet[];
  readonly routes: readonly ResultRoute[];
  readonly dataDir: string;
}

export interface DelegatedIpam {
  readonly kind: 'delegated';
  readonly type: string;
}

export interface Attachment {
  readonly containerID: string;
  readonly ifname: string;
}

export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly bridge: string;
  readonly mtu: number;
  readonly isGateway: boolean;
  readonly isDefaultGateway: boolean;
  readonly hairpinMode: boolean;
  /** Drop frames from a pod whose source MAC or address is not its own (default on). */
  readonly antiSpoofing: boolean;
  readonly dns?: DNS;
  readonly ipam: BuiltinIpam | DelegatedIpam;
  readonly runtimeIPs: readonly string[];
  readonly runtimeMac?: string;
  readonly argsIPs: readonly string[];
  readonly argsMac?: string;
  readonly prevResult?: Result;
  /** GC's list of live attachments; undefined when the runtime sent no list (GC then does nothing). */
  readonly validAttachments?: readonly Attachment[];
}

const TOP_KEYS = new Set([
  'cniVersion', 'name', 'type', 'bridge', 'mtu', 'isGateway', 'isDefaultGateway', 'hairpinMode', 'dns', 'ipam',
  'capabilities', 'runtimeConfig', 'args', 'prevResult', 'cni.dev/valid-attachments', 'cni.dev/attachments', 'ipMasq', 'antiSpoofing',
]);
const IPAM_KEYS = new Set(['type', 'ranges', 'subnet', 'rangeStart', 'rangeEnd', 'gateway', 'routes', 'dataDir']);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bool(c: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = c[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalidConfig(`field "${key}" must be true or false`, `got ${JSON.stringify(v)}`);
  return v;
}

function stringList(v: unknown, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw invalidConfig(`field "${field}" must be a list of strings`);
  return v;
}

/** A requested address may come as "10.1.0.5" or "10.1.0.5/24" (runtimeConfig.ips uses the latter). */
export function requestedAddress(text: string, field: string): string {
  const bare = text.includes('/') ? text.slice(0, text.indexOf('/')) : text;
  if (!tryParseIP(bare)) throw new CniError(ErrorCode.InvalidConfig, `${field}: "${text.slice(0, 100)}" is not an IP address`);
  return bare;
}

export function validateDataDir(v: unknown): string {
  if (typeof v !== 'string' || v === '') throw invalidConfig('field "ipam.dataDir" must be a non-empty string');
  if (!v.startsWith('/') || v.includes('\0') || v.split('/').includes('..') || v.length > 1024 || /[\u0000-\u001f\u007f]/u.test(v)) {
    throw invalidConfig('field "ipam.dataDir" must be an absolute path without ".." or control characters', JSON.stringify(v.slice(0, 200)));
  }
  return v;
}

function parseDns(v: unknown): DNS | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw invalidConfig('field "dns" must be an object');
  const dns: DNS = {};
  for (const k of Object.keys(v)) {
    if (!['nameservers', 'domain', 'search', 'options'].includes(k)) throw unsupportedField(`dns.${k}`, v[k]);
  }
  const ns = stringList(v['nameservers'], 'dns.nameservers');
  ns.forEach((n, i) => {
    if (!tryParseIP(n)) throw invalidConfig(`field "dns.nameservers[${i}]" is not an IP address`, JSON.stringify(n));
  });
  if (ns.length) dns.nameservers = ns;
  if (v['domain'] !== undefined) {
    if (typeof v['domain'] !== 'string') throw invalidConfig('field "dns.domain" must be a string');
    dns.domain = v['domain'];
  }
  const search = stringList(v['search'], 'dns.search');
  if (search.length) dns.search = search;
  const options = stringList(v['options'], 'dns.options');
  if (options.length) dns.options = options;
  return dns;
}

function parseIpam(v: unknown): BuiltinIpam | DelegatedIpam {
  if (!isObject(v)) throw invalidConfig('IPAM config missing "ipam" key (an object)');
  if (v['type'] !== undefined) {
    const t = v['type'];
    if (typeof t !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(t)) {
      throw invalidConfig('field "ipam.type" must be a plugin name (letters, digits, "_", ".", "-")', JSON.stringify(t));
    }
    return { kind: 'delegated', type: t };
  }
  for (const k of Object.keys(v)) if (!IPAM_KEYS.has(k)) throw unsupportedField(`ipam.${k}`, v[k]);
  let rawSets: unknown[] = [];
  if (v['ranges'] !== undefined) {
    if (!Array.isArray(v['ranges'])) throw invalidConfig('field "ipam.ranges" must be a list of range sets');
    rawSets = [...(v['ranges'] as unknown[])];
  }
  if (v['subnet'] !== undefined) {
    // host-local's legacy single range, prepended as the first range set.
    const legacy: Record<string, unknown> = { subnet: v['subnet'] };
    for (const k of ['rangeStart', 'rangeEnd', 'gateway']) if (v[k] !== undefined) legacy[k] = v[k];
    rawSets.unshift([legacy]);
  }
  let sets: RangeSet[];
  try {
    sets = parseRangeSets(rawSets);
  } catch (e) {
    if (e instanceof RangeConfigError) throw invalidConfig(e.message);
    throw e;
  }
  if (v['routes'] !== undefined && !Array.isArray(v['routes'])) throw invalidConfig('field "ipam.routes" must be a list');
  const routes = ((v['routes'] as unknown[] | undefined) ?? []).map((r, i) => parseRoute(r, `ipam.routes[${i}]`, ErrorCode.InvalidConfig));
  const dataDir = v['dataDir'] === undefined ? DEFAULT_DATA_DIR : validateDataDir(v['dataDir']);
  return { kind: 'builtin', sets, routes, dataDir };
}

function parseAttachments(v: unknown, field: string): Attachment[] {
  if (!Array.isArray(v)) throw invalidConfig(`field "${field}" must be a list`);
  return v.map((a: unknown, i) => {
    if (!isObject(a) || typeof a['containerID'] !== 'string' || typeof a['ifname'] !== 'string') {
      throw invalidConfig(`field "${field}[${i}]" must be {containerID, ifname}`);
    }
    return { containerID: a['containerID'], ifname: a['ifname'] };
  });
}

export function parseNetConf(c: Record<string, unknown>, cniVersion: string): NetConf {
  for (const k of Object.keys(c)) {
    if (!TOP_KEYS.has(k) && !k.startsWith('cni.dev/')) throw unsupportedField(k, c[k]);
  }
  if (c['ipMasq'] !== undefined && c['ipMasq'] !== false) {
    throw new CniError(ErrorCode.UnsupportedField, 'unsupported field "ipMasq": masquerade is done once per node by flatnetd, not per pod', `value: ${JSON.stringify(c['ipMasq'])}`);
  }
  const bridge = c['bridge'] ?? DEFAULT_BRIDGE;
  if (typeof bridge !== 'string') throw invalidConfig('field "bridge" must be a string');
  try {
    validateInterfaceName(bridge);
  } catch (e) {
    throw invalidConfig(`field "bridge": ${(e as Error).message.replace(/^CNI_IFNAME: /, '')}`, JSON.stringify(bridge));
  }
  const mtu = c['mtu'] ?? DEFAULT_MTU;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw invalidConfig('field "mtu" must be an integer between 68 and 65535', JSON.stringify(mtu));
  }
  const isDefaultGateway = bool(c, 'isDefaultGateway', true);
  // isDefaultGateway implies isGateway, as in the reference bridge plugin.
  const isGateway = bool(c, 'isGateway', true) || isDefaultGateway;
  const ipam = parseIpam(c['ipam']);
  if (ipam.kind === 'builtin' && mtu < 1280 && ipam.sets.some((s) => s.family === 6)) {
    throw invalidConfig('field "mtu": IPv6 needs an MTU of at least 1280', String(mtu));
  }

  const rc = c['runtimeConfig'];
  if (rc !== undefined && !isObject(rc)) throw invalidConfig('field "runtimeConfig" must be an object');
  const runtimeIPs = stringList(rc?.['ips'], 'runtimeConfig.ips').map((s, i) => requestedAddress(s, `runtimeConfig.ips[${i}]`));
  const runtimeMac = rc?.['mac'];
  if (runtimeMac !== undefined && (typeof runtimeMac !== 'string' || !MAC_ADDRESS.test(runtimeMac))) {
    throw invalidConfig('field "runtimeConfig.mac" must be a MAC address "aa:bb:cc:dd:ee:ff"', JSON.stringify(runtimeMac));
  }
  const args = c['args'];
  if (args !== undefined && !isObject(args)) throw invalidConfig('field "args" must be an object');
  const argsCni = args?.['cni'];
  if (argsCni !== undefined && !isObject(argsCni)) throw invalidConfig('field "args.cni" must be an object');
  const argsIPs = stringList(argsCni?.['ips'], 'args.cni.ips').map((s, i) => requestedAddress(s, `args.cni.ips[${i}]`));
  const argsMac = argsCni?.['mac'];
  if (argsMac !== undefined && (typeof argsMac !== 'string' || !MAC_ADDRESS.test(argsMac))) {
    throw invalidConfig('field "args.cni.mac" must be a MAC address', JSON.stringify(argsMac));
  }
  const prev = c['prevResult'];
  const validRaw = c['cni.dev/valid-attachments'] ?? c['cni.dev/attachments'];
  const dns = parseDns(c['dns']);
  return {
    cniVersion,
    name: c['name'] as string,
    bridge,
    mtu,
    isGateway,
    isDefaultGateway,
    hairpinMode: bool(c, 'hairpinMode', false),
    antiSpoofing: bool(c, 'antiSpoofing', true),
    ipam,
    runtimeIPs,
    argsIPs,
    ...(dns ? { dns } : {}),
    ...(typeof runtimeMac === 'string' ? { runtimeMac } : {}),
    ...(typeof argsMac === 'string' ? { argsMac } : {}),
    ...(prev !== undefined && prev !== null ? { prevResult: parseResult(prev, 'prevResult') } : {}),
    ...(validRaw !== undefined ? { validAttachments: parseAttachments(validRaw, c['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments') } : {}),
  };
}
