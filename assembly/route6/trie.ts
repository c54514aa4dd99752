// The IPv6 table's rules longer than /16: one path-compressed multibit trie per /16, hung from the
// /16's record (layout.ts ROOT_NODE), with 4-bit strides (STRIDE) at fixed depths 16, 20, ..., 124.
//
// A node of depth D covers the addresses whose bits 0..D-1 equal its key and has one u32 entry per
// value of bits D..D+3. A rule of length L lives in exactly one node, its home, of depth
// D = 16 + 4 floor((L - 17) / 4) (so 1 <= L - D <= 4), expanded over the 2^(4 - (L - D)) entries
// it covers, where no longer rule of the same node wins. An entry holds:
//   0                                   no rule of this node covers the slot
//   LEAF_VALID | rel << 24 | next hop   the longest rule of this node covering it (rel = L - D)
//   CHILD | SKIP? | level << 24 | node  a deeper node (depth 16 + 4 level); the slot's leaf then
//                                       lives in that node's NODE_LEAF
// Rules are expanded within their node only, never pushed into deeper nodes, so an update writes
// at most 16 entries of one node (and the NODE_LEAF of its children there); a lookup remembers the
// last leaf it passed. Path compression: a child may be deeper than its parent's depth + 4; its
// pointer then has SKIP, and a lookup whose address differs from that node's key stops there.
// Every node holds a rule or has two children or more (deletes splice and free the others), so a
// /16 with r rules has fewer than 2r nodes, and a lookup reads its /16's record and then at most
// 28 nodes, in practice one to four: one per branching point on the way to its longest rule.
//
// Updates run in place under the table's seqlock (../route/seqlock.ts): readers that overlap one
// redo their batch. What a racing reader may see is still safe: every entry and header field is
// written whole and only ever holds in-range node and next-hop indices (freed nodes keep theirs),
// and the walk stops after MAX_LEVELS nodes whatever it reads.
// The writer works on big-endian halves of prefixes (a = bits 0..63, b = bits 64..127); node keys
// and lookups use memory order (rules.ts), which spares lookups the byte swaps.
import {
  H6_NODES_AT,
  NODE_BYTES,
  NODE_DEPTH,
  NODE_ENTRIES,
  NODE_FREE_NEXT,
  NODE_KEY_HI,
  NODE_KEY_LO,
  NODE_LEAF,
  NODE_PARENT,
  NODE_RULES,
  NODE_SLOTS,
  RANGE_BYTES,
  MAX_RANGES,
  SHORT_BITS,
  STRIDE,
  W16_BYTES,
  W16_ROOT,
  WRITER16_OFFSET,
} from "./layout";
import { poolGive, poolTake } from "./pool";
import { maskHi, maskLo } from "./rules";

const LEAF_VALID: u32 = 0x8000_0000;
const CHILD: u32 = 0x4000_0000;
/** In a pointer: the child skips bits (deeper than its parent's depth + STRIDE), so its key needs a check. */
const SKIP: u32 = 0x2000_0000;
/** What a record's root counts as hanging below: a root of depth 16 skips nothing. */
const RECORD_DEPTH: u32 = <u32>(SHORT_BITS - STRIDE);
/** Leaves: rel = length - node depth; child pointers: the child's level k (depth 16 + STRIDE k). */
const TAG_SHIFT: u32 = 24;
const TAG_MASK: u32 = 0x1f;
const VALUE_MASK: u32 = 0x00ff_ffff;
/** Valid, child and rel bits: what identifies the entries one rule owns. */
const OWNER_MASK: u32 = 0xff00_0000;
/** Depths 16, 16 + STRIDE, ..., the last below 128. */
export const MAX_LEVELS: i32 = (128 - SHORT_BITS - 1) / STRIDE + 1;

/** The depth of the node that holds rules of length len (17..128). */
@inline export function homeDepth(len: i32): i32 {
  return SHORT_BITS + ((len - SHORT_BITS - 1) / STRIDE) * STRIDE;
}

/** The deepest node depth at or above bit position x (x >= 16). */
@inline function depthAtOrAbove(x: i32): i32 {
  return SHORT_BITS + ((x - SHORT_BITS) / STRIDE) * STRIDE;
}

/** Big-endian mask halves of the first d bits, d in 16..124 (a Wasm shift by 64 is a shift by 0). */
@inline function maskA(d: u32): u64 {
  return select<u64>(<u64>-1, (<u64>-1) << (<u64>(64 - d)), d >= 64);
}

@inline function maskB(d: u32): u64 {
  return select<u64>((<u64>-1) << (<u64>(128 - d)), 0, d > 64);
}

/** Address bits d..d+3 of big-endian halves (a stride never straddles bit 64). */
@inline function chunkOf(a: u64, b: u64, d: u32): u32 {
  const w = select<u64>(a, b, d < 64);
  return <u32>((w << (<u64>(d & 63))) >> <u64>(64 - STRIDE));
}

/**
 * The same of memory-order halves (as loaded; rules.ts), which lookups use to spare byte swaps
 * (Wasm has no bswap instruction): the nibble of byte d / 8, the high one when d is a multiple of 8.
 */
@inline function chunkOfMemory(hi: u64, lo: u64, d: u32): u32 {
  const w = select<u64>(hi, lo, d < 64);
  return <u32>(w >> <u64>((d & 0x38) + (~d & 4))) & (NODE_SLOTS - 1);
}

/** A node's key as big-endian halves, for the writer (stored in memory order, as lookups compare it). */
@inline function keyA(node: usize): u64 {
  return bswap<u64>(load<u64>(node, NODE_KEY_HI));
}

@inline function keyB(node: usize): u64 {
  return bswap<u64>(load<u64>(node, NODE_KEY_LO));
}

/** The entry (or /16 record root) pointing to node n of depth d. */
@inline function pointerTo(n: u32, d: u32, above: u32): u32 {
  const skip = select<u32>(SKIP, 0, d != above + <u32>STRIDE);
  return CHILD | skip | (((d - <u32>SHORT_BITS) / <u32>STRIDE) << TAG_SHIFT) | n;
}

/** The depth a node hanging from parent (0: from its record) is compared with for SKIP. */
function depthOfParent(t: usize, parent: u32): u32 {
  return parent == 0 ? RECORD_DEPTH : load<u32>(nodeAt(t, parent), NODE_DEPTH);
}

/** The first bit where (a1, b1) and (a2, b2) differ, 128 if none. */
@inline function firstDifference(a1: u64, b1: u64, a2: u64, b2: u64): i32 {
  const x = a1 ^ a2;
  if (x != 0) return <i32>clz(x);
  const y = b1 ^ b2;
  return y != 0 ? 64 + <i32>clz(y) : 128;
}

@inline function nodeAt(t: usize, n: u32): usize {
  return t + load<u32>(t, H6_NODES_AT) + <usize>n * NODE_BYTES;
}

@inline function entryAt(node: usize, slot: u32): usize {
  return node + NODE_ENTRIES + ((<usize>slot) << 2);
}

/**
 * The trie root of the /16 of a (big-endian), in the writer's per-/16 array (table.ts copies it
 * into the /16's record unless a range leaf stands in for the trie); indexed, as the records, by
 * the first two bytes as loaded.
 */
@inline function rootAt(t: usize, a: u64): usize {
  const i = <u32>(a >> 56) | (<u32>(a >> 40) & 0xff00);
  return t + WRITER16_OFFSET + <usize>i * W16_BYTES + W16_ROOT;
}

@inline function relOf(e: u32): u32 {
  return (e >> TAG_SHIFT) & TAG_MASK;
}

/** The leaf entry of a rule of length len homed at depth d. */
@inline export function trieLeaf(len: i32, d: i32, nh: i32): u32 {
  return LEAF_VALID | ((<u32>(len - d)) << TAG_SHIFT) | <u32>nh;
}

/**
 * Longest match below the /16 record for the address (hi, lo) (memory-order halves), starting at
 * the record's root pointer p with best, the /16's short answer, in at most `levels` steps. The
 * pointer carries the node's depth, so the entry load needs nothing from the node's header: one
 * dependent load per level. Reads only; AS callers bracket it with the seqlock.
 * branchFree (a constant at each call): take exactly `levels` steps without a data-dependent
 * branch, for batches that know how deep their walks go (a mispredicted walk end costs more than
 * a step); steps past the walk's end read node 0, which stays empty.
 */
@inline export function trieLookup(
  t: usize,
  hi: u64,
  lo: u64,
  p: u32,
  best: i32,
  levels: i32,
  branchFree: bool,
): i32 {
  const base = t + load<u32>(t, H6_NODES_AT);
  for (let level = 0; level < levels; level++) {
    const node = pointed(base, p);
    const d = pointedDepth(p);
    const e = load<u32>(entryAt(node, chunkOfMemory(hi, lo, d)));
    best = leafOr(load<u32>(node, NODE_LEAF), best);
    if (branchFree) {
      const on = !keyDiffers(t, node, hi, lo, d) | ((p & SKIP) == 0);
      best = select<i32>(leafOr(e, best), best, on);
      p = select<u32>(e, 0, on & ((e & CHILD) != 0));
    } else {
      if ((p & SKIP) != 0 && keyDiffers(t, node, hi, lo, d)) break;
      best = leafOr(e, best);
      if ((e & CHILD) == 0) break;
      p = e;
    }
  }
  return best;
}

/** The node p points to, in the pool at base. */
@inline function pointed(base: usize, p: u32): usize {
  return base + <usize>(p & VALUE_MASK) * NODE_BYTES;
}

@inline function pointedDepth(p: u32): u32 {
  return <u32>SHORT_BITS + <u32>STRIDE * ((p >> TAG_SHIFT) & TAG_MASK);
}

/** The next hop of leaf entry e, or best when e holds none. */
@inline function leafOr(e: u32, best: i32): i32 {
  return select<i32>(<i32>(e & VALUE_MASK), best, <i32>e < 0);
}

/** Whether address (hi, lo) leaves the key of node (depth d) in its first d bits. */
@inline function keyDiffers(t: usize, node: usize, hi: u64, lo: u64, d: u32): bool {
  return (
    (((hi ^ load<u64>(node, NODE_KEY_HI)) & maskHi(t, d)) | ((lo ^ load<u64>(node, NODE_KEY_LO)) & maskLo(t, d))) != 0
  );
}

/**
 * One level of a walk without its answer, as little work as a batch's level pass can do: the
 * pointer to the node after p's for address (hi, lo), or 0 where the walk ends. It skips the key
 * check (a walk that a key would end goes one node too far, which costs a read, never an answer)
 * and reads the node's leaf only so that the lookup after it finds the header in cache (a leaf
 * never has all bits set). Branch-free: p = 0 reads node 0, which stays empty, and gives 0.
 */
@inline export function trieStep(t: usize, hi: u64, lo: u64, p: u32): u32 {
  const node = pointed(t + load<u32>(t, H6_NODES_AT), p);
  const e = load<u32>(entryAt(node, chunkOfMemory(hi, lo, pointedDepth(p))));
  return select<u32>(e, 0, ((e & CHILD) != 0) & (load<u32>(node, NODE_LEAF) != 0xffff_ffff));
}

function nodeTake(t: usize): u32 {
  return poolTake(t, H6_NODES_AT, NODE_BYTES, NODE_FREE_NEXT);
}

function nodeGive(t: usize, n: u32): void {
  poolGive(t, H6_NODES_AT, NODE_BYTES, NODE_FREE_NEXT, n);
}

/** A new node with no entries, built whole before anything points to it. */
function nodeNew(t: usize, a: u64, b: u64, d: u32, leaf: u32, parent: u32): u32 {
  const n = nodeTake(t);
  const node = nodeAt(t, n);
  memory.fill(node + NODE_ENTRIES, 0, NODE_SLOTS << 2);
  store<u64>(node, bswap<u64>(a & maskA(d)), NODE_KEY_HI);
  store<u64>(node, bswap<u64>(b & maskB(d)), NODE_KEY_LO);
  store<u32>(node, d, NODE_DEPTH);
  store<u32>(node, leaf, NODE_LEAF);
  store<u32>(node, 0, NODE_RULES);
  store<u32>(node, parent, NODE_PARENT);
  return n;
}

/** Where node n hangs: its parent's entry, or its /16's record (parent 0). */
function hangAt(t: usize, n: u32, parent: u32): usize {
  const node = nodeAt(t, n);
  const a = keyA(node);
  if (parent == 0) return rootAt(t, a);
  const p = nodeAt(t, parent);
  return entryAt(p, chunkOf(a, keyB(node), load<u32>(p, NODE_DEPTH)));
}

/**
 * Over the entries rule (a, b)/len covers in node n (their leaves, or the leaves of the children
 * hanging there): adding, make leaf win where no longer rule of n does (rel <= the rule's: shorter
 * rules, or the rule itself when replacing); removing, the entries the rule owned take leaf (the
 * covering rule's, or 0).
 */
function leavesUpdate(t: usize, n: u32, a: u64, b: u64, len: i32, leaf: u32, removing: bool): void {
  const node = nodeAt(t, n);
  const d = load<u32>(node, NODE_DEPTH);
  const rel = <u32>len - d;
  const owned = LEAF_VALID | (rel << TAG_SHIFT);
  const span = (<u32>1) << (<u32>STRIDE - rel);
  const first = chunkOf(a, b, d) & ~(span - 1);
  for (let s = first; s < first + span; s++) {
    const p = entryAt(node, s);
    const e = load<u32>(p);
    const at = (e & CHILD) != 0 ? nodeAt(t, e & VALUE_MASK) + NODE_LEAF : p;
    const was = load<u32>(at);
    if (removing ? (was & OWNER_MASK) == owned : relOf(was) <= rel) store<u32>(at, leaf);
  }
}

/** Add rule (a, b)/len -> nh (len 17..128, not present yet). At most two new nodes. */
export function trieInsert(t: usize, a: u64, b: u64, len: i32, nh: i32): void {
  const home = <u32>homeDepth(len);
  let parent: u32 = 0;
  let at = rootAt(t, a);
  while (true) {
    const e = load<u32>(at);
    if ((e & CHILD) == 0) {
      // Nothing hangs here: a new home node, taking over the slot's leaf (an empty record's is 0).
      const n = nodeNew(t, a, b, home, e, parent);
      store<u32>(at, pointerTo(n, home, depthOfParent(t, parent)));
      return ruleAdd(t, n, a, b, len, nh);
    }
    const cur = e & VALUE_MASK;
    const node = nodeAt(t, cur);
    const d = load<u32>(node, NODE_DEPTH);
    const diff = firstDifference(a, b, keyA(node), keyB(node));
    if (home >= d && <u32>diff >= d) {
      if (home == d) return ruleAdd(t, cur, a, b, len, nh);
      parent = cur;
      at = entryAt(node, chunkOf(a, b, d));
      continue;
    }
    // The rule leaves cur's key before cur's depth: a node where they part (or the rule's home).
    const split = <u32>depthAtOrAbove(min(<i32>home, diff));
    const m = nodeNew(t, a, b, split, load<u32>(node, NODE_LEAF), parent);
    store<u32>(node, 0, NODE_LEAF);
    store<u32>(node, m, NODE_PARENT);
    store<u32>(entryAt(nodeAt(t, m), chunkOf(keyA(node), keyB(node), split)), pointerTo(cur, d, split));
    store<u32>(at, pointerTo(m, split, depthOfParent(t, parent)));
    if (split == home) return ruleAdd(t, m, a, b, len, nh);
    parent = m;
    at = entryAt(nodeAt(t, m), chunkOf(a, b, split));
  }
}

function ruleAdd(t: usize, n: u32, a: u64, b: u64, len: i32, nh: i32): void {
  const node = nodeAt(t, n);
  store<u32>(node, load<u32>(node, NODE_RULES) + 1, NODE_RULES);
  leavesUpdate(t, n, a, b, len, trieLeaf(len, <i32>load<u32>(node, NODE_DEPTH), nh), false);
}

/** The home node of rule (a, b)/len, which is present. */
function homeOf(t: usize, a: u64, b: u64, len: i32): u32 {
  const home = <u32>homeDepth(len);
  let n = load<u32>(rootAt(t, a)) & VALUE_MASK;
  while (load<u32>(nodeAt(t, n), NODE_DEPTH) != home) {
    const node = nodeAt(t, n);
    n = load<u32>(entryAt(node, chunkOf(a, b, load<u32>(node, NODE_DEPTH)))) & VALUE_MASK;
  }
  return n;
}

/** Set the next hop of rule (a, b)/len, which is present. */
export function trieReplace(t: usize, a: u64, b: u64, len: i32, nh: i32): void {
  const n = homeOf(t, a, b, len);
  leavesUpdate(t, n, a, b, len, trieLeaf(len, <i32>load<u32>(nodeAt(t, n), NODE_DEPTH), nh), false);
}

/**
 * Remove rule (a, b)/len, which is present; replacement is the leaf of the longest rule of the
 * same node covering it (trieLeaf), or 0. Nodes left with no rule and fewer than two children go.
 */
export function trieDelete(t: usize, a: u64, b: u64, len: i32, replacement: u32): void {
  let n = homeOf(t, a, b, len);
  leavesUpdate(t, n, a, b, len, replacement, true);
  const node = nodeAt(t, n);
  store<u32>(node, load<u32>(node, NODE_RULES) - 1, NODE_RULES);
  while (n != 0) {
    const cur = nodeAt(t, n);
    if (load<u32>(cur, NODE_RULES) != 0) return;
    let children = 0;
    let child: u32 = 0;
    for (let s: u32 = 0; s < NODE_SLOTS; s++) {
      const e = load<u32>(entryAt(cur, s));
      if ((e & CHILD) != 0) {
        children++;
        child = e & VALUE_MASK;
      }
    }
    if (children >= 2) return;
    const parent = load<u32>(cur, NODE_PARENT);
    const at = hangAt(t, n, parent);
    // With no rule, n's own leaves are all 0: its slot's leaf (NODE_LEAF) is all that was left.
    if (children == 1) {
      const c = nodeAt(t, child);
      store<u32>(c, load<u32>(cur, NODE_LEAF), NODE_LEAF);
      store<u32>(c, parent, NODE_PARENT);
      store<u32>(at, pointerTo(child, load<u32>(c, NODE_DEPTH), depthOfParent(t, parent)));
      nodeGive(t, n);
      return;
    }
    store<u32>(at, load<u32>(cur, NODE_LEAF)); // a root's NODE_LEAF is 0, which empties the record
    nodeGive(t, n);
    n = parent;
  }
}

/** Address bits 16..63 of a big-endian high half: the part of a range start within its /16. */
const IN_SIXTEEN: u64 = 0x0000_ffff_ffff_ffff;

/** The high half of big-endian (a, b) + 2^bit (bit 0..127). */
@inline function plusHigh(a: u64, b: u64, bit: u32): u64 {
  if (bit >= 64) return a + ((<u64>1) << (<u64>(bit - 64)));
  return a + <u64>(b + ((<u64>1) << (<u64>bit)) < b);
}

/** The low half of big-endian (a, b) + 2^bit. */
@inline function plusLow(b: u64, bit: u32): u64 {
  return bit >= 64 ? b : b + ((<u64>1) << (<u64>bit));
}

/** Range start i at `at` (RANGE_BYTES each): (a, b) within the /16, and the next hop from there, -1 for none. */
@inline function rangeAdd(at: usize, i: u32, a: u64, b: u64, nh: i32): u32 {
  if (i >= MAX_RANGES) return i; // never with at most LEAF_PAIR_RULES rules (see trieRanges); keeps writes in bounds
  const r = at + <usize>i * RANGE_BYTES;
  store<u64>(r, a);
  store<u64>(r, b, 8);
  store<i32>(r, nh, 16);
  return i + 1;
}

/**
 * The answers of the trie at root over its /16 as raw range starts in address order, written at
 * `at` (leaf.ts merges them): (0, -1) first, then for every node the start of its parent's slot,
 * each of its slots and its end, so at most 1 + 18 per node, which MAX_RANGES holds for a /16 with
 * up to 14 nodes (it has fewer than twice its rules). Start positions are bits 16..127 of the address
 * (big-endian halves, the high one without the /16). Returns how many it wrote.
 */
export function trieRanges(t: usize, root: u32, at: usize): u32 {
  const k = rangeAdd(at, 0, 0, 0, -1);
  return rangesBelow(t, root & VALUE_MASK, -1, 0, 0, (<u64>1) << 48, 0, at, k);
}

/** The ranges of the slot [(sa, sb), (ea, eb)) of node n's parent, whose answer so far is `inherited`. */
function rangesBelow(t: usize, n: u32, inherited: i32, sa: u64, sb: u64, ea: u64, eb: u64, at: usize, k: u32): u32 {
  const node = nodeAt(t, n);
  const d = load<u32>(node, NODE_DEPTH);
  // As a lookup: the slot's leaf applies to all of it, the node's entries only under its key.
  const best = leafOr(load<u32>(node, NODE_LEAF), inherited);
  k = rangeAdd(at, k, sa, sb, best);
  const ka = keyA(node) & IN_SIXTEEN;
  const kb = keyB(node);
  const slotBit = 128 - d - <u32>STRIDE;
  for (let s: u32 = 0; s < NODE_SLOTS; s++) {
    // The key is zero below depth d, so a slot's start is the key with the slot's bits set.
    const a = slotBit >= 64 ? ka | ((<u64>s) << (<u64>(slotBit - 64))) : ka;
    const b = slotBit >= 64 ? kb : kb | ((<u64>s) << (<u64>slotBit));
    const e = load<u32>(entryAt(node, s));
    if ((e & CHILD) != 0) {
      k = rangesBelow(t, e & VALUE_MASK, best, a, b, plusHigh(a, b, slotBit), plusLow(b, slotBit), at, k);
    } else {
      k = rangeAdd(at, k, a, b, leafOr(e, best));
    }
  }
  const xa = plusHigh(ka, kb, 128 - d);
  const xb = plusLow(kb, 128 - d);
  if (xa < ea || (xa == ea && xb < eb)) k = rangeAdd(at, k, xa, xb, best);
  return k;
}
