// Where everything of one IPv6 route table lives inside its memory region (see table.ts and
// trie.ts for the scheme). Like the IPv4 table, the header holds the sizes chosen at init and the
// offsets derived from them, so no module keeps state in a global (several Wasm instances share
// the memory).
//
//   offset 0              header (HEADER6_BYTES; the seqlock generation at 0, as seqlock.ts wants)
//   MASKS_OFFSET          the mask of each length 0..128 as two u64 in memory order (rules.ts)
//   ROOTS_OFFSET          one 16-byte record per /16 (ROOT_*): its short entry, lookup pointer and filter
//   WRITER16_OFFSET       per /16, writer only (W16_*): its trie root and its count of rules longer than /16
//   RANGES_OFFSET         writer only: the ranges of one /16 while its leaf is built (leaf.ts)
//   H6_NEXT_HOPS_AT       next-hop records, NEXT_HOP6_RECORD_BYTES each
//   H6_RULES_AT           rule hash slots (rules.ts), RULE6_SLOT_BYTES each
//   H6_NODES_AT           trie nodes (trie.ts), NODE_BYTES each; node 0 is never used (0 = none)
//   H6_LEAVES_AT          range leaf slots (leaf.ts), LEAF_SLOT_BYTES each, on cache lines; slot 0 is never used

export const HEADER6_BYTES: u32 = 64;
/** u32 fields of the header (the generation, at 0, is seqlock.ts's H_GENERATION). */
export const H6_MAX_RULES: u32 = 4;
export const H6_MAX_NEXT_HOPS: u32 = 8;
export const H6_RULE_COUNT: u32 = 12;
/** Rule hash slots minus one (a power of two). */
export const H6_SLOT_MASK: u32 = 16;
export const H6_NEXT_HOPS_AT: u32 = 20;
export const H6_RULES_AT: u32 = 24;
/** Trie nodes: a pool (pool.ts), its four fields in pool.ts's order. */
export const H6_NODES_AT: u32 = 28;
/** Head of the list of freed nodes (linked through NODE_FREE_NEXT), 0 = empty. */
export const H6_FREE_NODES: u32 = 32;
/** Nodes handed out so far from the never-used end of the pool (node indices 1..this). */
export const H6_NODES_USED: u32 = 36;
/** Nodes in the trie now (taken minus given back). */
export const H6_NODES_LIVE: u32 = 40;
/** Range leaf slots (leaf.ts): a pool as the nodes (where they start, freed ones, handed out so far, in use now). */
export const H6_LEAVES_AT: u32 = 44;
export const H6_FREE_LEAVES: u32 = 48;
export const H6_LEAVES_USED: u32 = 52;
export const H6_LEAVES_LIVE: u32 = 56;

export const MASKS_OFFSET: u32 = HEADER6_BYTES;
/** 129 masks of 16 bytes, rounded up to a cache line. */
export const MASKS_BYTES: u32 = 2112;
/** Prefix lengths up to this one are expanded into the /16 records' short entries; longer ones go to the trie. */
export const SHORT_BITS: i32 = 16;
export const ROOTS: u32 = 1 << SHORT_BITS;
export const ROOTS_OFFSET: u32 = MASKS_OFFSET + MASKS_BYTES;
/**
 * A /16's record: the short entry (u32) and where lookups go on (u32: 0, its trie root as a trie
 * pointer, or LEAF_POINTER | its range leaf when its few rules fit one; leaf.ts), read as one u64,
 */
export const ROOT_BYTES: u32 = 16;
export const ROOT_SHORT: u32 = 0;
export const ROOT_NODE: u32 = 4;
/**
 * and a u64 filter, one bit per value of address bits 16..21: clear means no rule of the trie
 * covers such addresses, so the lookup needs no walk. Set by inserts over the values a rule
 * covers, cleared only when the trie empties (a stale bit costs a walk, never a wrong answer).
 */
export const ROOT_FILTER: u32 = 8;
/** Per /16, writer only: its trie root (u32, a trie pointer, 0 = none) and its rules longer than /16 (u32). */
export const WRITER16_OFFSET: u32 = ROOTS_OFFSET + ROOTS * ROOT_BYTES;
export const W16_BYTES: u32 = 8;
export const W16_ROOT: u32 = 0;
export const W16_LONG_RULES: u32 = 4;
/** Writer scratch: the raw ranges of one /16 (leaf.ts), RANGE_BYTES each. */
export const RANGES_OFFSET: u32 = WRITER16_OFFSET + ROOTS * W16_BYTES;
export const RANGE_BYTES: u32 = 24;
export const MAX_RANGES: u32 = 256;
const FIXED_END: u32 = RANGES_OFFSET + MAX_RANGES * RANGE_BYTES;

/** 16-byte underlay address, port, MAC, flags, padding: two records per cache line. */
export const NEXT_HOP6_RECORD_BYTES: u32 = 32;
/** Prefix (16 bytes), length tag, next hop, padding. */
export const RULE6_SLOT_BYTES: u32 = 32;

/** Trie stride in bits (trie.ts): node depths are 16 + 4k, so a stride is a nibble of one byte. */
export const STRIDE: i32 = 4;
export const NODE_SLOTS: u32 = 1 << STRIDE;
/** Trie node (trie.ts): a 32-byte header, then NODE_SLOTS u32 entries. Header fields: */
export const NODE_BYTES: u32 = 32 + (NODE_SLOTS << 2);
/** u64 x 2: the node's key, address bits 0..depth-1 as big-endian numbers (rest zero). */
export const NODE_KEY_HI: u32 = 0;
export const NODE_KEY_LO: u32 = 8;
/** u32: the parent's leaf for the slot this node hangs from (a leaf entry, or 0: none). */
export const NODE_LEAF: u32 = 16;
/** u32, writer only: the node's depth, 16 + STRIDE k (lookups take k from the pointer). */
export const NODE_DEPTH: u32 = 20;
/** u32, writer only: rules whose home is this node. */
export const NODE_RULES: u32 = 24;
/** u32, writer only: the parent node, 0 when the node hangs from its /16 record; the next free node once freed. */
export const NODE_PARENT: u32 = 28;
export const NODE_FREE_NEXT: u32 = 28;
export const NODE_ENTRIES: u32 = 32;

/**
 * Range leaf (leaf.ts): up to LEAF_KEYS range starts as two arrays of u64 (high halves, then low
 * halves, in the form leaf.ts compares), then LEAF_KEYS + 1 u32 values and a writer's u32. Leaves
 * live in slots of two: a /16 with more rules takes both (a pair, twice the starts).
 */
export const LEAF_KEYS: u32 = 6;
export const LEAF_BYTES: u32 = 128;
export const LEAF_SLOT_BYTES: u32 = 2 * LEAF_BYTES;
export const LEAF_HI: u32 = 0;
export const LEAF_LO: u32 = 48;
export const LEAF_VALUES: u32 = 96;
/** u32, writer only: the next free slot once freed. */
export const LEAF_FREE_NEXT: u32 = 124;
/** A /16 with at most this many rules longer than /16 gets a leaf (2 range starts per rule at most), */
export const LEAF_RULES: u32 = LEAF_KEYS / 2;
/** with at most this many a pair. */
export const LEAF_PAIR_RULES: u32 = LEAF_KEYS;

/** Next-hop indices (and node indices) live in the 24-bit value field of an entry. */
export const MAX6_NEXT_HOPS: u32 = 1 << 24;
export const MAX6_RULES: u32 = 1 << 22;

/** Hash slots for a rule capacity: a power of two at least twice it (load factor <= 1/2). */
export function slots6For(maxRules: u32): u32 {
  return maxRules <= 1 ? 2 : (<u32>1) << (32 - clz(maxRules * 2 - 1));
}

/** Trie nodes for a rule capacity: every node holds a rule or branches, so 2 per rule (trie.ts). */
export function nodes6For(maxRules: u32): u32 {
  return maxRules * 2;
}

export function rules6Offset(maxNextHops: u32): u64 {
  return <u64>FIXED_END + <u64>maxNextHops * NEXT_HOP6_RECORD_BYTES;
}

export function nodes6Offset(maxRules: u32, maxNextHops: u32): u64 {
  return rules6Offset(maxNextHops) + <u64>slots6For(maxRules) * RULE6_SLOT_BYTES;
}

/** Range leaf slots for a rule capacity: one per /16 with long rules, and one more built before the old one goes. */
export function leaves6For(maxRules: u32): u32 {
  return min(maxRules, ROOTS) + 1;
}

/** Leaves start on a cache line (the table is 64-aligned), so a leaf is two whole lines. */
export function leaves6Offset(maxRules: u32, maxNextHops: u32): u64 {
  // Node 0 is a placeholder, so indices start at 1.
  const end = nodes6Offset(maxRules, maxNextHops) + (<u64>nodes6For(maxRules) + 1) * NODE_BYTES;
  return (end + 63) & ~(<u64>63);
}

/** Whole region size in bytes, or 0 when a parameter is outside its limit. */
export function table6Bytes(maxRules: u32, maxNextHops: u32): u64 {
  if (maxRules == 0 || maxRules > MAX6_RULES) return 0;
  if (maxNextHops == 0 || maxNextHops > MAX6_NEXT_HOPS) return 0;
  // Leaf 0 is a placeholder too.
  return leaves6Offset(maxRules, maxNextHops) + (<u64>leaves6For(maxRules) + 1) * LEAF_SLOT_BYTES;
}

/** First byte of the fixed region's next-hop records. */
export const NEXT_HOPS6_OFFSET: u32 = FIXED_END;
