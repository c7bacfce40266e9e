// What a CNI runtime (libcni, used by containerd, CRI-O and podman) puts on each plugin's stdin and in its
// environment, and the result cache it keeps between ADD and DEL -- pure, so the lab calls the plugin
// exactly the way a runtime does and the tests can compare with libcni's rules:
//  - per plugin: the plugin's own object from the list, with the list's `name` and `cniVersion` injected,
//    `prevResult` = the previous plugin's result (not for the first ADD), and `runtimeConfig` holding only
//    the capability arguments the plugin declared in `capabilities` (omitted when none apply);
//  - ADD in list order, DEL in reverse order, every DEL plugin getting the cached final ADD result
//    (cniVersion >= 0.4.0);
//  - the cache `<cacheDir>/results/<network>-<containerID>-<ifname>`: {"kind":"cniCacheV1", ...} with the
//    list's bytes base64-encoded (Go marshals []byte that way).
import { join } from 'node:path';

export class ConflistError extends Error {
  override readonly name = 'ConflistError';
}

export interface PluginConf {
  readonly type: string;
  readonly raw: Record<string, unknown>;
}

export interface Conflist {
  readonly name: string;
  readonly cniVersion: string;
  readonly plugins: readonly PluginConf[];
  /** The file's bytes, as libcni keeps them for the cache. */
  readonly bytes: string;
}

export interface RuntimeConf {
  readonly containerID: string;
  readonly netns: string;
  readonly ifname: string;
  /** CNI_ARGS pairs, e.g. [["IgnoreUnknown","1"],["K8S_POD_NAME","web"]]. */
  readonly args: readonly (readonly [string, string])[];
  /** Capability arguments (portMappings, bandwidth, ...); a plugin sees only those it declares. */
  readonly capabilityArgs: Readonly<Record<string, unknown>>;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parses a .conflist as libcni's NetworkConfFromBytes does (the checks that matter to the lab). */
export function parseConflist(bytes: string): Conflist {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes);
  } catch (cause) {
    throw new ConflistError('conflist is not JSON', { cause });
  }
  if (!isObj(raw)) throw new ConflistError('conflist is not a JSON object');
  const name = raw['name'];
  if (typeof name !== 'string' || name === '') throw new ConflistError('no name');
  const cniVersion = raw['cniVersion'] ?? '';
  if (typeof cniVersion !== 'string') throw new ConflistError('cniVersion must be a string');
  const plugins = raw['plugins'];
  if (!Array.isArray(plugins)) throw new ConflistError(`error parsing configuration list: no 'plugins' key`);
  if (plugins.length === 0) throw new ConflistError('no plugins in list');
  return {
    name,
    cniVersion,
    bytes,
    plugins: plugins.map((p: unknown, i) => {
      if (!isObj(p) || typeof p['type'] !== 'string' || p['type'] === '') throw new ConflistError(`plugin ${i} has no type`);
      if (p['type'].includes('/')) throw new ConflistError(`invalid plugin name: ${p['type']}`);
      return { type: p['type'], raw: p };
    }),
  };
}

/** The stdin for one plugin (libcni buildOneConfig + injectRuntimeConfig). */
export function buildPluginConfig(list: Conflist, plugin: PluginConf, prevResult: unknown, rt: RuntimeConf): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin.raw, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined && prevResult !== null) conf['prevResult'] = prevResult;
  const caps = plugin.raw['capabilities'];
  const runtimeConfig: Record<string, unknown> = {};
  if (isObj(caps)) {
    for (const [cap, supported] of Object.entries(caps)) {
      if (supported === true && Object.hasOwn(rt.capabilityArgs, cap)) runtimeConfig[cap] = rt.capabilityArgs[cap];
    }
  }
  if (Object.keys(runtimeConfig).length > 0) conf['runtimeConfig'] = runtimeConfig;
  return conf;
}

export type Verb = 'ADD' | 'DEL' | 'CHECK';

/** The CNI_* variables (libcni Args.AsEnv) on top of the runtime's own environment. */
export function pluginEnv(base: Readonly<Record<string, string | undefined>>, verb: Verb, rt: RuntimeConf, cniPath: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  Object.assign(env, {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: rt.containerID,
    CNI_NETNS: rt.netns,
    CNI_ARGS: rt.args.map(([k, v]) => `${k}=${v}`).join(';'),
    CNI_IFNAME: rt.ifname,
    CNI_PATH: cniPath.join(':'),
  });
  return env;
}

/** Kubernetes runtimes send these CNI_ARGS for every pod sandbox. */
export function kubernetesArgs(podName: string, containerID: string, podUID: string): [string, string][] {
  return [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', 'default'],
    ['K8S_POD_NAME', podName],
    ['K8S_POD_INFRA_CONTAINER_ID', containerID],
    ['K8S_POD_UID', podUID],
  ];
}

export function cacheFilePath(cacheDir: string, network: string, containerID: string, ifname: string): string {
  return join(cacheDir, 'results', `${network}-${containerID}-${ifname}`);
}

export interface CacheEntry {
  readonly kind: 'cniCacheV1';
  readonly containerId: string;
  /** base64 of the conflist bytes. */
  readonly config: string;
  readonly ifName: string;
  readonly networkName: string;
  readonly netns: string;
  readonly cniArgs?: readonly (readonly [string, string])[];
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
  readonly result?: unknown;
}

export function renderCacheEntry(list: Conflist, rt: RuntimeConf, result: unknown): string {
  const entry: CacheEntry = {
    kind: 'cniCacheV1',
    containerId: rt.containerID,
    config: Buffer.from(list.bytes, 'utf8').toString('base64'),
    ifName: rt.ifname,
    networkName: list.name,
    netns: rt.netns,
    ...(rt.args.length ? { cniArgs: rt.args } : {}),
    ...(Object.keys(rt.capabilityArgs).length ? { capabilityArgs: rt.capabilityArgs } : {}),
    ...(result !== undefined ? { result } : {}),
  };
  return JSON.stringify(entry);
}

export function parseCacheEntry(text: string): CacheEntry {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ConflistError('cache entry is not JSON', { cause });
  }
  if (!isObj(raw) || raw['kind'] !== 'cniCacheV1' || typeof raw['containerId'] !== 'string' || typeof raw['config'] !== 'string') {
    throw new ConflistError('cache entry is not a cniCacheV1 record');
  }
  return raw as unknown as CacheEntry;
}

/** The conflist an attachment was added with, from its cache entry (DEL uses it, like libcni's GetCachedConfig). */
export function cachedConflist(entry: CacheEntry): Conflist {
  return parseConflist(Buffer.from(entry.config, 'base64').toString('utf8'));
}

/** DEL gets prevResult only from cniVersion 0.4.0 on. */
export function delGetsPrevResult(cniVersion: string): boolean {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(cniVersion);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > 0 || min >= 4;
}

/** The pod's addresses (no prefix length) from an ADD result, IPv4 first. */
export function resultIPs(result: Record<string, unknown>): string[] {
  const ips = Array.isArray(result['ips']) ? (result['ips'] as { address?: unknown }[]) : [];
  const out = ips.map((i) => (typeof i.address === 'string' ? i.address.split('/')[0]! : '')).filter(Boolean);
  return [...out.filter((a) => !a.includes(':')), ...out.filter((a) => a.includes(':'))];
}
