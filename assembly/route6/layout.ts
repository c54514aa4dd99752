// Where everything of one IPv6 route table lives inside its memory region (see table.ts for the
// scheme). Like the IPv4 table, the header holds the sizes chosen at init and the offsets derived
// from them, so no module keeps state in a global (several Wasm instances share the memory).
//
//   offset 0              header (HEADER6_BYTES; the seqlock generation at 0, as seqlock.ts wants)
//   MASKS_OFFSET          the mask of each length 0..128 as two u64 in memory order (rules.ts)
//   BUCKETS_OFFSET        one 64-byte record per /16 (BUCKET_*): its length set, its third-byte
//                         filter and its short-table entry (4 MiB)
//   H6_NEXT_HOPS_AT       next-hop records, NEXT_HOP6_RECORD_BYTES each
//   H6_RULES_AT           rule hash slots (rules.ts), RULE6_SLOT_BYTES each
//   H6_COUNTS_AT          per (/16, length) rule counts (rules.ts), COUNT_SLOT_BYTES each

export const HEADER6_BYTES: u32 = 64;
/** u32 fields of the header (the generation, at 0, is seqlock.ts's H_GENERATION). */
export const H6_MAX_RULES: u32 = 4;
export const H6_MAX_NEXT_HOPS: u32 = 8;
export const H6_RULE_COUNT: u32 = 12;
/** Rule hash slots minus one (a power of two); the count hash has as many. */
export const H6_SLOT_MASK: u32 = 16;
export const H6_NEXT_HOPS_AT: u32 = 20;
export const H6_RULES_AT: u32 = 24;
export const H6_COUNTS_AT: u32 = 28;

export const MASKS_OFFSET: u32 = HEADER6_BYTES;
/** 129 masks of 16 bytes, rounded up to a cache line. */
export const MASKS_BYTES: u32 = 2112;
/** Prefix lengths up to this one are expanded into the bucket records' short entries; longer ones are hashed. */
export const SHORT_BITS: i32 = 16;
export const BUCKETS: u32 = 1 << SHORT_BITS;
export const BUCKETS_OFFSET: u32 = MASKS_OFFSET + MASKS_BYTES;
/** A /16's record, one cache line: what a lookup reads first, in one miss. */
export const BUCKET_BYTES: u32 = 64;
/** u64 x 2: the set of lengths 17..128 its rules have (bit 128 - length). */
export const BUCKET_LENGTHS: u32 = 0;
/**
 * 256 bits, one per value of the address's third byte: clear means no rule longer than /16 of
 * this /16 covers such addresses, so the lookup needs no probe. Set by inserts over the range a
 * rule covers, cleared only when the /16 loses its last long rule (a stale bit costs a probe,
 * never a wrong answer).
 */
export const BUCKET_FILTER: u32 = 16;
/** u32: the best rule of length 0..16 (the IPv4 entry format). */
export const BUCKET_SHORT: u32 = 48;
const FIXED_END: u32 = BUCKETS_OFFSET + BUCKETS * BUCKET_BYTES;

/** 16-byte underlay address, port, MAC, flags, padding: two records per cache line. */
export const NEXT_HOP6_RECORD_BYTES: u32 = 32;
/** Prefix (16 bytes), length tag, next hop, padding. */
export const RULE6_SLOT_BYTES: u32 = 32;
/** Key (/16 << 8 | length) and count, u32 each. */
export const COUNT_SLOT_BYTES: u32 = 8;

/** Next-hop indices live in the 24-bit value field of a short-table entry. */
export const MAX6_NEXT_HOPS: u32 = 1 << 24;
export const MAX6_RULES: u32 = 1 << 22;

/** Hash slots for a rule capacity: a power of two at least twice it (load factor <= 1/2). */
export function slots6For(maxRules: u32): u32 {
  return maxRules <= 1 ? 2 : (<u32>1) << (32 - clz(maxRules * 2 - 1));
}

export function rules6Offset(maxNextHops: u32): u64 {
  return <u64>FIXED_END + <u64>maxNextHops * NEXT_HOP6_RECORD_BYTES;
}

export function counts6Offset(maxRules: u32, maxNextHops: u32): u64 {
  return rules6Offset(maxNextHops) + <u64>slots6For(maxRules) * RULE6_SLOT_BYTES;
}

/** Whole region size in bytes, or 0 when a parameter is outside its limit. */
export function table6Bytes(maxRules: u32, maxNextHops: u32): u64 {
  if (maxRules == 0 || maxRules > MAX6_RULES) return 0;
  if (maxNextHops == 0 || maxNextHops > MAX6_NEXT_HOPS) return 0;
  return counts6Offset(maxRules, maxNextHops) + <u64>slots6For(maxRules) * COUNT_SLOT_BYTES;
}

/** First byte of the fixed region's next-hop records. */
export const NEXT_HOPS6_OFFSET: u32 = FIXED_END;
