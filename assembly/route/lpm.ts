// DIR-24-8 longest-prefix match (the scheme of DPDK's rte_lpm): tbl24 has one entry per /24 and
// answers most lookups with one memory read; a /24 that holds prefixes longer than /24 points to a
// tbl8 group with one entry per address, so the worst case is two reads.
//
// Entry (u32), in tbl24 and tbl8 alike:
//   bit 31     ENTRY_VALID: a route covers these addresses
//   bit 30     ENTRY_EXT (tbl24 only): value is a tbl8 group index, always < the group capacity
//   bits 24-29 depth: length of the rule that won here, so updates know which entries a rule owns
//   bits 0-23  value: next-hop index (always < the next-hop capacity), or the group index
// 0 means no route. Every entry is written with one aligned u32 store and every value ever stored
// is in range, so readers racing an update (seqlock.ts) never index out of bounds.
//
// Invariant: a /24 has a tbl8 group exactly while it holds a rule longer than /24. Then the group
// entries no such rule covers hold the /24's covering rule; when the last long rule goes, the
// group is uniform and folds back into its tbl24 entry.
import {
  H_FREE_GROUPS,
  H_FREE_GROUPS_AT,
  TBL24_OFFSET,
  TBL8_GROUP_BYTES,
  TBL8_GROUP_ENTRIES,
  TBL8_OFFSET,
  TBL24_ENTRIES,
} from "./layout";

const ENTRY_VALID: u32 = 0x8000_0000;
const ENTRY_EXT: u32 = 0x4000_0000;
const DEPTH_SHIFT: u32 = 24;
const DEPTH_BITS: u32 = 0x3f;
const VALUE_MASK: u32 = 0x00ff_ffff;
/** Valid, extended and depth bits: what identifies the entries one rule owns. */
const OWNER_MASK: u32 = 0xff00_0000;

/** The entry a rule of this length and next hop writes. */
@inline export function lpmEntry(len: i32, nh: i32): u32 {
  return ENTRY_VALID | ((<u32>len) << DEPTH_SHIFT) | <u32>nh;
}

@inline function depthOf(e: u32): i32 {
  return <i32>((e >> DEPTH_SHIFT) & DEPTH_BITS);
}

/** Next-hop index of a resolved (non-extended) entry, or -1 for no route; branch-free. */
@inline function resultOf(e: u32): i32 {
  return select<i32>(<i32>(e & VALUE_MASK), -1, <i32>e < 0);
}

/** Address of tbl24 entry i (offset by TBL24_OFFSET: loads and stores add it as immediate). */
@inline function tbl24At(t: usize, i: u32): usize {
  return t + ((<usize>i) << 2);
}

/** Address of entry j of tbl8 group g (offset by TBL8_OFFSET, like tbl24At). */
@inline function tbl8At(t: usize, g: u32, j: u32): usize {
  return t + <usize>g * TBL8_GROUP_BYTES + ((<usize>j) << 2);
}

@inline export function lpmLookup(t: usize, addr: u32): i32 {
  let e = load<u32>(tbl24At(t, addr >> 8), TBL24_OFFSET);
  if (e & ENTRY_EXT) e = load<u32>(tbl8At(t, e & VALUE_MASK, addr & 0xff), TBL8_OFFSET);
  return resultOf(e);
}

/**
 * Look up n addresses in two passes: first every tbl24 entry (independent loads, so their cache
 * misses overlap), parked in out; then the few extended ones through tbl8. out must not overlap
 * addrs.
 */
export function lpmLookupBatch(t: usize, addrs: usize, out: usize, n: i32): void {
  const bytes = (<usize>n) << 2;
  for (let o: usize = 0; o < bytes; o += 4) {
    const a = load<u32>(addrs + o);
    store<u32>(out + o, load<u32>(tbl24At(t, a >> 8), TBL24_OFFSET));
  }
  for (let o: usize = 0; o < bytes; o += 4) {
    let e = load<u32>(out + o);
    if (e & ENTRY_EXT) e = load<u32>(tbl8At(t, e & VALUE_MASK, load<u32>(addrs + o) & 0xff), TBL8_OFFSET);
    store<i32>(out + o, resultOf(e));
  }
}

/** Empty tbl24 and tbl8, all groups free. */
export function lpmInit(t: usize, tbl8Groups: u32): void {
  memory.fill(t + TBL24_OFFSET, 0, (<usize>TBL24_ENTRIES) << 2);
  memory.fill(t + TBL8_OFFSET, 0, <usize>tbl8Groups * TBL8_GROUP_BYTES);
  // Stacked in reverse so groups are handed out from 0 up.
  const stack = t + load<u32>(t, H_FREE_GROUPS_AT);
  for (let k: u32 = 0; k < tbl8Groups; k++) store<u32>(stack + ((<usize>k) << 2), tbl8Groups - 1 - k);
  store<u32>(t, tbl8Groups, H_FREE_GROUPS);
}

/** Whether adding a rule (prefix, len) finds the tbl8 group it may need. */
export function lpmHasRoomFor(t: usize, prefix: u32, len: i32): bool {
  if (len <= 24) return true;
  if (load<u32>(tbl24At(t, prefix >> 8), TBL24_OFFSET) & ENTRY_EXT) return true;
  return load<u32>(t, H_FREE_GROUPS) > 0;
}

/**
 * Make entry (a rule of length len) win where no longer rule does: over the rule's addresses,
 * overwrite every entry of depth <= len (shorter rules, or the rule itself when replacing).
 * The caller checked lpmHasRoomFor.
 */
export function lpmAdd(t: usize, prefix: u32, len: i32, entry: u32): void {
  if (len <= 24) {
    const end = (prefix >> 8) + ((<u32>1) << (24 - len));
    for (let i = prefix >> 8; i < end; i++) {
      const e = load<u32>(tbl24At(t, i), TBL24_OFFSET);
      if (e & ENTRY_EXT) groupAdd(t, e & VALUE_MASK, 0, TBL8_GROUP_ENTRIES, len, entry);
      else if (depthOf(e) <= len) store<u32>(tbl24At(t, i), entry, TBL24_OFFSET);
    }
    return;
  }
  const i = prefix >> 8;
  const e = load<u32>(tbl24At(t, i), TBL24_OFFSET);
  const first = prefix & 0xff;
  const count = (<u32>1) << (32 - len);
  if (e & ENTRY_EXT) {
    groupAdd(t, e & VALUE_MASK, first, count, len, entry);
    return;
  }
  // Build the group completely before the tbl24 entry points to it.
  const g = groupTake(t);
  for (let j: u32 = 0; j < TBL8_GROUP_ENTRIES; j++) store<u32>(tbl8At(t, g, j), e, TBL8_OFFSET);
  groupAdd(t, g, first, count, len, entry);
  store<u32>(tbl24At(t, i), ENTRY_VALID | ENTRY_EXT | g, TBL24_OFFSET);
}

/**
 * Undo rule (prefix, len), already gone from the rule store: the entries it owns (depth == len)
 * take replacement, the entry of the longest rule now covering them (0 if none).
 */
export function lpmRemove(t: usize, prefix: u32, len: i32, replacement: u32): void {
  const owned = ENTRY_VALID | ((<u32>len) << DEPTH_SHIFT);
  if (len <= 24) {
    const end = (prefix >> 8) + ((<u32>1) << (24 - len));
    for (let i = prefix >> 8; i < end; i++) {
      const e = load<u32>(tbl24At(t, i), TBL24_OFFSET);
      if (e & ENTRY_EXT) groupRemove(t, e & VALUE_MASK, 0, TBL8_GROUP_ENTRIES, owned, replacement);
      else if ((e & OWNER_MASK) == owned) store<u32>(tbl24At(t, i), replacement, TBL24_OFFSET);
    }
    return;
  }
  const i = prefix >> 8;
  const g = load<u32>(tbl24At(t, i), TBL24_OFFSET) & VALUE_MASK;
  groupRemove(t, g, prefix & 0xff, (<u32>1) << (32 - len), owned, replacement);
  if (!groupUniform(t, g)) return;
  // Unhook the group before recycling it.
  store<u32>(tbl24At(t, i), load<u32>(tbl8At(t, g, 0), TBL8_OFFSET), TBL24_OFFSET);
  groupGive(t, g);
}

function groupAdd(t: usize, g: u32, first: u32, count: u32, len: i32, entry: u32): void {
  const end = first + count;
  for (let j = first; j < end; j++) {
    if (depthOf(load<u32>(tbl8At(t, g, j), TBL8_OFFSET)) <= len) store<u32>(tbl8At(t, g, j), entry, TBL8_OFFSET);
  }
}

function groupRemove(t: usize, g: u32, first: u32, count: u32, owned: u32, replacement: u32): void {
  const end = first + count;
  for (let j = first; j < end; j++) {
    if ((load<u32>(tbl8At(t, g, j), TBL8_OFFSET) & OWNER_MASK) == owned) {
      store<u32>(tbl8At(t, g, j), replacement, TBL8_OFFSET);
    }
  }
}

/**
 * Whether group g holds no rule longer than /24 any more: all entries equal and of depth <= 24
 * (or no route). A long rule would leave at least one entry deeper than 24.
 */
function groupUniform(t: usize, g: u32): bool {
  const e = load<u32>(tbl8At(t, g, 0), TBL8_OFFSET);
  if (depthOf(e) > 24) return false;
  const each = i32x4.splat(<i32>e);
  let diff = i32x4.splat(0);
  for (let j: u32 = 0; j < TBL8_GROUP_ENTRIES; j += 4) {
    diff = v128.or(diff, v128.xor(v128.load(tbl8At(t, g, j), TBL8_OFFSET), each));
  }
  return !v128.any_true(diff);
}

function groupTake(t: usize): u32 {
  const free = load<u32>(t, H_FREE_GROUPS) - 1;
  store<u32>(t, free, H_FREE_GROUPS);
  return load<u32>(t + load<u32>(t, H_FREE_GROUPS_AT) + ((<usize>free) << 2));
}

function groupGive(t: usize, g: u32): void {
  const free = load<u32>(t, H_FREE_GROUPS);
  store<u32>(t + load<u32>(t, H_FREE_GROUPS_AT) + ((<usize>free) << 2), g);
  store<u32>(t, free + 1, H_FREE_GROUPS);
}
