// The digest a delta pull carries (pull.ts): a Bloom filter of (name, incarnation) pairs, the
// records the puller already holds. A pair in it is never sent back; a false positive only
// withholds a record for one pull, since every pull draws a new salt (so the same pair is not
// hidden twice in a row except by chance). Sized at about 6 bits per pair (false positives about
// 5.6% with 4 hashes), capped at MAX_DIGEST_BYTES: at 10 bits (1%) digests were 14% of a 1,000-node
// join wave's bytes, and a record a false positive withholds comes with the next pull, 250 ms later.
// The hash count is fixed on the wire (the member that answers tests with it); the size is not.
import { MAX_DIGEST_BYTES } from "./messages.js";

const HASHES = 4;
const BITS_PER_ENTRY = 6;
const MIN_BYTES = 8;

export interface DigestKey {
  readonly name: string;
  readonly incarnation: number;
}

/** A filter holding `keys`; with more keys than fit, the cap raises its false-positive rate. */
export function buildDigest(salt: number, keys: Iterable<DigestKey>, count: number): Uint8Array {
  const bytes = Math.min(MAX_DIGEST_BYTES, Math.max(MIN_BYTES, Math.ceil((count * BITS_PER_ENTRY) / 8)));
  const bits = new Uint8Array(bytes);
  for (const k of keys) forEachBit(salt, k, bytes * 8, (i) => (bits[i >>> 3] |= 1 << (i & 7)));
  return bits;
}

/** Whether the filter may hold the key (false: it certainly does not). An empty filter holds nothing. */
export function digestHas(digest: Uint8Array, salt: number, key: DigestKey): boolean {
  const size = digest.length * 8;
  if (size === 0) return false;
  let all = true;
  forEachBit(salt, key, size, (i) => {
    if ((digest[i >>> 3] & (1 << (i & 7))) === 0) all = false;
  });
  return all;
}

/** Kirsch–Mitzenmacher double hashing over two salted FNV-1a hashes of name and incarnation. */
function forEachBit(salt: number, key: DigestKey, size: number, visit: (bit: number) => void): void {
  let h1 = (0x811c9dc5 ^ salt) >>> 0;
  let h2 = (0x01000193 + salt) >>> 0;
  const mix = (byte: number): void => {
    h1 = Math.imul(h1 ^ byte, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ byte, 0x5bd1e995) >>> 0;
  };
  for (let i = 0; i < key.name.length; i++) {
    const c = key.name.charCodeAt(i);
    mix(c & 0xff);
    mix(c >>> 8);
  }
  let inc = key.incarnation;
  for (let i = 0; i < 7; i++) {
    mix(inc % 256);
    inc = Math.floor(inc / 256);
  }
  h1 ^= h1 >>> 15;
  h2 = (h2 ^ (h2 >>> 13)) | 1;
  for (let i = 0; i < HASHES; i++) visit(((h1 + Math.imul(i, h2)) >>> 0) % size);
}
