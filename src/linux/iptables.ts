// iptables through its binaries (argv only, `-w` for the xtables lock), and the cheap looks that tell
// whether there is an iptables filter table at all, without creating one:
// - nft backend: `nft -j list tables` shows iptables-nft's `ip filter` / `ip6 filter`. (`iptables-nft -S`
//   creates nothing either, and is the fallback when the nft binary is missing.)
// - legacy backend: /proc/net/ip_tables_names (ip6_tables_names) lists the legacy tables of the reader's
//   network namespace. `iptables-legacy -S` is only run when `filter` is listed: on a namespace without it,
//   it would instantiate the legacy filter table, and with it netfilter hooks every packet then pays for.
// Binaries are looked up on PATH and the sbin directories (an agent's PATH may lack them); the
// unsuffixed `iptables` counts for the backend its `-V` names.
import { readFileSync } from 'node:fs';
import type { Family } from '../net/ip.ts';
import type { XtBackend } from '../agent/forward-accept.ts';
import { CommandError, findExecutable, inNetns, run, runOk } from './run.ts';

export class IptablesError extends Error {
  override readonly name = 'IptablesError';
}

export interface IptablesOptions {
  /** Network namespace (path or name under /run/netns); the current one when absent. */
  readonly netns?: string;
}

/** Seconds to wait for the xtables lock (Docker, kube-proxy may hold it), and a bound on any one command. */
const LOCK_WAIT_S = '5';
const TIMEOUT_MS = 20_000;
/** Backend of the unsuffixed binary per path (its `-V`: "iptables v1.8.9 (nf_tables)" or "(legacy)"). */
const genericBackend = new Map<string, XtBackend | undefined>();

/** `iptables` (family 4) or `ip6tables` (6), the unsuffixed tool name. */
export function xtablesTool(family: Family): string {
  return family === 4 ? 'iptables' : 'ip6tables';
}

/** The backend-suffixed tool name, as installed and as logs name a chain's owner: `ip6tables-legacy`. */
export function xtablesName(backend: XtBackend, family: Family): string {
  return `${xtablesTool(family)}-${backend}`;
}

/** The iptables (family 4) or ip6tables (6) binary of a backend, or undefined when none is installed. */
export async function xtablesBinary(backend: XtBackend, family: Family): Promise<string | undefined> {
  const base = xtablesTool(family);
  const explicit = findExecutable(xtablesName(backend, family));
  if (explicit !== undefined) return explicit;
  const generic = findExecutable(base);
  if (generic === undefined) return undefined;
  if (!genericBackend.has(generic)) {
    const r = await run([generic, '-V'], { timeoutMs: TIMEOUT_MS });
    const v = `${r.stdout} ${r.stderr}`;
    genericBackend.set(generic, /\(nf_tables\)/.test(v) ? 'nft' : /\(legacy\)/.test(v) ? 'legacy' : undefined);
  }
  return genericBackend.get(generic) === backend ? generic : undefined;
}

/** Names of the legacy iptables tables in the namespace (empty when the legacy module is not even loaded). */
export async function legacyTableNames(family: Family, opts: IptablesOptions = {}): Promise<string[]> {
  const file = family === 4 ? '/proc/net/ip_tables_names' : '/proc/net/ip6_tables_names';
  let text: string;
  if (opts.netns === undefined) {
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return [];
    }
  } else {
    // /proc/net is /proc/self/net: it shows the namespace of the process reading it.
    const r = await run(inNetns(opts.netns, ['cat', file]), { timeoutMs: TIMEOUT_MS });
    text = r.code === 0 ? r.stdout : '';
  }
  return text.split('\n').map((l) => l.trim()).filter(Boolean);
}

/** `BIN -w 5 -S CHAIN` (filter table): the chain's policy and rules as text. */
export async function listChain(bin: string, chain: string, opts: IptablesOptions = {}): Promise<string> {
  return (await xt(bin, ['-S', chain], opts)).stdout;
}

/** `BIN -w 5 -C CHAIN SPEC`: whether the rule is in the chain. */
export async function ruleExists(bin: string, chain: string, spec: readonly string[], opts: IptablesOptions = {}): Promise<boolean> {
  const argv = inNetns(opts.netns, [bin, '-w', LOCK_WAIT_S, '-C', chain, ...spec]);
  const r = await run(argv, { timeoutMs: TIMEOUT_MS });
  if (r.code === 0) return true;
  // 1: no such rule. Anything else (2: bad arguments, 4: resource problem such as the lock) is an error.
  if (r.code === 1) return false;
  throw new IptablesError(`${bin} -C failed`, { cause: new CommandError(argv, r) });
}

export async function appendRule(bin: string, chain: string, spec: readonly string[], opts: IptablesOptions = {}): Promise<void> {
  await xt(bin, ['-A', chain, ...spec], opts);
}

export async function deleteRule(bin: string, chain: string, spec: readonly string[], opts: IptablesOptions = {}): Promise<void> {
  await xt(bin, ['-D', chain, ...spec], opts);
}

async function xt(bin: string, args: readonly string[], opts: IptablesOptions): Promise<{ stdout: string }> {
  const argv = inNetns(opts.netns, [bin, '-w', LOCK_WAIT_S, ...args]);
  try {
    return await runOk(argv, { timeoutMs: TIMEOUT_MS });
  } catch (cause) {
    const detail = cause instanceof CommandError ? cause.result.stderr.trim() : String(cause);
    throw new IptablesError(`${[bin, ...args].join(' ')}: ${detail}`, { cause });
  }
}
