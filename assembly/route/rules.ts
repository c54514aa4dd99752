// The rule store: every (prefix, length) -> next hop the table holds, in an open-addressing hash
// with linear probing. tbl24/tbl8 only keep the winning rule per address, so exact gets and
// deletes (which must find the next-longer covering rule to fall back to) ask this store.
// At most half the slots are used, so probes stay short and an empty slot always ends a probe.
// Slot, RULE_SLOT_BYTES: u32 prefix, u32 tag = next hop << 8 | (length + 1); tag 0 = empty.
import { H_RULE_COUNT, H_RULE_MASK, H_RULES_AT, RULE_SLOT_BYTES } from "./layout";

/** Network mask of a prefix length 0..32 (0 -> 0, 24 -> 0xFFFFFF00, 32 -> 0xFFFFFFFF). */
@inline export function prefixMask(len: i32): u32 {
  // Through u64 because a 32-bit shift by 32 is a shift by 0 in Wasm.
  return <u32>(<u64>0xffffffff_00000000 >> <u64>len);
}

@inline function ruleHash(prefix: u32, len: i32): u32 {
  // murmur3's finalizer over the prefix mixed with its length.
  let h = prefix ^ (<u32>len * 0x9e3779b9);
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}

@inline function slotTag(s: usize): u32 {
  return load<u32>(s, 4);
}

@inline export function ruleSlotLength(s: usize): i32 {
  return <i32>(slotTag(s) & 0xff) - 1;
}

@inline export function ruleSlotNextHop(s: usize): i32 {
  return <i32>(slotTag(s) >> 8);
}

/** Whether slot s holds the rule (prefix, len); false for an empty slot. */
@inline export function ruleSlotHolds(s: usize, prefix: u32, len: i32): bool {
  return (slotTag(s) & 0xff) == <u32>(len + 1) && load<u32>(s) == prefix;
}

/**
 * The slot holding (prefix, len), or else the empty slot where it belongs. Probes at most every
 * slot once, so even a torn read by another thread ends, inside the slot array.
 */
export function ruleSlot(t: usize, prefix: u32, len: i32): usize {
  const mask = load<u32>(t, H_RULE_MASK);
  const base = t + load<u32>(t, H_RULES_AT);
  let i = ruleHash(prefix, len) & mask;
  let s = base + <usize>i * RULE_SLOT_BYTES;
  for (let probes: u32 = 0; probes <= mask; probes++) {
    if (slotTag(s) == 0 || ruleSlotHolds(s, prefix, len)) break;
    i = (i + 1) & mask;
    s = base + <usize>i * RULE_SLOT_BYTES;
  }
  return s;
}

/** Fill the empty slot s (from ruleSlot) with a new rule. */
export function ruleAdd(t: usize, s: usize, prefix: u32, len: i32, nh: i32): void {
  store<u32>(s, prefix);
  ruleSetNextHop(s, len, nh);
  store<u32>(t, load<u32>(t, H_RULE_COUNT) + 1, H_RULE_COUNT);
}

export function ruleSetNextHop(s: usize, len: i32, nh: i32): void {
  store<u32>(s, ((<u32>nh) << 8) | <u32>(len + 1), 4);
}

/**
 * Empty slot s and shift later members of its probe run back into the hole (backward-shift
 * delete), so lookups never need tombstones.
 */
export function ruleRemove(t: usize, s: usize): void {
  const mask = load<u32>(t, H_RULE_MASK);
  const base = t + load<u32>(t, H_RULES_AT);
  let hole = <u32>((s - base) / RULE_SLOT_BYTES);
  let j = (hole + 1) & mask;
  while (true) {
    const sj = base + <usize>j * RULE_SLOT_BYTES;
    if (slotTag(sj) == 0) break;
    const home = ruleHash(load<u32>(sj), ruleSlotLength(sj)) & mask;
    // The member at j may fill the hole only if its home is not in (hole, j] (cyclically).
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      store<u64>(base + <usize>hole * RULE_SLOT_BYTES, load<u64>(sj));
      hole = j;
    }
    j = (j + 1) & mask;
  }
  store<u64>(base + <usize>hole * RULE_SLOT_BYTES, 0);
  store<u32>(t, load<u32>(t, H_RULE_COUNT) - 1, H_RULE_COUNT);
}

/**
 * The slot of the longest rule shorter than len that covers prefix (the route a /len falls back
 * to when deleted), or 0 if there is none.
 */
export function ruleCovering(t: usize, prefix: u32, len: i32): usize {
  for (let l = len - 1; l >= 0; l--) {
    const p = prefix & prefixMask(l);
    const s = ruleSlot(t, p, l);
    if (ruleSlotHolds(s, p, l)) return s;
  }
  return 0;
}
