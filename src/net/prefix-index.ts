// Prefixes with a value each, for overlap questions over thousands of subnets (leases, peer routes).
import { type Family, type Prefix, bitsOf, contains } from './ip.ts';

/**
 * Prefixes with a value each, answering "which prefix added first overlaps this one?" without a
 * scan: two prefixes overlap iff the shorter contains the longer's address, so for every prefix
 * length present that is not longer than the query, one map lookup of the query truncated to that
 * length finds the candidate. Only lengths longer than the query are scanned (a cluster's leases
 * all have the node prefix length, so in practice never). O(distinct lengths) per query instead of
 * O(n): rejectConflicts over 5,000 leases went from ~2 s to a few ms.
 */
export class PrefixIndex<T> {
  /** Buckets by family and length (family * 256 + length): number keys, no key strings per lookup. */
  private readonly byLength = new Map<number, Map<bigint, { order: number; prefix: Prefix; value: T }>>();
  private readonly lengths = new Map<Family, Set<number>>();
  private count = 0;

  add(prefix: Prefix, value: T): void {
    const family = prefix.ip.family;
    const key = family * 256 + prefix.length;
    let bucket = this.byLength.get(key);
    if (!bucket) {
      bucket = new Map();
      this.byLength.set(key, bucket);
      const lens = this.lengths.get(family) ?? new Set<number>();
      lens.add(prefix.length);
      this.lengths.set(family, lens);
    }
    const net = prefix.ip.value & networkMask(family, prefix.length);
    // The first prefix added for a network wins, as a scan in insertion order would find it first.
    if (!bucket.has(net)) bucket.set(net, { order: this.count++, prefix, value });
  }

  /** The value of the earliest-added prefix overlapping `p`, if any. */
  firstOverlap(p: Prefix): T | undefined {
    const family = p.ip.family;
    let best: { order: number; value: T } | undefined;
    for (const len of this.lengths.get(family) ?? []) {
      const bucket = this.byLength.get(family * 256 + len);
      if (!bucket) continue;
      if (len <= p.length) {
        const hit = bucket.get(p.ip.value & networkMask(family, len));
        if (hit && (!best || hit.order < best.order)) best = hit;
      } else {
        for (const e of bucket.values()) {
          if (contains(p, e.prefix.ip) && (!best || e.order < best.order)) best = e;
        }
      }
    }
    return best?.value;
  }
}

/** Network masks by family and prefix length, computed once (a lookup runs for every lease on every list). */
const MASKS: Record<Family, readonly bigint[]> = { 4: masksOf(4), 6: masksOf(6) };

function masksOf(family: Family): bigint[] {
  const bits = bitsOf(family);
  const all = (1n << BigInt(bits)) - 1n;
  return Array.from({ length: bits + 1 }, (_, len) => all ^ ((1n << BigInt(bits - len)) - 1n));
}

function networkMask(family: Family, length: number): bigint {
  const mask = MASKS[family][length];
  if (mask === undefined) throw new RangeError(`prefix length ${length} out of range for IPv${family}`);
  return mask;
}
