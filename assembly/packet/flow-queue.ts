// The send path's own queue, fq_codel's idea in the worker (RFC 8290, without CoDel's clock): the
// TUN ring is FIFO, drops at its tail when full and gives no backpressure, so a worker that reads
// it no faster than it sends leaves a ping behind a flood's ring-full of packets and loses it with
// the flood's. Here the worker reads the ring faster than it sends, into a pool of slots; packets
// wait in per-flow queues (flow-hash.ts), sparse (new) flows are served before bulk (old) ones by
// deficit round robin, and when more are held than the limit the fattest flow loses packets at its
// head. One call per read batch and one per send batch; the TypeScript side only moves
// descriptors to and from the syscalls.
//
// Layout at `q` (fqSize bytes): a header, FQ_BUCKETS buckets, then one record per pool slot.
import { DESC_OFF, DESC_LEN, HEADROOM, descPtr } from "../descriptor";
import { descPointAt } from "../batch";
import { flowHash } from "./flow-hash";

/** Buckets (flows hash into these); a power of two. */
export const FQ_BUCKETS: i32 = 1024;
const BUCKET_BITS: i32 = 10;

const H_SLOTS: i32 = 0; // pool slots (limit + read room)
const H_BASE: i32 = 4; // first slot's byte offset
const H_STRIDE: i32 = 8;
const H_FREE: i32 = 12; // free list head (slot index, -1: none)
const H_FREE_COUNT: i32 = 16;
const H_NEW_HEAD: i32 = 20;
const H_NEW_TAIL: i32 = 24;
const H_OLD_HEAD: i32 = 28;
const H_OLD_TAIL: i32 = 32;
const H_QUANTUM: i32 = 36;
const H_LIMIT: i32 = 40; // packets held at most after an enqueue
const H_BACKLOG: i32 = 44;
const H_DROPS: i32 = 48; // offset of the u64 drop counter
const H_SEED: i32 = 52; // the flow hash's seed
const H_BUSY: i32 = 56; // 1 while fqEnqueue or fqDequeue runs (see fqCut)
// What the worker holds outside the lists, for fqTakeOver to count if it dies: the descriptors
// fqPrepare gave to a read that fqEnqueue has not taken yet, the packets fqDequeue handed out that
// the hot path has not had yet, and the sends and TUN writes of a batch not made yet.
/** Byte offset of the descriptors given to a read not taken yet (read by tests, which kill workers). */
export const FQ_PREPARED: i32 = 60;
/** Byte offsets of the words the worker also stores (from TypeScript): out, sends, TUN writes. */
export const FQ_OUT: i32 = 64;
export const FQ_SENDS: i32 = 68;
export const FQ_WRITES: i32 = 72;
const HEADER_BYTES: i32 = 80;

// A bucket: FIFO of slot indices, packets and bytes in it, DRR deficit, link in the new/old list,
// which list.
const B_HEAD: i32 = 0;
const B_TAIL: i32 = 4;
const B_COUNT: i32 = 8;
const B_DEFICIT: i32 = 12;
const B_NEXT: i32 = 16;
const B_LIST: i32 = 20;
const B_BYTES: i32 = 24;
const BUCKET_BYTES: i32 = 32;
const LIST_NONE: i32 = 0;
const LIST_NEW: i32 = 1;
const LIST_OLD: i32 = 2;

// A slot record: the packet's descriptor as read, the next slot in its bucket or the free list.
const S_NEXT: i32 = 32;
const SLOT_BYTES: i32 = 48;

@inline function bucketPtr(q: usize, b: i32): usize {
  return q + <usize>HEADER_BYTES + <usize>(b * BUCKET_BYTES);
}
@inline function slotPtr(q: usize, s: i32): usize {
  return q + <usize>HEADER_BYTES + <usize>(FQ_BUCKETS * BUCKET_BYTES) + <usize>(s * SLOT_BYTES);
}

/** Bytes of a flow queue with `slots` pool slots. */
export function fqSize(slots: i32): i32 {
  return HEADER_BYTES + FQ_BUCKETS * BUCKET_BYTES + slots * SLOT_BYTES;
}

/**
 * Lays out a flow queue at `q` over `slots` packet slots of `stride` bytes from `base`; at most
 * `limit` packets (< slots) are held after an enqueue, so a read always finds slots - limit free.
 * `quantum`: bytes a bulk flow may send per round. Drops are added to the u64 at `drops`. `seed`
 * keys the flow hash: a random one keeps the buckets of flows unknown to whoever sends them.
 */
export function fqInit(
  q: usize,
  slots: i32,
  base: usize,
  stride: i32,
  limit: i32,
  quantum: i32,
  drops: usize,
  seed: u32,
): void {
  // Busy until the last store: a layout cut short (a reset's thread killed in its loops) is laid
  // out again by the next worker, not taken as a queue.
  store<i32>(q + H_BUSY, 1);
  store<i32>(q + H_SLOTS, slots);
  store<i32>(q + H_BASE, <i32>base);
  store<i32>(q + H_STRIDE, stride);
  store<i32>(q + H_FREE, slots > 0 ? 0 : -1);
  store<i32>(q + H_FREE_COUNT, slots);
  store<i32>(q + H_NEW_HEAD, -1);
  store<i32>(q + H_NEW_TAIL, -1);
  store<i32>(q + H_OLD_HEAD, -1);
  store<i32>(q + H_OLD_TAIL, -1);
  store<i32>(q + H_QUANTUM, quantum);
  store<i32>(q + H_LIMIT, limit);
  store<i32>(q + H_BACKLOG, 0);
  store<i32>(q + H_DROPS, <i32>drops);
  store<u32>(q + H_SEED, seed);
  store<i32>(q + FQ_PREPARED, 0);
  store<i32>(q + FQ_OUT, 0);
  store<i32>(q + FQ_SENDS, 0);
  store<i32>(q + FQ_WRITES, 0);
  for (let b = 0; b < FQ_BUCKETS; b++) {
    const p = bucketPtr(q, b);
    store<i32>(p + B_HEAD, -1);
    store<i32>(p + B_TAIL, -1);
    store<i32>(p + B_COUNT, 0);
    store<i32>(p + B_BYTES, 0);
    store<i32>(p + B_DEFICIT, 0);
    store<i32>(p + B_NEXT, -1);
    store<i32>(p + B_LIST, LIST_NONE);
  }
  for (let s = 0; s < slots; s++) store<i32>(slotPtr(q, s) + S_NEXT, s + 1 < slots ? s + 1 : -1);
  store<i32>(q + H_BUSY, 0);
}

/**
 * Whether a call that changes the queue (fqEnqueue, fqDequeue) was cut short: its thread died in it
 * (a trap, or a terminate, which stops Wasm at a loop's back edge). Its lists and counts may then be
 * half updated: slots off the free list and in no flow's queue are lost for good (a thread killed
 * under a flood lost up to a read's worth), and a list or count that disagrees with the slots could
 * send a packet twice or keep the drop loop from ending. The worker that takes the queue over then
 * calls fqReset. Two stores a call. fqPrepare only writes descriptors: a read cut short leaves the
 * queue whole.
 */
export function fqCut(q: usize): bool {
  return load<i32>(q + H_BUSY) != 0;
}

/**
 * Lays the queue out afresh with its own parameters (empty, a new free list over every slot); what
 * it held (its backlog count, as far as it was kept) is added to the drop counter and returned.
 */
export function fqReset(q: usize): i32 {
  const slots = load<i32>(q + H_SLOTS);
  const held = min(max(load<i32>(q + H_BACKLOG), 0), slots);
  const drops = <usize>load<i32>(q + H_DROPS);
  // Counted before the layout (no loop between: a terminate cannot land here), so that a reset cut
  // short and done again counts the held packets once.
  if (drops != 0) store<u64>(drops, load<u64>(drops) + <u64>held);
  store<i32>(q + H_BACKLOG, 0);
  fqInit(
    q,
    slots,
    <usize>load<i32>(q + H_BASE),
    load<i32>(q + H_STRIDE),
    load<i32>(q + H_LIMIT),
    load<i32>(q + H_QUANTUM),
    drops,
    load<u32>(q + H_SEED),
  );
  return held;
}

/**
 * A worker's start: counts what the worker before it held outside the queue's lists, were it to
 * have died (a terminate lands at any function's entry or loop's back edge): the packets a read
 * filled in `descs` and fqEnqueue had not taken, those fqDequeue had handed out before the hot path
 * had them (both in the drop counter), and the sends and TUN writes not made yet (added at
 * `sendShortfall` and `writeShortfall`). Each is counted and cleared with no loop or call between,
 * so that a start cut short and done again counts each once. Then fqReset if a call was cut.
 * Returns the packets so counted as dropped.
 */
export function fqTakeOver(q: usize, descs: usize, sendShortfall: usize, writeShortfall: usize): i32 {
  // A read's packets have a length; fqPrepare zeroed it, fqEnqueue zeroes it as it takes each one.
  const prepared = load<i32>(q + FQ_PREPARED);
  let unread = 0;
  for (let i = 0; i < prepared; i++) if (load<i32>(descPtr(descs, i) + DESC_LEN) > 0) unread++;
  const lost = unread + load<i32>(q + FQ_OUT);
  const drops = <usize>load<i32>(q + H_DROPS);
  if (drops != 0) store<u64>(drops, load<u64>(drops) + <u64>lost);
  store<u64>(sendShortfall, load<u64>(sendShortfall) + <u64>load<i32>(q + FQ_SENDS));
  store<u64>(writeShortfall, load<u64>(writeShortfall) + <u64>load<i32>(q + FQ_WRITES));
  store<i32>(q + FQ_PREPARED, 0);
  store<i32>(q + FQ_OUT, 0);
  store<i32>(q + FQ_SENDS, 0);
  store<i32>(q + FQ_WRITES, 0);
  if (fqCut(q)) fqReset(q);
  return lost;
}

/** Packets held (read, not yet handed out by fqDequeue). */
export function fqBacklog(q: usize): i32 {
  return load<i32>(q + H_BACKLOG);
}

/**
 * Whether a sparse flow waits: a new flow whose bytes fit its quantum, so that its first turn sends
 * it whole (a ping, a request); reading on would only delay it. A new flow that came with more is
 * bulk (each of a flood's streams, once the last send emptied it): reading on lets the queue, not
 * the ring, drop the excess, and the ring keeps room for the next sparse packet.
 */
export function fqSparseWaiting(q: usize): bool {
  const quantum = load<i32>(q + H_QUANTUM);
  for (let b = load<i32>(q + H_NEW_HEAD); b >= 0; b = load<i32>(bucketPtr(q, b) + B_NEXT)) {
    if (load<i32>(bucketPtr(q, b) + B_BYTES) <= quantum) return true;
  }
  return false;
}

/** The packet's flow (flow-hash.ts, with the queue's seed) as a bucket index. */
export function fqFlowBucket(q: usize, p: usize, len: i32): i32 {
  return <i32>(flowHash(p, len, load<u32>(q + H_SEED)) >> (32 - BUCKET_BITS));
}

/**
 * Points up to `want` descriptors at free pool slots (as batchInit does) for one read; returns
 * how many. Hand them all to fqEnqueue afterwards, with the number the read filled.
 */
export function fqPrepare(q: usize, descs: usize, want: i32): i32 {
  const base = <usize>load<i32>(q + H_BASE);
  const stride = load<i32>(q + H_STRIDE);
  let s = load<i32>(q + H_FREE);
  let k = 0;
  while (k < want && s >= 0) {
    descPointAt(descPtr(descs, k++), base + <usize>(s * stride), stride);
    s = load<i32>(slotPtr(q, s) + S_NEXT);
  }
  store<i32>(q + FQ_PREPARED, k);
  return k;
}

@inline function slotOf(q: usize, d: usize): i32 {
  const base = load<i32>(q + H_BASE);
  return (load<i32>(d + DESC_OFF) - HEADROOM - base) / load<i32>(q + H_STRIDE);
}

@inline function freeSlot(q: usize, s: i32): void {
  store<i32>(slotPtr(q, s) + S_NEXT, load<i32>(q + H_FREE));
  store<i32>(q + H_FREE, s);
  store<i32>(q + H_FREE_COUNT, load<i32>(q + H_FREE_COUNT) + 1);
}

@inline function listAppend(q: usize, b: i32, list: i32): void {
  const head = list == LIST_NEW ? H_NEW_HEAD : H_OLD_HEAD;
  const tail = list == LIST_NEW ? H_NEW_TAIL : H_OLD_TAIL;
  const bp = bucketPtr(q, b);
  store<i32>(bp + B_NEXT, -1);
  store<i32>(bp + B_LIST, list);
  const t = load<i32>(q + tail);
  if (t < 0) store<i32>(q + head, b);
  else store<i32>(bucketPtr(q, t) + B_NEXT, b);
  store<i32>(q + tail, b);
}

/** Unlinks the head bucket of `list`, returns it. */
@inline function listPop(q: usize, list: i32): i32 {
  const head = list == LIST_NEW ? H_NEW_HEAD : H_OLD_HEAD;
  const tail = list == LIST_NEW ? H_NEW_TAIL : H_OLD_TAIL;
  const b = load<i32>(q + head);
  const next = load<i32>(bucketPtr(q, b) + B_NEXT);
  store<i32>(q + head, next);
  if (next < 0) store<i32>(q + tail, -1);
  store<i32>(bucketPtr(q, b) + B_LIST, LIST_NONE);
  return b;
}

/** Takes the head packet of bucket b out (it must hold one); returns its slot. */
@inline function bucketTake(q: usize, b: i32): i32 {
  const bp = bucketPtr(q, b);
  const s = load<i32>(bp + B_HEAD);
  const next = load<i32>(slotPtr(q, s) + S_NEXT);
  store<i32>(bp + B_HEAD, next);
  if (next < 0) store<i32>(bp + B_TAIL, -1);
  store<i32>(bp + B_COUNT, load<i32>(bp + B_COUNT) - 1);
  store<i32>(bp + B_BYTES, load<i32>(bp + B_BYTES) - load<i32>(slotPtr(q, s) + DESC_LEN));
  store<i32>(q + H_BACKLOG, load<i32>(q + H_BACKLOG) - 1);
  return s;
}

/**
 * Takes the `k` descriptors fqPrepare gave, of which the read filled the first `n`: those join
 * their flow's queue (a flow with nothing queued and in no list starts as new), the rest go back
 * to the free list. Then, while more than the limit are held, the fattest flow loses packets at
 * its head (the oldest first, as fq_codel drops). Returns the packets dropped.
 */
export function fqEnqueue(q: usize, descs: usize, k: i32, n: i32): i32 {
  store<i32>(q + H_BUSY, 1);
  // fqPrepare handed out the free list's first k slots in order: take them off it.
  for (let i = 0; i < k; i++) {
    const s = load<i32>(q + H_FREE);
    if (s < 0 || slotOf(q, descPtr(descs, i)) != s) unreachable(); // not fqPrepare's: a caller bug
    store<i32>(q + H_FREE, load<i32>(slotPtr(q, s) + S_NEXT));
    store<i32>(q + H_FREE_COUNT, load<i32>(q + H_FREE_COUNT) - 1);
  }
  for (let i = 0; i < k; i++) {
    const d = descPtr(descs, i);
    const s = slotOf(q, d);
    if (i >= n) {
      freeSlot(q, s);
      continue;
    }
    const r = slotPtr(q, s);
    v128.store(r, v128.load(d));
    v128.store(r, v128.load(d, 16), 16);
    const b = fqFlowBucket(q, <usize>load<i32>(d + DESC_OFF), load<i32>(d + DESC_LEN));
    store<i32>(r + S_NEXT, -1);
    const bp = bucketPtr(q, b);
    const t = load<i32>(bp + B_TAIL);
    if (t < 0) store<i32>(bp + B_HEAD, s);
    else store<i32>(slotPtr(q, t) + S_NEXT, s);
    store<i32>(bp + B_TAIL, s);
    store<i32>(bp + B_COUNT, load<i32>(bp + B_COUNT) + 1);
    store<i32>(bp + B_BYTES, load<i32>(bp + B_BYTES) + load<i32>(d + DESC_LEN));
    store<i32>(q + H_BACKLOG, load<i32>(q + H_BACKLOG) + 1);
    store<i32>(d + DESC_LEN, 0); // held now, no longer the read's (fqTakeOver)
    if (load<i32>(bp + B_LIST) == LIST_NONE) {
      listAppend(q, b, LIST_NEW);
      store<i32>(bp + B_DEFICIT, load<i32>(q + H_QUANTUM));
    }
  }
  let dropped = 0;
  const limit = load<i32>(q + H_LIMIT);
  const counter = <usize>load<i32>(q + H_DROPS);
  while (load<i32>(q + H_BACKLOG) > limit) {
    let fattest = 0;
    let most = 0;
    for (let b = 0; b < FQ_BUCKETS; b++) {
      const c = load<i32>(bucketPtr(q, b) + B_COUNT);
      if (c > most) {
        most = c;
        fattest = b;
      }
    }
    let excess = load<i32>(q + H_BACKLOG) - limit;
    while (excess-- > 0 && load<i32>(bucketPtr(q, fattest) + B_COUNT) > 0) {
      freeSlot(q, bucketTake(q, fattest));
      // Counted with the take: a call cut after it must not lose the drop from the count.
      if (counter != 0) store<u64>(counter, load<u64>(counter) + 1);
      dropped++;
    }
  }
  store<i32>(q + FQ_PREPARED, 0);
  store<i32>(q + H_BUSY, 0);
  return dropped;
}

/**
 * Hands out up to `max` held packets as descriptors at `out`, in deficit round robin: new flows
 * first, then old ones; a flow may send while its deficit is positive and gets another quantum
 * when it goes to the back of the old list. A new flow that empties moves to the old list if old
 * flows wait (so that it cannot starve them by coming back as new), otherwise leaves the lists.
 * Their slots are free again: send them before the next fqPrepare. Returns the count.
 */
export function fqDequeue(q: usize, out: usize, max: i32): i32 {
  store<i32>(q + H_BUSY, 1);
  store<i32>(q + FQ_OUT, 0);
  let o = 0;
  const quantum = load<i32>(q + H_QUANTUM);
  while (o < max) {
    let list = LIST_NEW;
    let b = load<i32>(q + H_NEW_HEAD);
    if (b < 0) {
      list = LIST_OLD;
      b = load<i32>(q + H_OLD_HEAD);
      if (b < 0) break;
    }
    const bp = bucketPtr(q, b);
    const deficit = load<i32>(bp + B_DEFICIT);
    if (deficit <= 0) {
      store<i32>(bp + B_DEFICIT, deficit + quantum);
      listPop(q, list);
      listAppend(q, b, LIST_OLD);
      continue;
    }
    if (load<i32>(bp + B_COUNT) == 0) {
      listPop(q, list);
      if (list == LIST_NEW && load<i32>(q + H_OLD_HEAD) >= 0) listAppend(q, b, LIST_OLD);
      continue;
    }
    const s = bucketTake(q, b);
    const r = slotPtr(q, s);
    const d = descPtr(out, o++);
    v128.store(d, v128.load(r));
    v128.store(d, v128.load(r, 16), 16);
    store<i32>(q + FQ_OUT, o); // with the take: the worker's now (fqTakeOver)
    store<i32>(bp + B_DEFICIT, deficit - load<i32>(r + DESC_LEN));
    freeSlot(q, s);
  }
  store<i32>(q + H_BUSY, 0);
  return o;
}
