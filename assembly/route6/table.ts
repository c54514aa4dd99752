// The IPv6 route table: rules (prefix, length 0..128) -> next-hop index, longest-prefix match,
// exact get and delete, next-hop records, and the IPv4 table's seqlock publication (../route/
// seqlock.ts): one writer, lock-free readers that redo a batch when the generation moved.
//
// Scheme. Every /16 has a 16-byte record (layout.ts ROOT_*): the best rule of length 0..16
// (expanded, in the IPv4 table's entry format: valid bit, depth, next hop), the root of a
// path-compressed multibit trie (trie.ts, 4-bit strides) holding its longer rules, and a filter of
// the address bits 16..21 those rules cover. A lookup reads its /16's record; with no root, or a
// clear filter bit, the short entry is the answer (one read, as in DIR-24-8), otherwise it walks
// the trie, one node per branching point on the way to its longest rule, and falls back to the
// short entry.
// Every rule is also in the rule hash (rules.ts), for exact gets and for the writer (the rule an
// address falls back to when one is deleted).
// Addresses are 16 bytes in network order, in memory: callers pass pointers.
import {
  ROUTE_ERR_BAD_LENGTH,
  ROUTE_ERR_BAD_NEXT_HOP,
  ROUTE_ERR_BAD_PREFIX,
  ROUTE_ERR_BAD_REGION,
  ROUTE_ERR_BAD_FIELD,
  ROUTE_ERR_EXISTS,
  ROUTE_ERR_FULL_RULES,
  ROUTE_ERR_NOT_FOUND,
  ROUTE_OK,
} from "../route/codes";
import { H_GENERATION } from "../route/layout";
import { routeReadBegin, routeReadValid, writeBegin, writeEnd } from "../route/seqlock";
import { NEXT_HOP_VALID } from "../route/nexthop";
import {
  H6_MAX_NEXT_HOPS,
  H6_MAX_RULES,
  H6_NEXT_HOPS_AT,
  H6_NODES_LIVE,
  H6_NODES_AT,
  H6_RULE_COUNT,
  H6_RULES_AT,
  H6_SLOT_MASK,
  NEXT_HOP6_RECORD_BYTES,
  NEXT_HOPS6_OFFSET,
  NODE_BYTES,
  ROOT_BYTES,
  ROOT_FILTER,
  ROOT_NODE,
  ROOT_SHORT,
  ROOTS_OFFSET,
  SHORT_BITS,
  LEAF_PAIR_RULES,
  LEAF_SLOT_BYTES,
  H6_LEAVES_AT,
  H6_LEAVES_LIVE,
  W16_BYTES,
  W16_LONG_RULES,
  W16_ROOT,
  WRITER16_OFFSET,
  leaves6Offset,
  nodes6Offset,
  rules6Offset,
  slots6For,
  table6Bytes,
} from "./layout";
import {
  maskHi,
  maskLo,
  masksInit,
  rule6Add,
  rule6Covering,
  rule6Holds,
  rule6Length,
  rule6NextHop,
  rule6Remove,
  rule6SetNextHop,
  rule6Slot,
} from "./rules";
import { LEAF_POINTER, leafAnswer, leafBuild, leafGive, leafLines, leafValue } from "./leaf";
import { MAX_LEVELS, homeDepth, trieDelete, trieInsert, trieLeaf, trieLookup, trieReplace, trieStep } from "./trie";

/** Bytes of a trie node: the region holds two per rule (trie.ts), route6Nodes says how many are in use. */
export const ROUTE6_NODE_BYTES: i32 = <i32>NODE_BYTES;

/** A /16 with up to this many rules longer than /16 is answered by range leaves (leaf.ts), not its trie. */
export const ROUTE6_LEAF_RULES: i32 = <i32>LEAF_PAIR_RULES;

/** Bytes of a range leaf slot (leaf.ts): the region holds one per rule up to 65,537, route6Leaves says how many are in use. */
export const ROUTE6_LEAF_BYTES: i32 = <i32>LEAF_SLOT_BYTES;

/** Alignment route6TableInit requires of t (the generation gets a cache line of its own). */
export const ROUTE6_TABLE_ALIGN: i32 = 64;

// Short-table entries: the IPv4 table's format (assembly/route/lpm.ts).
const ENTRY_VALID: u32 = 0x8000_0000;
const DEPTH_SHIFT: u32 = 24;
const VALUE_MASK: u32 = 0x00ff_ffff;
const OWNER_MASK: u32 = 0xff00_0000;

@inline function shortEntry(len: i32, nh: i32): u32 {
  return ENTRY_VALID | ((<u32>len) << DEPTH_SHIFT) | <u32>nh;
}

/** The record of the /16 whose first two bytes, loaded as a u16 (little-endian), are i. */
@inline function recordAt(t: usize, i: u32): usize {
  return t + <usize>ROOTS_OFFSET + <usize>i * ROOT_BYTES;
}

/** The short entry of /16 number be (the first two address bytes as a big-endian number). */
@inline function shortAt(t: usize, be: u32): usize {
  return recordAt(t, <u32>bswap<u16>(<u16>be)) + ROOT_SHORT;
}

/** Halves of the 16-byte address at p in memory order (rules.ts). */
@inline function hiOf(p: usize): u64 {
  return load<u64>(p);
}

@inline function loOf(p: usize): u64 {
  return load<u64>(p, 8);
}

/**
 * Bytes of the region for a table of maxRules rules (1..2^22) and maxNextHops next-hop records
 * (1..2^24); 0 if a count is out of its limit. 1 MiB fixed (the /16 records), then per rule
 * at most 64 B of rule hash and 2 trie nodes (2 x 96 B), per next hop 32 B.
 */
export function route6TableSize(maxRules: u32, maxNextHops: u32): usize {
  return <usize>table6Bytes(maxRules, maxNextHops);
}

/** Make the region at t an empty table with generation 0 (before sharing t with readers). */
export function route6TableInit(t: usize, maxRules: u32, maxNextHops: u32): i32 {
  const bytes = table6Bytes(maxRules, maxNextHops);
  if (bytes == 0 || (t & <usize>(ROUTE6_TABLE_ALIGN - 1)) != 0) return ROUTE_ERR_BAD_REGION;
  if (<u64>t + bytes > (<u64>memory.size()) << 16) return ROUTE_ERR_BAD_REGION;
  // Trie nodes are cleared when taken (trie.ts), so the pool needs no fill but for node 0, which
  // batches read as "no node".
  const nodesAt = nodes6Offset(maxRules, maxNextHops);
  memory.fill(t, 0, <usize>nodesAt + NODE_BYTES);
  store<u32>(t, maxRules, H6_MAX_RULES);
  store<u32>(t, maxNextHops, H6_MAX_NEXT_HOPS);
  store<u32>(t, slots6For(maxRules) - 1, H6_SLOT_MASK);
  store<u32>(t, NEXT_HOPS6_OFFSET, H6_NEXT_HOPS_AT);
  store<u32>(t, <u32>rules6Offset(maxNextHops), H6_RULES_AT);
  store<u32>(t, <u32>nodesAt, H6_NODES_AT);
  store<u32>(t, <u32>leaves6Offset(maxRules, maxNextHops), H6_LEAVES_AT);
  masksInit(t);
  atomic.store<u32>(t, 0, H_GENERATION);
  return ROUTE_OK;
}

function checkPrefix(t: usize, hi: u64, lo: u64, len: i32): i32 {
  if (<u32>len > 128) return ROUTE_ERR_BAD_LENGTH;
  if ((hi & ~maskHi(t, len)) != 0 || (lo & ~maskLo(t, len)) != 0) return ROUTE_ERR_BAD_PREFIX;
  return ROUTE_OK;
}

@inline function nextHop6InRange(t: usize, i: i32): bool {
  return <u32>i < load<u32>(t, H6_MAX_NEXT_HOPS);
}

/** Short rule: make entry win over the rule's /16s wherever no longer short rule does. */
function shortAdd(t: usize, hi: u64, len: i32, entry: u32): void {
  const first = <u32>bswap<u16>(<u16>hi);
  const end = first + ((<u32>1) << (<u32>(SHORT_BITS - len)));
  for (let be = first; be < end; be++) {
    const e = load<u32>(shortAt(t, be));
    if (<i32>((e >> DEPTH_SHIFT) & 0x3f) <= len) store<u32>(shortAt(t, be), entry);
  }
}

/** Short rule removed: the entries it owned take replacement (the covering rule's, or 0). */
function shortRemove(t: usize, hi: u64, len: i32, replacement: u32): void {
  const owned = ENTRY_VALID | ((<u32>len) << DEPTH_SHIFT);
  const first = <u32>bswap<u16>(<u16>hi);
  const end = first + ((<u32>1) << (<u32>(SHORT_BITS - len)));
  for (let be = first; be < end; be++) {
    if ((load<u32>(shortAt(t, be)) & OWNER_MASK) == owned) store<u32>(shortAt(t, be), replacement);
  }
}

/** Marks in the /16's filter the values of bits 16..21 a rule of length len (17..128) covers. */
function filterAdd(t: usize, hi: u64, len: i32): void {
  const r = recordAt(t, <u32>hi & 0xffff);
  const span: u64 = len >= 22 ? 1 : (<u64>1) << (<u64>(22 - len));
  const first = (hi >> 18) & 63 & ~(span - 1);
  const bits = span == 64 ? <u64>-1 : (((<u64>1) << span) - 1) << first;
  store<u64>(r, load<u64>(r, ROOT_FILTER) | bits, ROOT_FILTER);
}

function addRule(t: usize, s: usize, hi: u64, lo: u64, len: i32, nh: i32): i32 {
  if (load<u32>(t, H6_RULE_COUNT) >= load<u32>(t, H6_MAX_RULES)) return ROUTE_ERR_FULL_RULES;
  writeBegin(t);
  rule6Add(t, s, hi, lo, len, nh);
  if (len <= SHORT_BITS) {
    shortAdd(t, hi, len, shortEntry(len, nh));
  } else {
    filterAdd(t, hi, len);
    const w = writerAt(t, hi);
    store<u32>(w, load<u32>(w, W16_LONG_RULES) + 1, W16_LONG_RULES);
    trieInsert(t, bswap<u64>(hi), bswap<u64>(lo), len, nh);
    lookupRefresh(t, hi);
  }
  writeEnd(t);
  return ROUTE_OK;
}

/** The writer's per-/16 fields (trie root, long rules) of the /16 of address half hi. */
@inline function writerAt(t: usize, hi: u64): usize {
  return t + WRITER16_OFFSET + <usize>(<u32>hi & 0xffff) * W16_BYTES;
}

/**
 * After a change of the /16 of hi's long rules: point its record to a new range leaf when its
 * long rules fit one (leaf.ts), else to its trie (or to nothing), and give back the old leaf.
 */
function lookupRefresh(t: usize, hi: u64): void {
  const w = writerAt(t, hi);
  const root = load<u32>(w, W16_ROOT);
  const r = recordAt(t, <u32>hi & 0xffff);
  const old = load<u32>(r, ROOT_NODE);
  const rules = load<u32>(w, W16_LONG_RULES);
  store<u32>(r, root != 0 && rules <= LEAF_PAIR_RULES ? leafBuild(t, root, rules) : root, ROOT_NODE);
  if ((old & LEAF_POINTER) != 0) leafGive(t, old);
}

/** Add rule prefix/len -> nh (prefix: 16 bytes at p); ROUTE_ERR_EXISTS if present. */
export function route6Insert(t: usize, p: usize, len: i32, nh: i32): i32 {
  const hi = hiOf(p);
  const lo = loOf(p);
  const bad = checkPrefix(t, hi, lo, len);
  if (bad != ROUTE_OK) return bad;
  if (!nextHop6InRange(t, nh)) return ROUTE_ERR_BAD_NEXT_HOP;
  const s = rule6Slot(t, hi, lo, len);
  if (rule6Holds(s, hi, lo, len)) return ROUTE_ERR_EXISTS;
  return addRule(t, s, hi, lo, len, nh);
}

/** Set rule prefix/len -> nh, adding it if absent (like `ip -6 route replace`). */
export function route6Replace(t: usize, p: usize, len: i32, nh: i32): i32 {
  const hi = hiOf(p);
  const lo = loOf(p);
  const bad = checkPrefix(t, hi, lo, len);
  if (bad != ROUTE_OK) return bad;
  if (!nextHop6InRange(t, nh)) return ROUTE_ERR_BAD_NEXT_HOP;
  const s = rule6Slot(t, hi, lo, len);
  if (!rule6Holds(s, hi, lo, len)) return addRule(t, s, hi, lo, len, nh);
  writeBegin(t);
  rule6SetNextHop(s, nh);
  if (len <= SHORT_BITS) shortAdd(t, hi, len, shortEntry(len, nh));
  else {
    trieReplace(t, bswap<u64>(hi), bswap<u64>(lo), len, nh);
    lookupRefresh(t, hi);
  }
  writeEnd(t);
  return ROUTE_OK;
}

/** Remove rule prefix/len; its addresses fall back to the longest rule still covering them. */
export function route6Delete(t: usize, p: usize, len: i32): i32 {
  const hi = hiOf(p);
  const lo = loOf(p);
  const bad = checkPrefix(t, hi, lo, len);
  if (bad != ROUTE_OK) return bad;
  const s = rule6Slot(t, hi, lo, len);
  if (!rule6Holds(s, hi, lo, len)) return ROUTE_ERR_NOT_FOUND;
  // What its addresses fall back to: the longest rule covering it in the short table, or in its trie node.
  const shortest = len <= SHORT_BITS ? 0 : homeDepth(len) + 1;
  const cover = rule6Covering(t, hi, lo, len, shortest);
  let fallback: u32 = 0;
  if (cover != 0) {
    const l = rule6Length(cover);
    fallback =
      len <= SHORT_BITS ? shortEntry(l, rule6NextHop(cover)) : trieLeaf(l, homeDepth(len), rule6NextHop(cover));
  }
  writeBegin(t);
  rule6Remove(t, s);
  if (len <= SHORT_BITS) shortRemove(t, hi, len, fallback);
  else {
    trieDelete(t, bswap<u64>(hi), bswap<u64>(lo), len, fallback);
    const w = writerAt(t, hi);
    store<u32>(w, load<u32>(w, W16_LONG_RULES) - 1, W16_LONG_RULES);
    lookupRefresh(t, hi);
    const r = recordAt(t, <u32>hi & 0xffff);
    if (load<u32>(r, ROOT_NODE) == 0) store<u64>(r, 0, ROOT_FILTER);
  }
  writeEnd(t);
  return ROUTE_OK;
}

/** Next hop of the exact rule prefix/len, or a negative code. Safe on any thread. */
export function route6Get(t: usize, p: usize, len: i32): i32 {
  const hi = hiOf(p);
  const lo = loOf(p);
  const bad = checkPrefix(t, hi, lo, len);
  if (bad != ROUTE_OK) return bad;
  let gen: u32;
  let nh: i32;
  do {
    gen = routeReadBegin(t);
    const s = rule6Slot(t, hi, lo, len);
    nh = rule6Holds(s, hi, lo, len) ? rule6NextHop(s) : ROUTE_ERR_NOT_FOUND;
  } while (!routeReadValid(t, gen));
  return nh;
}

/**
 * Longest match of the address (hi, lo) (memory-order halves): its /16's record, then its trie.
 * AS callers bracket a batch of these with routeReadBegin/routeReadValid.
 */
@inline export function lookup6(t: usize, hi: u64, lo: u64): i32 {
  const r = recordAt(t, <u32>hi & 0xffff);
  const rec = load<u64>(r);
  const e = <u32>rec;
  const short = select<i32>(<i32>(e & VALUE_MASK), -1, <i32>e < 0);
  const root = <u32>(rec >> 32);
  if (root == 0 || !filtered(r, hi)) return short;
  if ((root & LEAF_POINTER) != 0) return leafAnswer(leafValue(t, root, hi, lo), short);
  return trieLookup(t, hi, lo, root, short, MAX_LEVELS, false);
}

/** Whether the filter of record r lets address hi (memory order) into the trie: its bits 16..21. */
@inline function filtered(r: usize, hi: u64): bool {
  return ((load<u64>(r, ROOT_FILTER) >> ((hi >> 18) & 63)) & 1) != 0;
}

/** Next-hop index of the longest prefix covering the 16-byte address at a, or -1. */
@inline export function route6Lookup(t: usize, a: usize): i32 {
  return lookup6(t, hiOf(a), loOf(a));
}

/**
 * Up to this many bytes of trie nodes and range leaves (512 KiB) a table is taken to stay in
 * cache, where the batch's passes below cost more than they save (10k pod /64s, 700 nodes: 33 M
 * lookups/s with them, 60 M without; see ARCHITECTURE.md).
 */
export const ROUTE6_CACHED_BYTES: u32 = 512 << 10;

/** Whether the table's nodes and leaves fit ROUTE6_CACHED_BYTES. */
@inline function inCache(t: usize): bool {
  const bytes = <u64>load<u32>(t, H6_NODES_LIVE) * NODE_BYTES + <u64>load<u32>(t, H6_LEAVES_LIVE) * LEAF_SLOT_BYTES;
  return bytes <= ROUTE6_CACHED_BYTES;
}

/**
 * out[i] = route6Lookup(addrs + 16 i) for i < n, as one consistent snapshot (redone if an update
 * overlapped). A lookup is a chain of dependent loads (record, then a leaf or a trie node per
 * level), each a likely cache miss in a large table; so the batch works on 64 addresses at a time
 * in passes, each reading one step of all the addresses that need it, so that the misses of
 * different addresses overlap: their records; a first read of each range leaf (leaf.ts); the trie
 * walks one level per pass, keeping only the next pointer in out and the walks still going as bits
 * of a mask; then the trie lookups from cache, each as many steps as the deepest walk of its 64
 * took, without data-dependent branches; and last the leaf lookups, from cache.
 */
export function route6LookupBatch(t: usize, addrs: usize, out: usize, n: i32): void {
  if (n <= 0) return;
  const end = (<usize>n) << 2;
  let gen: u32;
  if (inCache(t)) {
    do {
      gen = routeReadBegin(t);
      for (let o: usize = 0; o < end; o += 4) store<i32>(out + o, route6Lookup(t, addrs + (o << 2)));
    } while (!routeReadValid(t, gen));
    return;
  }
  do {
    gen = routeReadBegin(t);
    // In groups of 64 addresses: `live` has the bits of the trie walks still going (a level pass
    // steps only those; the third pass of a batch has about 3 of 64 left), `leaves` those of the
    // addresses a range leaf answers.
    for (let c: usize = 0; c < end; c += 256) {
      const stop = min(end, c + 256);
      let live: u64 = 0;
      let leaves: u64 = 0;
      for (let o = c; o < stop; o += 4) {
        const hi = load<u64>(addrs + (o << 2));
        const r = recordAt(t, <u32>hi & 0xffff);
        const p = select<u32>(load<u32>(r, ROOT_NODE), 0, filtered(r, hi));
        store<u32>(out + o, p);
        const i = <u64>((o - c) >> 2);
        live |= (<u64>(<i32>p > 0)) << i;
        leaves |= (<u64>(p >> 31)) << i;
      }
      // Both lines of each leaf, stored where the answer goes later (so that the reads stay).
      let each = leaves;
      while (each != 0) {
        const o = c + ((<usize>ctz(each)) << 2);
        each &= each - 1;
        store<u32>(out + o, <u32>leafLines(t, load<u32>(out + o)));
      }
      let levels = 0;
      while (live != 0 && levels < MAX_LEVELS) {
        levels++;
        let still: u64 = 0;
        do {
          const i = ctz(live);
          live &= live - 1;
          const o = c + ((<usize>i) << 2);
          const q = trieStep(t, load<u64>(addrs + (o << 2)), load<u64>(addrs + (o << 2), 8), load<u32>(out + o));
          store<u32>(out + o, q);
          still |= (<u64>(q != 0)) << i;
        } while (live != 0);
        live = still;
      }
      for (let o = c; o < stop; o += 4) {
        const a = addrs + (o << 2);
        const hi = load<u64>(a);
        const r = recordAt(t, <u32>hi & 0xffff);
        const rec = load<u64>(r);
        const e = <u32>rec;
        const short = select<i32>(<i32>(e & VALUE_MASK), -1, <i32>e < 0);
        // Leaves' addresses get their short answer here and their own in the pass after.
        const root = select<u32>(<u32>(rec >> 32), 0, filtered(r, hi) & (<i32>(rec >> 32) > 0));
        store<i32>(out + o, root == 0 ? short : trieLookup(t, hi, load<u64>(a, 8), root, short, levels, true));
      }
      while (leaves != 0) {
        const o = c + ((<usize>ctz(leaves)) << 2);
        leaves &= leaves - 1;
        const a = addrs + (o << 2);
        const hi = load<u64>(a);
        const rec = load<u64>(recordAt(t, <u32>hi & 0xffff));
        const e = <u32>rec;
        const short = select<i32>(<i32>(e & VALUE_MASK), -1, <i32>e < 0);
        store<i32>(out + o, leafAnswer(leafValue(t, <u32>(rec >> 32), hi, load<u64>(a, 8)), short));
      }
    }
  } while (!routeReadValid(t, gen));
}

/** Nodes of the tries (memory in use beyond the fixed part: NODE_BYTES each, and the leaves). */
export function route6Nodes(t: usize): i32 {
  return <i32>load<u32>(t, H6_NODES_LIVE);
}

/** Range leaf slots in use (ROUTE6_LEAF_BYTES each). */
export function route6Leaves(t: usize): i32 {
  return <i32>load<u32>(t, H6_LEAVES_LIVE);
}

/** Rules in the table. */
export function route6Count(t: usize): i32 {
  return <i32>load<u32>(t, H6_RULE_COUNT);
}

// Next-hop records, NEXT_HOP6_BYTES each: where a route's packets go.
//   NEXT_HOP6_UNDERLAY  16 B  peer underlay address, network order (IPv4 as ::ffff:a.b.c.d)
//   NEXT_HOP6_PORT      u16   peer UDP port
//   NEXT_HOP6_MAC       6 B   peer VTEP MAC in wire order
//   NEXT_HOP6_FLAGS     u32   NEXT_HOP_VALID (../route/nexthop.ts) once set
export const NEXT_HOP6_BYTES: i32 = <i32>NEXT_HOP6_RECORD_BYTES;
export const NEXT_HOP6_UNDERLAY: i32 = 0;
export const NEXT_HOP6_PORT: i32 = 16;
export const NEXT_HOP6_MAC: i32 = 18;
export const NEXT_HOP6_FLAGS: i32 = 24;

/** Record i; unchecked, for AS callers holding an index from a lookup (always in range). */
@inline export function nextHop6Ptr(t: usize, i: i32): usize {
  return t + load<u32>(t, H6_NEXT_HOPS_AT) + <usize>i * NEXT_HOP6_RECORD_BYTES;
}

/** Set next hop i: the 16-byte underlay address at a, UDP port, MAC halves as in nextHopSet. */
export function nextHop6Set(t: usize, i: i32, a: usize, udpPort: u32, macHi16: u32, macLo32: u32): i32 {
  if (!nextHop6InRange(t, i)) return ROUTE_ERR_BAD_NEXT_HOP;
  if (udpPort > 0xffff || macHi16 > 0xffff) return ROUTE_ERR_BAD_FIELD;
  const r = nextHop6Ptr(t, i);
  writeBegin(t);
  store<u64>(r, load<u64>(a), NEXT_HOP6_UNDERLAY);
  store<u64>(r, load<u64>(a, 8), NEXT_HOP6_UNDERLAY + 8);
  store<u16>(r, <u16>udpPort, NEXT_HOP6_PORT);
  store<u16>(r, bswap<u16>(<u16>macHi16), NEXT_HOP6_MAC);
  store<u32>(r, bswap<u32>(macLo32), NEXT_HOP6_MAC + 2);
  store<u32>(r, NEXT_HOP_VALID, NEXT_HOP6_FLAGS);
  writeEnd(t);
  return ROUTE_OK;
}

/** Invalidate next hop i: routes through it stay, their packets drop until it is set again. */
export function nextHop6Clear(t: usize, i: i32): i32 {
  if (!nextHop6InRange(t, i)) return ROUTE_ERR_BAD_NEXT_HOP;
  const r = nextHop6Ptr(t, i);
  writeBegin(t);
  memory.fill(r, 0, NEXT_HOP6_RECORD_BYTES);
  writeEnd(t);
  return ROUTE_OK;
}
