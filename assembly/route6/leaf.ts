// Range leaves: a /16 whose rules longer than /16 are few (at most LEAF_RULES) is answered by one
// 128-byte leaf instead of its trie, so a lookup there reads its record and then two cache lines
// that do not depend on each other, where a trie walk reads one to three nodes in a chain; with
// up to LEAF_PAIR_RULES, by a pair of leaves side by side (four lines).
//
// The rules of a /16 cut it into ranges, each with one answer; with r rules there are at most 2r
// changes of answer, so LEAF_KEYS = 6 range starts hold up to 3 rules, a pair 6. A leaf (layout.ts LEAF_*)
// keeps the starts in two arrays, the high halves (address bits 16..63, big-endian, as a signed
// i64; unused keys i64.MAX_VALUE, above every address) and the low halves (bits 64..127 with the
// top bit flipped, so that a signed compare orders them as unsigned), and the values: value 0 for
// the addresses before the first start, value i + 1 from start i on, each a next hop or SHORT (no
// longer rule: the /16's short entry answers). A lookup counts the starts at or below its address
// with three two-lane SIMD compares and reads that value: no branch and no loop. A pair's second
// leaf holds starts 6..11; where one of them is at or below the address, its value answers.
//
// The writer keeps the trie (trie.ts) for every /16 and builds a leaf from it after each change of
// the /16 (table.ts); the record then points to the leaf (LEAF_POINTER). Leaves are built whole
// before anything points to them and given back to a free list after; a racing reader sees only
// in-range values and redoes its batch (seqlock).
import {
  H6_LEAVES_AT,
  LEAF_BYTES,
  LEAF_FREE_NEXT,
  LEAF_HI,
  LEAF_KEYS,
  LEAF_LO,
  LEAF_RULES,
  LEAF_SLOT_BYTES,
  LEAF_VALUES,
  RANGE_BYTES,
  RANGES_OFFSET,
} from "./layout";
import { poolGive, poolItem, poolTake } from "./pool";
import { trieRanges } from "./trie";

/** In a record's lookup pointer: the rest is a leaf slot (trie pointers never have this bit), */
export const LEAF_POINTER: u32 = 0x8000_0000;
/** holding a pair of leaves, */
export const LEAF_PAIR: u32 = 0x4000_0000;
/** whose index is this part. */
const SLOT_MASK: u32 = 0x3fff_ffff;
/** A leaf value: no rule longer than /16 covers the range (trie entries' next hops are below 2^24). */
const SHORT: u32 = 0x8000_0000;
const NO_KEY: i64 = i64.MAX_VALUE;
const FLIP: u64 = 0x8000_0000_0000_0000;

@inline function slotAt(t: usize, n: u32): usize {
  return poolItem(t, H6_LEAVES_AT, LEAF_SLOT_BYTES, n);
}

/**
 * The value of leaf pointer p (LEAF_POINTER, maybe LEAF_PAIR, slot) for the address (hi, lo)
 * (memory-order halves, as loaded): a next hop, or a negative i32 where the /16's short entry answers.
 */
@inline export function leafValue(t: usize, p: u32, hi: u64, lo: u64): i32 {
  const leaf = slotAt(t, p & SLOT_MASK);
  // Big-endian halves in one step (Wasm has no scalar byte swap), then the leaf's key form.
  let x = i64x2.replace_lane(i64x2.splat(hi), 1, lo);
  x = i8x16.shuffle(x, x, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  x = v128.xor(v128.and(x, i64x2(0x0000_ffff_ffff_ffff, -1)), i64x2(0, <i64>FLIP));
  const xh = i64x2.shuffle(x, x, 0, 0);
  const xl = i64x2.shuffle(x, x, 1, 1);
  const v = load<i32>(leaf + (startsAtOrBelow(leaf, xh, xl) << 2), LEAF_VALUES);
  if ((p & LEAF_PAIR) == 0) return v;
  const second = leaf + LEAF_BYTES;
  const starts = startsAtOrBelow(second, xh, xl);
  return select<i32>(load<i32>(second + (starts << 2), LEAF_VALUES), v, starts != 0);
}

/** How many of the starts of a leaf are at or below the address (xh, xl), in the leaf's key form. */
@inline function startsAtOrBelow(leaf: usize, xh: v128, xl: v128): usize {
  let below = atOrBelow(leaf, 0, xh, xl);
  below = i64x2.add(below, atOrBelow(leaf, 16, xh, xl));
  below = i64x2.add(below, atOrBelow(leaf, 32, xh, xl));
  // Lanes count -1 per start at or below the address.
  return <usize>(0 - (i64x2.extract_lane(below, 0) + i64x2.extract_lane(below, 1)));
}

/** A word of every cache line of leaf pointer p's leaves, for a batch to bring them into cache early. */
@inline export function leafLines(t: usize, p: u32): u64 {
  const leaf = slotAt(t, p & SLOT_MASK);
  const x = load<u64>(leaf) ^ load<u64>(leaf, 64);
  if ((p & LEAF_PAIR) == 0) return x;
  return x ^ load<u64>(leaf, 128) ^ load<u64>(leaf, 192);
}

/** For two keys of a leaf: -1 in each lane whose start is at or below the address (xh, xl). */
@inline function atOrBelow(leaf: usize, at: usize, xh: v128, xl: v128): v128 {
  const h = v128.load(leaf + at, LEAF_HI);
  const l = v128.load(leaf + at, LEAF_LO);
  return v128.or(i64x2.lt_s(h, xh), v128.and(i64x2.eq(h, xh), i64x2.le_s(l, xl)));
}

/** A lookup's answer from a leaf value: the next hop, or the /16's short answer. */
@inline export function leafAnswer(value: i32, short: i32): i32 {
  return select<i32>(short, value, value < 0);
}

/** Give back the slot of leaf pointer p. */
export function leafGive(t: usize, p: u32): void {
  poolGive(t, H6_LEAVES_AT, LEAF_SLOT_BYTES, LEAF_FREE_NEXT, p & SLOT_MASK);
}

/**
 * A new leaf pointer with the answers of the trie at root, of a /16 with `rules` rules longer
 * than /16 (1..LEAF_PAIR_RULES), not yet pointed to by anything.
 */
export function leafBuild(t: usize, root: u32, rules: u32): u32 {
  const at = t + RANGES_OFFSET;
  const raw = trieRanges(t, root, at);
  // Merge in place: a later start at the same place wins, a start whose answer is the one before goes.
  let k: u32 = 0;
  for (let i: u32 = 0; i < raw; i++) {
    const r = at + <usize>i * RANGE_BYTES;
    const a = load<u64>(r);
    const b = load<u64>(r, 8);
    const v = load<i32>(r, 16);
    const last = at + <usize>(k - 1) * RANGE_BYTES;
    if (k > 0 && load<u64>(last) == a && load<u64>(last, 8) == b) k--;
    const before = k == 0 ? -1 : load<i32>(at + <usize>(k - 1) * RANGE_BYTES, 16);
    if (v != before) {
      const w = at + <usize>k * RANGE_BYTES;
      store<u64>(w, a);
      store<u64>(w, b, 8);
      store<i32>(w, v, 16);
      k++;
    }
  }
  const n = poolTake(t, H6_LEAVES_AT, LEAF_SLOT_BYTES, LEAF_FREE_NEXT);
  const pair = rules > LEAF_RULES;
  // At most 2 starts per rule (its first address and the one after its last), so k fits.
  leafFill(slotAt(t, n), at, 0, k);
  if (pair) leafFill(slotAt(t, n) + LEAF_BYTES, at, LEAF_KEYS, k);
  store<u32>(slotAt(t, n), 0, LEAF_FREE_NEXT);
  return LEAF_POINTER | (pair ? LEAF_PAIR : 0) | n;
}

/** Leaf at `leaf` with the merged ranges first..first+LEAF_KEYS-1 of the k at `at`. */
function leafFill(leaf: usize, at: usize, first: u32, k: u32): void {
  // The value before the first start: the /16's short answer (a pair's second leaf never uses it).
  store<u32>(leaf, SHORT, LEAF_VALUES);
  for (let i: u32 = 0; i < LEAF_KEYS; i++) {
    const r = at + <usize>(first + i) * RANGE_BYTES;
    const used = first + i < k;
    const v = load<i32>(r, 16);
    store<i64>(leaf + ((<usize>i) << 3), used ? <i64>load<u64>(r) : NO_KEY, LEAF_HI);
    store<u64>(leaf + ((<usize>i) << 3), used ? load<u64>(r, 8) ^ FLIP : 0, LEAF_LO);
    store<u32>(leaf + ((<usize>i) << 2), used ? (v < 0 ? SHORT : <u32>v) : 0, LEAF_VALUES + 4);
  }
}
