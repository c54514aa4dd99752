// The IPv4 route table API: one table per memory region at t (see layout.ts), rules (prefix,
// length) -> next-hop index with longest-prefix-match lookup (lpm.ts), exact get and delete (rules.ts),
// next-hop records (nexthop.ts), and seqlock publication to reader threads (seqlock.ts).
// Addresses and prefixes are u32 numbers, first octet most significant (198.19.1.0 = 0xC6130100).
// Mutations come from one writer at a time; lookups may run on any thread meanwhile.
import {
  ROUTE_ERR_BAD_LENGTH,
  ROUTE_ERR_BAD_NEXT_HOP,
  ROUTE_ERR_BAD_PREFIX,
  ROUTE_ERR_BAD_REGION,
  ROUTE_ERR_EXISTS,
  ROUTE_ERR_FULL_RULES,
  ROUTE_ERR_FULL_TBL8,
  ROUTE_ERR_NOT_FOUND,
  ROUTE_OK,
} from "./codes";
import {
  H_FREE_GROUPS_AT,
  H_GENERATION,
  H_MAX_NEXT_HOPS,
  H_MAX_RULES,
  H_NEXT_HOPS_AT,
  H_RULE_COUNT,
  H_RULE_MASK,
  H_RULES_AT,
  NEXT_HOP_RECORD_BYTES,
  RULE_SLOT_BYTES,
  freeGroupsOffset,
  nextHopsOffset,
  ruleSlotsFor,
  rulesOffset,
  tableBytes,
} from "./layout";
import { lpmAdd, lpmEntry, lpmHasRoomFor, lpmInit, lpmLookup, lpmLookupBatch, lpmRemove } from "./lpm";
import { nextHopInRange } from "./nexthop";
import {
  prefixMask,
  ruleAdd,
  ruleCovering,
  ruleRemove,
  ruleSetNextHop,
  ruleSlot,
  ruleSlotHolds,
  ruleSlotLength,
  ruleSlotNextHop,
} from "./rules";
import { routeReadBegin, routeReadValid, writeBegin, writeEnd } from "./seqlock";

export * from "./codes";
export {
  NEXT_HOP_BYTES,
  NEXT_HOP_FLAGS,
  NEXT_HOP_MAC,
  NEXT_HOP_PORT,
  NEXT_HOP_UNDERLAY,
  NEXT_HOP_VALID,
  nextHopClear,
  nextHopPtr,
  nextHopSet,
} from "./nexthop";
export { routeReadBegin, routeReadValid } from "./seqlock";

/** Alignment routeTableInit requires of t: the generation counter gets a cache line of its own. */
export const ROUTE_TABLE_ALIGN: i32 = 64;

/**
 * Bytes of the region for a table with tbl8Groups groups (one per /24 holding prefixes longer
 * than /24; 1 KiB each), maxRules rules and maxNextHops next-hop records; 0 if a count is out of
 * its limit (groups <= 2^20, rules 1..2^22, next hops 1..2^24). At least 64 MiB (tbl24).
 */
export function routeTableSize(tbl8Groups: u32, maxRules: u32, maxNextHops: u32): usize {
  return <usize>tableBytes(tbl8Groups, maxRules, maxNextHops);
}

/**
 * Make the region at t (routeTableSize bytes, any content) an empty table with generation 0.
 * Not safe against concurrent readers: initialise before sharing t.
 */
export function routeTableInit(t: usize, tbl8Groups: u32, maxRules: u32, maxNextHops: u32): i32 {
  const bytes = tableBytes(tbl8Groups, maxRules, maxNextHops);
  if (bytes == 0 || (t & <usize>(ROUTE_TABLE_ALIGN - 1)) != 0) return ROUTE_ERR_BAD_REGION;
  if (<u64>t + bytes > (<u64>memory.size()) << 16) return ROUTE_ERR_BAD_REGION;
  const nextHopsAt = <u32>nextHopsOffset(tbl8Groups);
  const rulesAt = <u32>rulesOffset(tbl8Groups, maxNextHops);
  const slots = ruleSlotsFor(maxRules);
  atomic.store<u32>(t, 0, H_GENERATION);
  store<u32>(t, maxRules, H_MAX_RULES);
  store<u32>(t, maxNextHops, H_MAX_NEXT_HOPS);
  store<u32>(t, 0, H_RULE_COUNT);
  store<u32>(t, slots - 1, H_RULE_MASK);
  store<u32>(t, nextHopsAt, H_NEXT_HOPS_AT);
  store<u32>(t, rulesAt, H_RULES_AT);
  store<u32>(t, <u32>freeGroupsOffset(tbl8Groups, maxRules, maxNextHops), H_FREE_GROUPS_AT);
  memory.fill(t + nextHopsAt, 0, <usize>maxNextHops * NEXT_HOP_RECORD_BYTES);
  memory.fill(t + rulesAt, 0, <usize>slots * RULE_SLOT_BYTES);
  lpmInit(t, tbl8Groups);
  return ROUTE_OK;
}

/** ROUTE_OK if (prefix, len) names a network: length 0..32 and no host bits set. */
function checkPrefix(prefix: u32, len: i32): i32 {
  if (<u32>len > 32) return ROUTE_ERR_BAD_LENGTH;
  if (prefix & ~prefixMask(len)) return ROUTE_ERR_BAD_PREFIX;
  return ROUTE_OK;
}

/** Store a new rule in the empty rule slot s, after checking every capacity it needs. */
function addRule(t: usize, s: usize, prefix: u32, len: i32, nh: i32): i32 {
  if (load<u32>(t, H_RULE_COUNT) >= load<u32>(t, H_MAX_RULES)) return ROUTE_ERR_FULL_RULES;
  if (!lpmHasRoomFor(t, prefix, len)) return ROUTE_ERR_FULL_TBL8;
  writeBegin(t);
  ruleAdd(t, s, prefix, len, nh);
  lpmAdd(t, prefix, len, lpmEntry(len, nh));
  writeEnd(t);
  return ROUTE_OK;
}

/** Add rule prefix/len -> next hop nh; ROUTE_ERR_EXISTS if that exact rule is present. */
export function routeInsert(t: usize, prefix: u32, len: i32, nh: i32): i32 {
  const bad = checkPrefix(prefix, len);
  if (bad != ROUTE_OK) return bad;
  if (!nextHopInRange(t, nh)) return ROUTE_ERR_BAD_NEXT_HOP;
  const s = ruleSlot(t, prefix, len);
  if (ruleSlotHolds(s, prefix, len)) return ROUTE_ERR_EXISTS;
  return addRule(t, s, prefix, len, nh);
}

/** Set rule prefix/len -> next hop nh, adding it if absent (like `ip route replace`). */
export function routeReplace(t: usize, prefix: u32, len: i32, nh: i32): i32 {
  const bad = checkPrefix(prefix, len);
  if (bad != ROUTE_OK) return bad;
  if (!nextHopInRange(t, nh)) return ROUTE_ERR_BAD_NEXT_HOP;
  const s = ruleSlot(t, prefix, len);
  if (!ruleSlotHolds(s, prefix, len)) return addRule(t, s, prefix, len, nh);
  writeBegin(t);
  ruleSetNextHop(s, len, nh);
  // Entries of depth len under the prefix are exactly this rule's: they take the new next hop.
  lpmAdd(t, prefix, len, lpmEntry(len, nh));
  writeEnd(t);
  return ROUTE_OK;
}

/** Remove rule prefix/len; its addresses fall back to the longest rule still covering them. */
export function routeDelete(t: usize, prefix: u32, len: i32): i32 {
  const bad = checkPrefix(prefix, len);
  if (bad != ROUTE_OK) return bad;
  const s = ruleSlot(t, prefix, len);
  if (!ruleSlotHolds(s, prefix, len)) return ROUTE_ERR_NOT_FOUND;
  // Read the fallback before removing: removal shifts slots, and the odd phase stays short.
  const cover = ruleCovering(t, prefix, len);
  const fallback = cover != 0 ? lpmEntry(ruleSlotLength(cover), ruleSlotNextHop(cover)) : 0;
  writeBegin(t);
  ruleRemove(t, s);
  lpmRemove(t, prefix, len, fallback);
  writeEnd(t);
  return ROUTE_OK;
}

/**
 * Next hop of the exact rule prefix/len, or ROUTE_ERR_NOT_FOUND (-1); ROUTE_ERR_BAD_LENGTH or
 * ROUTE_ERR_BAD_PREFIX for a malformed prefix. Safe on any thread (seqlock read).
 */
export function routeGet(t: usize, prefix: u32, len: i32): i32 {
  const bad = checkPrefix(prefix, len);
  if (bad != ROUTE_OK) return bad;
  let gen: u32;
  let nh: i32;
  do {
    gen = routeReadBegin(t);
    const s = ruleSlot(t, prefix, len);
    nh = ruleSlotHolds(s, prefix, len) ? ruleSlotNextHop(s) : ROUTE_ERR_NOT_FOUND;
  } while (!routeReadValid(t, gen));
  return nh;
}

/**
 * Next-hop index of the longest prefix covering addr, or -1. One read, two for addresses under
 * prefixes longer than /24. AS callers bracket a batch of these with routeReadBegin/Valid.
 */
@inline export function routeLookup(t: usize, addr: u32): i32 {
  return lpmLookup(t, addr);
}

/**
 * out[i] = routeLookup(addrs[i]) for i < n (u32 addresses in, i32 next hops or -1 out), as one
 * consistent snapshot: redone if an update overlapped. out must not overlap addrs.
 */
export function routeLookupBatch(t: usize, addrs: usize, out: usize, n: i32): void {
  if (n <= 0) return;
  let gen: u32;
  do {
    gen = routeReadBegin(t);
    lpmLookupBatch(t, addrs, out, n);
  } while (!routeReadValid(t, gen));
}

/** Rules in the table. */
export function routeCount(t: usize): i32 {
  return <i32>load<u32>(t, H_RULE_COUNT);
}
