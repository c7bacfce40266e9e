// The node's CNI network configuration for flatnet-cni, rendered from the lease and written
// atomically (temp file in the same directory, then rename) only when its content changed, so the
// runtime never reads a half-written file and an unchanged agent restart touches nothing.
import { randomBytes } from 'node:crypto';
import { chmod, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { formatPrefix, isNetwork, tryParsePrefix } from '../net/ip.ts';

export class CniConfigError extends Error {
  override readonly name = 'CniConfigError';
}

export interface ConflistInput {
  /** Network name (the conflist's `name`). */
  readonly name: string;
  readonly mtu: number;
  /** This node's pod subnets (at most one per family). */
  readonly podCIDRs: readonly string[];
  readonly clusterCIDRs: readonly string[];
  /** Chain the reference portmap plugin for hostPort support. */
  readonly portmap: boolean;
  readonly bridge?: string;
  /** The plugin's reservation directory (ipam.dataDir); the plugin's default when absent. */
  readonly ipamDataDir?: string;
}

function canonical(texts: readonly string[], what: string): string[] {
  return texts.map((t) => {
    const p = tryParsePrefix(t);
    if (!p || !isNetwork(p)) throw new CniConfigError(`invalid ${what} "${t}"`);
    return formatPrefix(p);
  });
}

export function renderConflist(input: ConflistInput): string {
  if (!Number.isInteger(input.mtu) || input.mtu < 576) throw new CniConfigError(`invalid MTU ${input.mtu}`);
  const pods = canonical(input.podCIDRs, 'pod CIDR');
  const clusters = canonical(input.clusterCIDRs, 'cluster CIDR');
  // IPv4 range first: runtimes report the first IP as the pod's primary address.
  const ordered = [...pods.filter((p) => !p.includes(':')), ...pods.filter((p) => p.includes(':'))];
  const conf = {
    // 1.0.0 for runtimes whose libcni stops there (containerd 1.6/1.7, podman 4, CRI-O on Debian's
    // libcni 1.1.2: they fail on a 1.1.0 result); newer libcni picks 1.1.0 (STATUS, GC) from cniVersions.
    cniVersion: '1.0.0',
    cniVersions: ['1.0.0', '1.1.0'],
    name: input.name,
    plugins: [
      {
        type: 'flatnet',
        bridge: input.bridge ?? 'flat0',
        mtu: input.mtu,
        isGateway: true,
        isDefaultGateway: true,
        hairpinMode: true,
        ipam: {
          ranges: ordered.map((subnet) => [{ subnet }]),
          routes: clusters.map((dst) => ({ dst })),
          ...(input.ipamDataDir !== undefined ? { dataDir: input.ipamDataDir } : {}),
        },
      },
      ...(input.portmap ? [{ type: 'portmap', capabilities: { portMappings: true }, snat: true }] : []),
    ],
  };
  return `${JSON.stringify(conf, null, 2)}\n`;
}

/** Writes `content` to `path` (mode 0644) unless it already holds exactly that; returns whether it wrote. */
export async function ensureConflistFile(path: string, content: string): Promise<boolean> {
  try {
    if ((await readFile(path, 'utf8')) === content) return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CniConfigError(`cannot read ${path}`, { cause: e });
  }
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.flatnet.tmp`);
  try {
    await writeFile(tmp, content, { mode: 0o644 });
    await chmod(tmp, 0o644); // writeFile's mode is masked by the umask
    await rename(tmp, path);
  } catch (cause) {
    await rm(tmp, { force: true });
    throw new CniConfigError(`cannot write ${path}`, { cause });
  }
  return true;
}
