// Where everything of one route table lives inside its memory region. The region is a header
// followed by fixed arrays; the header holds the sizes chosen at init and the offsets derived from
// them, so no module ever keeps state in a global (several Wasm instances share the memory).
//
//   offset 0              header (HEADER_BYTES)
//   TBL24_OFFSET          tbl24: 2^24 u32 entries, one per /24            (64 MiB)
//   TBL8_OFFSET           tbl8: groups of 256 u32 entries, one per /32 of a /24 (1 KiB each)
//   H_NEXT_HOPS_AT        next-hop records (nexthop.ts)
//   H_RULES_AT            rule hash slots (rules.ts)
//   H_FREE_GROUPS_AT      stack of free tbl8 group indices, u32 each
//
// tbl24 and tbl8 sit at constant offsets so that lookups need no header load.

/** Header bytes: one cache line. Readers use the generation and H_NEXT_HOPS_AT; the rest is the writer's. */
export const HEADER_BYTES: u32 = 64;

/** u32, the seqlock generation (seqlock.ts). Must stay at 0: atomics need natural alignment. */
export const H_GENERATION: u32 = 0;
/** u32, most rules (prefixes) the table accepts. */
export const H_MAX_RULES: u32 = 4;
/** u32, number of next-hop records. */
export const H_MAX_NEXT_HOPS: u32 = 8;
/** u32, rules currently stored. */
export const H_RULE_COUNT: u32 = 12;
/** u32, rule hash slots minus one (slot count is a power of two). */
export const H_RULE_MASK: u32 = 16;
/** u32, free tbl8 groups (entries used on the free stack). */
export const H_FREE_GROUPS: u32 = 20;
/** u32 offsets from the table start of the variable-sized arrays. */
export const H_NEXT_HOPS_AT: u32 = 24;
export const H_RULES_AT: u32 = 28;
export const H_FREE_GROUPS_AT: u32 = 32;

export const TBL24_ENTRIES: u32 = 1 << 24;
export const TBL24_OFFSET: u32 = HEADER_BYTES;
export const TBL8_OFFSET: u32 = HEADER_BYTES + (TBL24_ENTRIES << 2);
/** Entries per tbl8 group: one per address of a /24. */
export const TBL8_GROUP_ENTRIES: u32 = 256;
export const TBL8_GROUP_BYTES: u32 = TBL8_GROUP_ENTRIES << 2;

/** Bytes per rule hash slot (rules.ts). */
export const RULE_SLOT_BYTES: u32 = 8;
/** Bytes per next-hop record (nexthop.ts). */
export const NEXT_HOP_RECORD_BYTES: u32 = 16;

// Limits. Group and next-hop indices live in the 24-bit value field of an entry; the rest keeps
// the whole region well inside the 4 GiB a wasm32 memory can address.
export const MAX_TBL8_GROUPS: u32 = 1 << 20;
export const MAX_RULES: u32 = 1 << 22;
export const MAX_NEXT_HOPS: u32 = 1 << 24;

/** Rule hash slots for a rule capacity: a power of two at least twice it (load factor <= 1/2). */
export function ruleSlotsFor(maxRules: u32): u32 {
  return maxRules <= 1 ? 2 : (<u32>1) << (32 - clz(maxRules * 2 - 1));
}

/** Offset of the next-hop records: right after the tbl8 groups. */
export function nextHopsOffset(tbl8Groups: u32): u64 {
  return <u64>TBL8_OFFSET + <u64>tbl8Groups * TBL8_GROUP_BYTES;
}

export function rulesOffset(tbl8Groups: u32, maxNextHops: u32): u64 {
  return nextHopsOffset(tbl8Groups) + <u64>maxNextHops * NEXT_HOP_RECORD_BYTES;
}

export function freeGroupsOffset(tbl8Groups: u32, maxRules: u32, maxNextHops: u32): u64 {
  return rulesOffset(tbl8Groups, maxNextHops) + <u64>ruleSlotsFor(maxRules) * RULE_SLOT_BYTES;
}

/** Whole region size in bytes, or 0 when a parameter is outside its limit. */
export function tableBytes(tbl8Groups: u32, maxRules: u32, maxNextHops: u32): u64 {
  if (tbl8Groups > MAX_TBL8_GROUPS) return 0;
  if (maxRules == 0 || maxRules > MAX_RULES) return 0;
  if (maxNextHops == 0 || maxNextHops > MAX_NEXT_HOPS) return 0;
  return freeGroupsOffset(tbl8Groups, maxRules, maxNextHops) + ((<u64>tbl8Groups) << 2);
}
