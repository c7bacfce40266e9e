// The lab's container runtime side of CNI: loads the node's conflist (written by its agent), runs each
// plugin inside the node's namespace (where a real runtime and the node's bridge live) with the libcni
// environment and per-plugin stdin from libcni.ts, keeps the result cache, and deletes in reverse order
// with the cached result as prevResult.
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { inNetns, run } from '../linux/run.ts';
import {
  type Conflist,
  type RuntimeConf,
  type Verb,
  buildPluginConfig,
  cacheFilePath,
  cachedConflist,
  delGetsPrevResult,
  parseCacheEntry,
  parseConflist,
  pluginEnv,
  renderCacheEntry,
} from './libcni.ts';

export class CniCallError extends Error {
  override readonly name = 'CniCallError';
}

export interface CniHost {
  /** The node namespace the plugins run in. */
  readonly nodeNetns: string;
  readonly confDir: string;
  readonly cacheDir: string;
  /** Directories searched for plugin executables, in order. */
  readonly cniPath: readonly string[];
}

/** The lexically first *.conflist in confDir (containerd's rule); undefined when there is none yet. */
export async function loadConflist(confDir: string): Promise<Conflist | undefined> {
  let names: string[];
  try {
    names = (await readdir(confDir)).filter((n) => n.endsWith('.conflist')).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const first = names[0];
  if (first === undefined) return undefined;
  return parseConflist(await readFile(join(confDir, first), 'utf8'));
}

async function findPlugin(type: string, cniPath: readonly string[]): Promise<string> {
  for (const dir of cniPath) {
    const p = join(dir, type);
    try {
      if ((await stat(p)).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  throw new CniCallError(`failed to find plugin "${type}" in path [${cniPath.join(' ')}]`);
}

async function execPlugin(host: CniHost, verb: Verb, type: string, conf: Record<string, unknown>, rt: RuntimeConf): Promise<unknown> {
  const exe = await findPlugin(type, host.cniPath);
  const env = pluginEnv(process.env, verb, rt, host.cniPath);
  const r = await run(inNetns(host.nodeNetns, [exe]), { input: JSON.stringify(conf), env, timeoutMs: 60_000 });
  if (r.code !== 0) {
    let msg = r.stderr.trim() || `exit status ${r.code}`;
    try {
      const e = JSON.parse(r.stdout) as { code?: unknown; msg?: unknown; details?: unknown };
      msg = `code ${String(e.code)}: ${String(e.msg)}${typeof e.details === 'string' && e.details ? ` (${e.details})` : ''}`;
    } catch {
      /* not JSON: stderr says it */
    }
    throw new CniCallError(`plugin type="${type}" failed (${verb.toLowerCase()}): ${msg}`);
  }
  if (verb !== 'ADD') return undefined;
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    throw new CniCallError(`plugin type="${type}" printed an undecodable ADD result: ${r.stdout.slice(0, 200)}`);
  }
}

/** ADD through the whole list, then the cache entry; returns the final result. */
export async function addNetworkList(host: CniHost, list: Conflist, rt: RuntimeConf): Promise<Record<string, unknown>> {
  let result: unknown;
  for (const plugin of list.plugins) {
    result = await execPlugin(host, 'ADD', plugin.type, buildPluginConfig(list, plugin, result, rt), rt);
  }
  const file = cacheFilePath(host.cacheDir, list.name, rt.containerID, rt.ifname);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, renderCacheEntry(list, rt, result), { mode: 0o600 });
  return result as Record<string, unknown>;
}

/**
 * DEL in reverse order with the cached result as prevResult. The list comes from the cache when there is
 * one (the attachment is deleted with the config it was added with), else the current conflist.
 */
export async function delNetworkList(host: CniHost, network: string, rt: RuntimeConf): Promise<void> {
  const file = cacheFilePath(host.cacheDir, network, rt.containerID, rt.ifname);
  let list: Conflist | undefined;
  let cached: unknown;
  try {
    const entry = parseCacheEntry(await readFile(file, 'utf8'));
    list = cachedConflist(entry);
    cached = entry.result;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CniCallError(`bad cache entry ${file}`, { cause: e });
  }
  list ??= await loadConflist(host.confDir);
  if (list === undefined) throw new CniCallError(`no cached config and no conflist in ${host.confDir}: cannot DEL ${rt.containerID}`);
  const prev = delGetsPrevResult(list.cniVersion) ? cached : undefined;
  for (const plugin of [...list.plugins].reverse()) {
    await execPlugin(host, 'DEL', plugin.type, buildPluginConfig(list, plugin, prev, rt), rt);
  }
  await rm(file, { force: true });
}
