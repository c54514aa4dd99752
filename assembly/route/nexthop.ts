// Next-hop records: where a route's packets go. Routes hold a record index, so moving a peer (new
// underlay address or VTEP MAC) rewrites one record instead of every route through it.
// Record layout, NEXT_HOP_BYTES each:
//   NEXT_HOP_UNDERLAY  u32  peer underlay IPv4 as a number (198.18.0.1 = 0xC6120001), native order
//   NEXT_HOP_PORT      u16  peer UDP port
//   NEXT_HOP_MAC       6 B  peer VTEP MAC in wire order (ready to copy into an Ethernet header)
//   NEXT_HOP_FLAGS     u32  NEXT_HOP_VALID once set; cleared records make packets drop
import { ROUTE_ERR_BAD_FIELD, ROUTE_ERR_BAD_NEXT_HOP, ROUTE_OK } from "./codes";
import { H_MAX_NEXT_HOPS, H_NEXT_HOPS_AT, NEXT_HOP_RECORD_BYTES } from "./layout";
import { writeBegin, writeEnd } from "./seqlock";

export const NEXT_HOP_BYTES: i32 = <i32>NEXT_HOP_RECORD_BYTES;
export const NEXT_HOP_UNDERLAY: i32 = 0;
export const NEXT_HOP_PORT: i32 = 4;
export const NEXT_HOP_MAC: i32 = 6;
export const NEXT_HOP_FLAGS: i32 = 12;
export const NEXT_HOP_VALID: u32 = 1;

/**
 * The record of next hop i. Unchecked, for AS callers holding an index from a lookup (always in
 * range, even on torn reads); indices from elsewhere go through nextHopSet/nextHopClear.
 */
@inline export function nextHopPtr(t: usize, i: i32): usize {
  return t + load<u32>(t, H_NEXT_HOPS_AT) + <usize>i * NEXT_HOP_RECORD_BYTES;
}

/** Whether i names a record of this table. */
@inline export function nextHopInRange(t: usize, i: i32): bool {
  return <u32>i < load<u32>(t, H_MAX_NEXT_HOPS);
}

/**
 * Set next hop i: underlay IPv4, UDP port, MAC as its first two bytes (macHi16) and last four
 * (macLo32), both as big-endian numbers (02:00:c6:12:00:01 = 0x0200, 0xC6120001).
 */
export function nextHopSet(t: usize, i: i32, underlayIp: u32, udpPort: u32, macHi16: u32, macLo32: u32): i32 {
  if (!nextHopInRange(t, i)) return ROUTE_ERR_BAD_NEXT_HOP;
  if (udpPort > 0xffff || macHi16 > 0xffff) return ROUTE_ERR_BAD_FIELD;
  const r = nextHopPtr(t, i);
  writeBegin(t);
  store<u32>(r, underlayIp, NEXT_HOP_UNDERLAY);
  store<u16>(r, <u16>udpPort, NEXT_HOP_PORT);
  store<u16>(r, bswap<u16>(<u16>macHi16), NEXT_HOP_MAC);
  store<u32>(r, bswap<u32>(macLo32), NEXT_HOP_MAC + 2);
  store<u32>(r, NEXT_HOP_VALID, NEXT_HOP_FLAGS);
  writeEnd(t);
  return ROUTE_OK;
}

/** Invalidate next hop i: routes through it stay, their packets drop until it is set again. */
export function nextHopClear(t: usize, i: i32): i32 {
  if (!nextHopInRange(t, i)) return ROUTE_ERR_BAD_NEXT_HOP;
  const r = nextHopPtr(t, i);
  writeBegin(t);
  store<u64>(r, 0);
  store<u64>(r, 0, 8);
  writeEnd(t);
  return ROUTE_OK;
}
