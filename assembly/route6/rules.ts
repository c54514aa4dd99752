// The IPv6 rule store: every (prefix, length) -> next hop, in an open-addressing hash with linear
// probing and backward-shift deletes (as assembly/route/rules.ts). Lookups never read it (they
// walk the trie, trie.ts); exact gets and the writer do.
// Prefixes and addresses are two u64 halves as loaded from memory (little-endian loads of the
// bytes in network order): hi = bytes 0..7, lo = bytes 8..15. Keeping memory order spares every
// lookup four byte swaps; masks are precomputed in that order (maskHi/maskLo).
// Rule slot, RULE6_SLOT_BYTES: u64 hi, u64 lo, u32 tag = length + 1 (0 = empty), u32 next hop.
import { H6_RULE_COUNT, H6_RULES_AT, H6_SLOT_MASK, MASKS_OFFSET, RULE6_SLOT_BYTES } from "./layout";

/** Writes the mask table: for each length 0..128 its two halves in memory order. */
export function masksInit(t: usize): void {
  for (let len = 0; len <= 128; len++) {
    // Big-endian numbers first; a 64-bit shift by 64 is a shift by 0 in Wasm, hence the cases.
    const hi: u64 = len >= 64 ? <u64>-1 : len <= 0 ? 0 : (<u64>-1) << (<u64>(64 - len));
    const lo: u64 = len >= 128 ? <u64>-1 : len <= 64 ? 0 : (<u64>-1) << (<u64>(128 - len));
    store<u64>(t + MASKS_OFFSET + ((<usize>len) << 4), bswap<u64>(hi));
    store<u64>(t + MASKS_OFFSET + ((<usize>len) << 4), bswap<u64>(lo), 8);
  }
}

/** The hi half of the mask of a prefix length 0..128, in memory order. */
@inline export function maskHi(t: usize, len: i32): u64 {
  return load<u64>(t + ((<usize>len) << 4), MASKS_OFFSET);
}

/** The lo half of the mask of a prefix length 0..128, in memory order. */
@inline export function maskLo(t: usize, len: i32): u64 {
  return load<u64>(t + ((<usize>len) << 4), MASKS_OFFSET + 8);
}

@inline function ruleHash(hi: u64, lo: u64, len: i32): u32 {
  let h = (hi * 0x9e3779b97f4a7c15) ^ (lo * 0xc2b2ae3d27d4eb4f) ^ (<u64>len * 0x165667b19e3779f9);
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93;
  return <u32>(h >> 32);
}

@inline function slotAt(t: usize, i: u32): usize {
  return t + load<u32>(t, H6_RULES_AT) + <usize>i * RULE6_SLOT_BYTES;
}

@inline export function rule6Length(s: usize): i32 {
  return <i32>load<u32>(s, 16) - 1;
}

@inline export function rule6NextHop(s: usize): i32 {
  return <i32>load<u32>(s, 20);
}

@inline export function rule6Holds(s: usize, hi: u64, lo: u64, len: i32): bool {
  return load<u32>(s, 16) == <u32>(len + 1) && load<u64>(s) == hi && load<u64>(s, 8) == lo;
}

/**
 * The slot holding (hi, lo, len), or else the empty slot where it belongs. Probes every slot at
 * most once, so even a torn read by another thread ends inside the slot array.
 */
@inline export function rule6Slot(t: usize, hi: u64, lo: u64, len: i32): usize {
  const mask = load<u32>(t, H6_SLOT_MASK);
  let i = ruleHash(hi, lo, len) & mask;
  let s = slotAt(t, i);
  for (let probes: u32 = 0; probes <= mask; probes++) {
    if (load<u32>(s, 16) == 0 || rule6Holds(s, hi, lo, len)) break;
    i = (i + 1) & mask;
    s = slotAt(t, i);
  }
  return s;
}

/** Fill the empty slot s (from rule6Slot) with a new rule. */
export function rule6Add(t: usize, s: usize, hi: u64, lo: u64, len: i32, nh: i32): void {
  store<u64>(s, hi);
  store<u64>(s, lo, 8);
  store<u32>(s, <u32>nh, 20);
  store<u32>(s, <u32>(len + 1), 16);
  store<u32>(t, load<u32>(t, H6_RULE_COUNT) + 1, H6_RULE_COUNT);
}

export function rule6SetNextHop(s: usize, nh: i32): void {
  store<u32>(s, <u32>nh, 20);
}

/** Empty slot s, shifting later members of its probe run back into the hole. */
export function rule6Remove(t: usize, s: usize): void {
  const mask = load<u32>(t, H6_SLOT_MASK);
  const base = t + load<u32>(t, H6_RULES_AT);
  let hole = <u32>((s - base) / RULE6_SLOT_BYTES);
  let j = (hole + 1) & mask;
  while (true) {
    const sj = slotAt(t, j);
    if (load<u32>(sj, 16) == 0) break;
    const home = ruleHash(load<u64>(sj), load<u64>(sj, 8), rule6Length(sj)) & mask;
    // The member at j may fill the hole only if its home is not in (hole, j] (cyclically).
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      memory.copy(slotAt(t, hole), sj, RULE6_SLOT_BYTES);
      hole = j;
    }
    j = (j + 1) & mask;
  }
  memory.fill(slotAt(t, hole), 0, RULE6_SLOT_BYTES);
  store<u32>(t, load<u32>(t, H6_RULE_COUNT) - 1, H6_RULE_COUNT);
}

/** The slot of the longest rule of length shortest..len-1 covering (hi, lo), or 0 if there is none. */
export function rule6Covering(t: usize, hi: u64, lo: u64, len: i32, shortest: i32): usize {
  for (let l = len - 1; l >= shortest; l--) {
    const h = hi & maskHi(t, l);
    const w = lo & maskLo(t, l);
    const s = rule6Slot(t, h, w, l);
    if (rule6Holds(s, h, w, l)) return s;
  }
  return 0;
}
