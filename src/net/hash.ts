// A small non-cryptographic hash for names derived from identifiers (host veth names, IPAM owner
// indexes). Not node:crypto: it sits on the plugin's start-up path, and these names only need to be
// stable and well spread; wherever two inputs could collide, the caller verifies the full identifier.
import { utf8Bytes } from './utf8.ts';

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = (1n << 64n) - 1n;

/** 64-bit FNV-1a over the UTF-8 bytes. */
export function fnv1a64(text: string): bigint {
  let h = FNV_OFFSET;
  for (const byte of utf8Bytes(text)) {
    h ^= BigInt(byte);
    h = (h * FNV_PRIME) & MASK64;
  }
  return h;
}
