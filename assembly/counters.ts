// Per-worker, per-direction counters: one u64 per verdict code (packets), then bytes forwarded.
// Each worker writes only its own blocks, so plain stores suffice; the control side sums the
// blocks of all workers (reads of aligned u64 never tear on the platforms we run on).
import { VERDICT_COUNT } from "./verdict";

/** Index of the forwarded-bytes counter; indices below it count packets by verdict. */
export const COUNTER_BYTES_FORWARDED: i32 = VERDICT_COUNT;
/**
 * Offloads: datagrams cut from super-packets (send path) and received segments merged into a
 * super-packet for the TUN device (receive path); the forwarded-packet counters count super-packets.
 */
export const COUNTER_OFFLOAD_SEGMENTS: i32 = VERDICT_COUNT + 1;
/**
 * Receive path: TCP segments taken into a super-packet (or given NEEDS_CSUM alone) without our
 * checksum check, because they came in a UDP GRO receive, whose outer checksum the kernel verified.
 */
export const COUNTER_CSUM_TRUSTED: i32 = VERDICT_COUNT + 2;
export const COUNTER_SLOTS: i32 = VERDICT_COUNT + 3;
export const COUNTER_BLOCK_BYTES: i32 = COUNTER_SLOTS << 3;

@inline export function countAdd(block: usize, slot: i32, v: u64): void {
  const q = block + ((<usize>slot) << 3);
  store<u64>(q, load<u64>(q) + v);
}

/** Bytes of one peer's counters (indexed by next hop): packets then bytes, u64 each. */
export const PEER_COUNTER_BYTES: i32 = 16;
