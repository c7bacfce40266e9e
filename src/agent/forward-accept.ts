// Accepting cluster traffic in an iptables FORWARD chain that drops by default (pure: parsing and planning;
// the commands run in src/linux/iptables.ts, the sync is syncForwardAccept in datapath.ts).
//
// Why: Docker sets the filter FORWARD policy to DROP, and the node then drops every pod packet it routes
// (flannel#609, #799; fixed there by FLANNEL-FWD, flannel PR #872). An nftables accept in our own table
// cannot help: an accept ends evaluation of its own base chain only, and the packet still meets the
// iptables chain's drop. So the accepts go into that chain itself, with the iptables tool of its backend.
//
// What: for each iptables FORWARD chain (backend nft or legacy, IPv4 or IPv6) whose policy is DROP, two
// rules per cluster CIDR of that family, `-s CIDR` and `-d CIDR`, `-j ACCEPT`, each labelled with the
// comment `flatnet: cluster traffic`. Source covers pod-to-anything (masquerade happens later, in
// postrouting); destination covers replies to pods and traffic from nodes and outside to pods. Where no
// such chain exists nothing is added, so a host without a drop policy gets no iptables table, no hook and no
// per-packet cost from flatnet.
//
// Where: appended (-A), so they come after everything already in the chain and right before the policy.
// Docker's own FORWARD rules jump to DOCKER-USER first (the admin's place for restrictions), then to its
// isolation chains and accept rules that only match docker bridges; traffic between flat0 and the uplink
// falls through all of them to the end, where our accepts decide before the policy. Appending keeps any
// restriction an admin put in DOCKER-USER or in FORWARD itself in force (inserting at the top would
// override them), and Docker, which re-inserts its jumps at the top when it restarts, never moves them
// behind ours (on flannel hosts its accept rules end up at the end of FORWARD too). The flip side: an explicit
// catch-all DROP/REJECT rule earlier in the chain wins over ours; that is the admin's decision to keep.
//
// Ownership: a rule is ours when its comment starts with `flatnet:`. Ours that are not wanted (cluster
// CIDRs changed, the policy is no longer DROP, a duplicate) are deleted by their exact spec; no other rule
// is ever touched.
import { formatPrefix, isNetwork, tryParsePrefix } from '../net/ip.ts';
import type { Family } from '../net/ip.ts';

export const FORWARD_CHAIN = 'FORWARD';
export const FORWARD_COMMENT = 'flatnet: cluster traffic';
/** Rules whose comment starts with this are flatnet's (and only those are ever deleted). */
export const OUR_COMMENT_PREFIX = 'flatnet:';

export type XtBackend = 'nft' | 'legacy';

/** A rule as `iptables -S` prints it, split into arguments, without the leading `-A CHAIN`. */
export type RuleSpec = readonly string[];

export class ForwardAcceptConfigError extends Error {
  override readonly name = 'ForwardAcceptConfigError';
}

/**
 * Splits one line of `iptables -S` / iptables-save output into arguments. Strings with spaces or quotes
 * (comments) are printed in double quotes with `"` and `\` escaped by a backslash (xtables_save_string).
 */
export function splitSaveLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && (line[i] === ' ' || line[i] === '\t')) i++;
    if (i >= line.length) break;
    let arg = '';
    let quoted = false;
    for (; i < line.length; i++) {
      const c = line[i]!;
      if (quoted) {
        if (c === '\\' && i + 1 < line.length) arg += line[++i]!;
        else if (c === '"') quoted = false;
        else arg += c;
      } else if (c === '"') quoted = true;
      else if (c === ' ' || c === '\t') break;
      else arg += c;
    }
    out.push(arg);
  }
  return out;
}

export interface ChainListing {
  /** The built-in chain's policy as printed (`DROP`, `ACCEPT`); undefined when the output has no -P line. */
  readonly policy?: string;
  /** Every rule of the chain, in order. */
  readonly rules: readonly RuleSpec[];
}

/** Parses `iptables -S CHAIN` output: the `-P CHAIN POLICY` line and the `-A CHAIN ...` lines of that chain. */
export function parseChainListing(text: string, chain: string = FORWARD_CHAIN): ChainListing {
  let policy: string | undefined;
  const rules: RuleSpec[] = [];
  for (const line of text.split('\n')) {
    const args = splitSaveLine(line.trim());
    if (args[1] !== chain) continue;
    if (args[0] === '-P' && args[2] !== undefined) policy = args[2];
    else if (args[0] === '-A') rules.push(args.slice(2));
  }
  return policy !== undefined ? { policy, rules } : { rules };
}

/** The comment of a rule spec (the argument after `--comment`), if any. */
export function commentOf(spec: RuleSpec): string | undefined {
  const i = spec.indexOf('--comment');
  return i >= 0 ? spec[i + 1] : undefined;
}

export function isOurRule(spec: RuleSpec): boolean {
  return commentOf(spec)?.startsWith(OUR_COMMENT_PREFIX) === true;
}

/** The `ip filter` / `ip6 filter` tables `nft -j list tables` shows: iptables-nft's, if any exist. */
export function nftFilterFamilies(json: unknown): Family[] {
  const fams = new Set<Family>();
  for (const body of nftObjects(json, 'table')) {
    if (body.name !== 'filter') continue;
    if (body.family === 'ip') fams.add(4);
    else if (body.family === 'ip6') fams.add(6);
  }
  return [...fams].sort();
}

/**
 * The policy of the FORWARD base chain of `ip filter` / `ip6 filter` in `nft -j list chain(s)` output,
 * upper-cased as iptables prints it; undefined when there is no such chain.
 */
export function nftForwardPolicy(json: unknown, family: Family): string | undefined {
  const fam = family === 4 ? 'ip' : 'ip6';
  for (const body of nftObjects(json, 'chain')) {
    if (body.family === fam && body.table === 'filter' && body.name === FORWARD_CHAIN && body.hook === 'forward') {
      return typeof body.policy === 'string' ? body.policy.toUpperCase() : 'ACCEPT';
    }
  }
  return undefined;
}

function nftObjects(json: unknown, kind: string): Record<string, unknown>[] {
  const items = typeof json === 'object' && json !== null ? (json as { nftables?: unknown }).nftables : undefined;
  if (!Array.isArray(items)) return [];
  const out: Record<string, unknown>[] = [];
  for (const item of items) {
    const body = typeof item === 'object' && item !== null ? (item as Record<string, unknown>)[kind] : undefined;
    if (typeof body === 'object' && body !== null) out.push(body as Record<string, unknown>);
  }
  return out;
}

/** The cluster CIDRs of one family in canonical form (as iptables prints them); malformed ones throw. */
function clusterCIDRsOf(clusterCIDRs: readonly string[], family: Family): string[] {
  const out: string[] = [];
  for (const t of clusterCIDRs) {
    const p = tryParsePrefix(t);
    if (!p || !isNetwork(p)) throw new ForwardAcceptConfigError(`invalid cluster CIDR "${t}"`);
    if (p.ip.family === family) out.push(formatPrefix(p));
  }
  return out;
}

/**
 * The rules we want in a FORWARD chain of `family` with `policy`: none unless it drops by default; else,
 * per cluster CIDR of that family, a source and a destination accept, in the exact form `-S` prints them
 * (so a listed rule compares equal argument by argument).
 */
export function wantedForwardRules(clusterCIDRs: readonly string[], family: Family, policy: string | undefined): RuleSpec[] {
  const cidrs = clusterCIDRsOf(clusterCIDRs, family);
  if (policy !== 'DROP') return [];
  const rule = (dir: '-s' | '-d', cidr: string): RuleSpec => [dir, cidr, '-m', 'comment', '--comment', FORWARD_COMMENT, '-j', 'ACCEPT'];
  return cidrs.flatMap((c) => [rule('-s', c), rule('-d', c)]);
}

export interface ForwardAcceptPlan {
  /** Wanted rules missing from the chain: to append (after a -C check). */
  readonly add: readonly RuleSpec[];
  /** Rules of ours that are not wanted (or duplicates): to delete by spec. */
  readonly remove: readonly RuleSpec[];
  /** Wanted rules already in place. */
  readonly kept: number;
}

const keyOf = (spec: RuleSpec): string => spec.join('\0');

/** Diffs the chain's rules against the wanted ones. Only rules carrying our comment are ever removed. */
export function planForwardAccept(listing: ChainListing, wanted: readonly RuleSpec[]): ForwardAcceptPlan {
  const want = new Map(wanted.map((w) => [keyOf(w), w]));
  const seen = new Set<string>();
  const remove: RuleSpec[] = [];
  for (const r of listing.rules) {
    if (!isOurRule(r)) continue;
    const k = keyOf(r);
    // A second copy of a wanted rule is removed too: never a duplicate.
    if (want.has(k) && !seen.has(k)) seen.add(k);
    else remove.push(r);
  }
  const add = [...want].filter(([k]) => !seen.has(k)).map(([, w]) => w);
  return { add, remove, kept: seen.size };
}

/** A rule spec as one readable line for logs: `-A FORWARD -s 10.244.0.0/16 ... --comment "flatnet: ..."`. */
export function formatRule(op: '-A' | '-D', spec: RuleSpec, chain: string = FORWARD_CHAIN): string {
  const quote = (a: string): string => (/^[A-Za-z0-9_./:,+=-]+$/.test(a) ? a : `"${a.replace(/[\\"]/g, (c) => `\\${c}`)}"`);
  return [op, chain, ...spec].map(quote).join(' ');
}
