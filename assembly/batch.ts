// Batch bookkeeping shared by every hot-path function: laying descriptors over packet slots,
// checking a descriptor against memory, and closing a batch (count verdicts, move the packets to
// forward to the front so the I/O call sends one contiguous run).
import {
  DESC_OFF,
  DESC_CAP,
  DESC_LEN,
  DESC_ADDR,
  DESC_PORT,
  DESC_FLAGS,
  DESC_VERDICT,
  DESC_AUX,
  HEADROOM,
  MAX_BATCH,
  descPtr,
} from "./descriptor";
import { VERDICT_FORWARD, VERDICT_REPLY } from "./verdict";
import { countAdd, COUNTER_BYTES_FORWARDED, PEER_COUNTER_BYTES } from "./counters";
import { ctxCountersRx, ctxCountersTx, ctxPeerCountersRx, ctxPeerCountersTx, ctxPeerSlots } from "./context";

/**
 * Points n descriptors at n packet slots of `stride` bytes from `base`, each keeping HEADROOM
 * bytes in front of its packet. Called before every read, since processing moves OFF.
 */
export function batchInit(descs: usize, n: i32, base: usize, stride: i32): void {
  for (let i = 0; i < n; i++) descPointAt(descPtr(descs, i), base + <usize>(i * stride), stride);
}

/** Points descriptor d, empty, at the slot of `stride` bytes at `slot` (headroom kept in front). */
@inline export function descPointAt(d: usize, slot: usize, stride: i32): void {
  store<i32>(d + DESC_OFF, <i32>slot + HEADROOM);
  store<i32>(d + DESC_CAP, stride - HEADROOM);
  store<i32>(d + DESC_LEN, 0);
  store<i32>(d + DESC_ADDR, 0);
  store<i32>(d + DESC_PORT, 0);
  store<i32>(d + DESC_FLAGS, 0);
  store<i32>(d + DESC_VERDICT, 0);
  store<i32>(d + DESC_AUX, -1); // no peer known yet
}

/** Clamps a caller's batch size to what one call handles. */
@inline export function batchSize(n: i32): i32 {
  return n < 0 ? 0 : n > MAX_BATCH ? MAX_BATCH : n;
}

/**
 * Whether the descriptor's packet and the headroom in front of it lie inside memory. A false
 * answer is a caller bug; the packet is dropped rather than letting a write land out of bounds.
 */
@inline export function descInBounds(d: usize, top: i64): bool {
  const off = load<u32>(d + DESC_OFF); // unsigned: slots lie anywhere in up to 4 GiB of memory
  const len = load<i32>(d + DESC_LEN);
  return off >= <u32>HEADROOM && len >= 0 && <i64>off + <i64>len <= top;
}

/** Bytes of memory, for descInBounds: read once per batch. */
@inline export function memoryTop(): i64 {
  return (<i64>memory.size()) << 16;
}

@inline function swapDesc(a: usize, b: usize): void {
  const a0 = v128.load(a);
  const a1 = v128.load(a, 16);
  v128.store(a, v128.load(b));
  v128.store(a, v128.load(b, 16), 16);
  v128.store(b, a0);
  v128.store(b, a1, 16);
}

/**
 * Counts every verdict and the forwarded bytes into `counters` and, for forwarded packets whose
 * AUX names a peer (next-hop index below peerSlots), into that peer's entry of `peers` (0: none).
 * Then moves the descriptors to forward to the front, in their order (TCP dislikes reordering),
 * and the replies right after them. Returns forwarded | replies << 16.
 */
export function batchFinish(descs: usize, n: i32, counters: usize, peers: usize, peerSlots: u32): i32 {
  let fwd = 0;
  let bytes: u64 = 0;
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    const v = load<i32>(d + DESC_VERDICT);
    countAdd(counters, v, 1);
    if (v == VERDICT_FORWARD) {
      const len = <u64>load<i32>(d + DESC_LEN);
      bytes += len;
      const peer = <u32>load<i32>(d + DESC_AUX); // -1 (no peer) becomes too large
      if (peers != 0 && peer < peerSlots) {
        const q = peers + <usize>(peer * <u32>PEER_COUNTER_BYTES);
        store<u64>(q, load<u64>(q) + 1);
        store<u64>(q, load<u64>(q, 8) + len, 8);
      }
      if (i != fwd) swapDesc(descPtr(descs, fwd), d);
      fwd++;
    }
  }
  countAdd(counters, COUNTER_BYTES_FORWARDED, bytes);
  let rep = fwd;
  for (let i = fwd; i < n; i++) {
    const d = descPtr(descs, i);
    if (load<i32>(d + DESC_VERDICT) == VERDICT_REPLY) {
      if (i != rep) swapDesc(descPtr(descs, rep), d);
      rep++;
    }
  }
  return fwd | ((rep - fwd) << 16);
}

/** Closes a send-path batch with the context's counters; returns forwarded | replies << 16. */
@inline export function finishTx(ctx: usize, descs: usize, n: i32): i32 {
  return batchFinish(descs, n, ctxCountersTx(ctx), ctxPeerCountersTx(ctx), ctxPeerSlots(ctx));
}

/** Closes a receive-path batch with the context's counters; returns the number to forward. */
@inline export function finishRx(ctx: usize, descs: usize, n: i32): i32 {
  return batchFinish(descs, n, ctxCountersRx(ctx), ctxPeerCountersRx(ctx), ctxPeerSlots(ctx)) & 0xffff;
}
