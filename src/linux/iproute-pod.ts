// Wiring one pod with iproute2, in two processes: one `ip -batch` in the node's namespace (the veth pair
// with the pod end created directly inside the pod's namespace, on the bridge, up) and one inside the pod's
// namespace (addresses, link up, routes). Moving an existing link between namespaces costs 17-20 ms of
// kernel time; creating it in place costs nothing extra. Two spawns are ~7 ms for a whole pod.
import { CommandError, inNetns, run, runOk } from './run.ts';

export interface LinkInfo {
  readonly ifindex: number;
  readonly ifname: string;
  readonly address: string;
  readonly mtu: number;
  readonly master?: string;
  readonly kind?: string;
  readonly linkIndex?: number;
  readonly flags: readonly string[];
  readonly alias?: string;
}

export interface AddrInfo {
  readonly family: 'inet' | 'inet6';
  readonly local: string;
  readonly prefixlen: number;
}

export interface RouteInfo {
  readonly dst: string;
  readonly gateway?: string;
  readonly dev?: string;
  readonly table?: string;
  readonly type?: string;
}

export class LinkExistsError extends Error {
  override readonly name = 'LinkExistsError';
}
export class NoSuchDeviceError extends Error {
  override readonly name = 'NoSuchDeviceError';
}
export class NotABridgeError extends Error {
  override readonly name = 'NotABridgeError';
}
export class NetnsError extends Error {
  override readonly name = 'NetnsError';
}

/** Parses the JSON documents `ip -j -batch` prints, one per command that prints anything. */
function jsonDocs(stdout: string): unknown[][] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('['))
    .map((l) => JSON.parse(l) as unknown[]);
}

function toLink(raw: unknown): LinkInfo {
  const o = raw as Record<string, unknown>;
  const li = o['linkinfo'] as Record<string, unknown> | undefined;
  return {
    ifindex: Number(o['ifindex']),
    ifname: String(o['ifname']),
    address: typeof o['address'] === 'string' ? o['address'] : '',
    mtu: Number(o['mtu']),
    flags: (o['flags'] as string[] | undefined) ?? [],
    ...(typeof o['master'] === 'string' ? { master: o['master'] } : {}),
    ...(typeof li?.['info_kind'] === 'string' ? { kind: li['info_kind'] } : {}),
    ...(typeof o['link_index'] === 'number' ? { linkIndex: o['link_index'] } : {}),
    ...(typeof o['ifalias'] === 'string' ? { alias: o['ifalias'] } : {}),
  };
}

export interface HostSide {
  readonly bridge: string;
  readonly hostVeth: string;
  readonly hostMac: string;
  readonly alias: string;
  readonly mtu: number;
  readonly hairpin: boolean;
  /** Gateway addresses ("10.1.0.1/24") to ensure on the bridge. */
  readonly bridgeAddrs: readonly string[];
}

export interface PodSide {
  readonly netns: string;
  readonly ifname: string;
  readonly mac: string;
  readonly addrs: readonly string[];
  readonly routes: readonly { dst: string; gw?: string }[];
}

function hostBatch(h: HostSide, p: PodSide): string {
  const lines = [
    `link add ${h.hostVeth} mtu ${h.mtu} address ${h.hostMac} master ${h.bridge} up type veth ` +
      `peer name ${p.ifname} netns ${p.netns} mtu ${h.mtu} address ${p.mac}`,
    // The kernel ignores an alias given at creation; it takes one only on an existing link.
    `link set dev ${h.hostVeth} alias ${h.alias}`,
  ];
  if (h.hairpin) lines.push(`link set dev ${h.hostVeth} type bridge_slave hairpin on`);
  for (const a of h.bridgeAddrs) lines.push(`addr replace ${a} dev ${h.bridge}${a.includes(':') ? ' nodad' : ''}`);
  // A plugin killed between ensureBridge's "link add" and its "link set up" leaves the bridge down, and no
  // later ADD would create it again: bring it up on every ADD (a no-op when it is up, in the same batch).
  lines.push(`link set dev ${h.bridge} up`);
  lines.push(`link show dev ${h.bridge}`);
  return lines.join('\n') + '\n';
}

function podBatch(p: PodSide): string {
  const lines = [`link set dev ${p.ifname} up`];
  for (const a of p.addrs) lines.push(`addr add ${a} dev ${p.ifname}${a.includes(':') ? ' nodad' : ''}`);
  for (const r of p.routes) lines.push(`route add ${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${p.ifname}`);
  return lines.join('\n') + '\n';
}

/**
 * Creates the veth pair and configures both ends. Returns the bridge's link info. On failure it removes
 * whatever it created (the pair goes away with its host end) and throws; `ensureBridge` is the caller's job
 * when this throws NoSuchDeviceError for the bridge.
 */
export async function setupPodLink(h: HostSide, p: PodSide): Promise<LinkInfo> {
  const hr = await run(['ip', '-j', '-batch', '-'], { input: hostBatch(h, p) });
  if (hr.code !== 0) {
    // ip names the failing batch line; a parse error of line 1 may exit before saying so.
    const failedLine = Number(/Command failed -:(\d+)/.exec(hr.stderr)?.[1] ?? '1');
    const firstLineFailed = failedLine === 1;
    if (!firstLineFailed) await deleteLink(h.hostVeth);
    const msg = hr.stderr.trim();
    if (firstLineFailed && /File exists/.test(msg)) {
      throw new LinkExistsError(`interface ${p.ifname} or ${h.hostVeth} already exists: ${msg}`);
    }
    if (firstLineFailed && /Cannot find device|does not exist|No such device|Device does not exist/.test(msg) && msg.includes(h.bridge)) {
      throw new NoSuchDeviceError(`bridge ${h.bridge} does not exist`);
    }
    if (firstLineFailed && /netns|namespace|No such file/i.test(msg)) {
      throw new NetnsError(`cannot use network namespace ${p.netns}: ${msg}`);
    }
    if (firstLineFailed) {
      const existing = await showLink(h.bridge);
      if (existing && existing.kind !== 'bridge') throw new NotABridgeError(`"${h.bridge}" already exists but is not a bridge (kind ${existing.kind ?? 'none'})`);
    }
    throw new CommandError(['ip', '-batch', '(host side)'], hr);
  }
  const docs = jsonDocs(hr.stdout);
  const bridge = docs.at(-1)?.[0];
  const pr = await run(inNetns(p.netns, ['ip', '-batch', '-']), { input: podBatch(p) });
  if (pr.code !== 0) {
    await deleteLink(h.hostVeth);
    throw new CommandError(['ip', '-batch', `(in ${p.netns})`], pr);
  }
  if (!bridge) throw new Error(`ip did not report bridge ${h.bridge}`);
  return toLink(bridge);
}

/**
 * Makes sure `name` is an up bridge (creating it with `mtu`). Safe when many processes race to create it:
 * EEXIST from a racing creator is success. An existing link of another kind is an error.
 */
export async function ensureBridge(name: string, mtu: number, mac: string): Promise<LinkInfo> {
  // A bridge without a MAC of its own takes the lowest MAC of its ports and changes it as pods come and go,
  // which makes every pod's neighbour entry for the gateway stale: give it a fixed one at creation.
  const add = await run(['ip', 'link', 'add', name, 'address', mac, 'mtu', String(mtu), 'type', 'bridge']);
  if (add.code !== 0 && !/File exists/.test(add.stderr)) throw new CommandError(['ip', 'link', 'add', name], add);
  const link = await showLink(name);
  if (!link) throw new NoSuchDeviceError(`bridge ${name} vanished while being created`);
  if (link.kind !== 'bridge') throw new NotABridgeError(`"${name}" already exists but is not a bridge (kind ${link.kind ?? 'none'})`);
  if (!link.flags.includes('UP')) await runOk(['ip', 'link', 'set', 'dev', name, 'up']);
  return link;
}

export async function showLink(name: string, netns?: string): Promise<LinkInfo | undefined> {
  const r = await run(inNetns(netns, ['ip', '-j', '-d', 'link', 'show', 'dev', name]));
  if (r.code !== 0) {
    if (/does not exist|Cannot find device/.test(r.stderr)) return undefined;
    throw new CommandError(['ip', 'link', 'show', name], r);
  }
  const first = (JSON.parse(r.stdout) as unknown[])[0];
  return first ? toLink(first) : undefined;
}

/** Deletes a link (and so its veth peer); true when it existed. */
export async function deleteLink(name: string, netns?: string): Promise<boolean> {
  const r = await run(inNetns(netns, ['ip', 'link', 'del', 'dev', name]));
  if (r.code === 0) return true;
  if (/does not exist|Cannot find device/.test(r.stderr)) return false;
  throw new CommandError(['ip', 'link', 'del', name], r);
}

/**
 * Deletes a link and returns the alias it had (undefined when it did not exist): one process, since DEL
 * needs both. `-force` makes the delete run even though the read is a separate command.
 */
export async function deleteLinkReadingAlias(name: string, netns?: string): Promise<string | undefined> {
  const r = await run(inNetns(netns, ['ip', '-j', '-force', '-batch', '-']), { input: `link show dev ${name}\nlink del dev ${name}\n` });
  if (/does not exist|Cannot find device/.test(r.stderr)) return undefined;
  if (r.code !== 0) throw new CommandError(['ip', 'link', 'del', name], r);
  const link = jsonDocs(r.stdout)[0]?.[0];
  return link ? toLink(link).alias : undefined;
}

/** Every link in the namespace whose name starts with `prefix`. */
export async function listLinks(prefix: string, netns?: string): Promise<LinkInfo[]> {
  const r = await runOk(inNetns(netns, ['ip', '-j', '-d', 'link', 'show']));
  return (JSON.parse(r.stdout) as unknown[]).map(toLink).filter((l) => l.ifname.startsWith(prefix));
}

export interface PodView {
  readonly link?: LinkInfo;
  readonly addrs: readonly AddrInfo[];
  readonly routes: readonly RouteInfo[];
}

/** What the pod's namespace holds for `ifname`: the link, its addresses and every route. */
export async function readPodView(netns: string, ifname: string): Promise<PodView> {
  // `addr show` reports the link's details too; a `link show` before it in the same batch would leave a
  // filter behind that hides the addresses (iproute2 does not reset it between batch commands).
  const r = await run(inNetns(netns, ['ip', '-j', '-d', '-force', '-batch', '-']), {
    input: `addr show dev ${ifname}\nroute show table all\n`,
  });
  if (/nsenter:/i.test(r.stderr) && r.stdout === '') {
    throw new NetnsError(`cannot enter network namespace ${netns}: ${r.stderr.trim()}`);
  }
  const docs = jsonDocs(r.stdout);
  const linkMissing = /does not exist|Cannot find device/.test(r.stderr);
  const linkDoc = linkMissing ? undefined : docs[0]?.[0];
  const routeDoc = linkMissing ? docs[0] : docs[1];
  const addrs = (((linkDoc ?? {}) as Record<string, unknown>)['addr_info'] as Record<string, unknown>[] | undefined ?? [])
    .filter((a) => a['scope'] !== 'link')
    .map((a) => ({ family: a['family'] as 'inet' | 'inet6', local: String(a['local']), prefixlen: Number(a['prefixlen']) }));
  const routes = (routeDoc ?? []).map((raw) => {
    const o = raw as Record<string, unknown>;
    return {
      dst: String(o['dst']),
      ...(typeof o['gateway'] === 'string' ? { gateway: o['gateway'] } : {}),
      ...(typeof o['dev'] === 'string' ? { dev: o['dev'] } : {}),
      ...(typeof o['table'] === 'string' ? { table: o['table'] } : {}),
      ...(typeof o['type'] === 'string' ? { type: o['type'] } : {}),
    };
  });
  return { ...(linkDoc ? { link: toLink(linkDoc) } : {}), addrs, routes };
}
