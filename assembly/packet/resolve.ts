// The send path's first phase, shared by both encapsulations: check each packet read from the
// TUN device, look its destination up in the route table of its family and take what the next
// hop says. IPv6 packets need the context's IPv6 table (CTX_ROUTES6) and VXLAN: flannel's udp
// format carries IPv4 only.
//
// The route tables may be changed by the control thread while a worker reads them (seqlock,
// route/table.ts). Everything in this phase only reads the packet and writes the descriptor and
// the slot's headroom, so when a table changed under it, the phase simply runs again; steps
// that change the packet itself (the udp backend's TTL decrement) come after it, and so do the
// ICMP errors: written once the phase is final, each only if the worker's bucket (icmp-rate.ts)
// has a token for it.
import {
  DESC_OFF,
  DESC_LEN,
  DESC_ADDR,
  DESC_PORT,
  DESC_FLAGS,
  DESC_VERDICT,
  DESC_AUX,
  DESC_FLAG_ADDR6,
  HEADROOM,
  descPtr,
} from "../descriptor";
import { descInBounds, memoryTop } from "../batch";
import { CTX_VNI, CTX_MAC, CTX_LOCAL_ADDR6, ctxIcmpBucket, ctxRoutes, ctxRoutes6 } from "../context";
import {
  VERDICT_FORWARD,
  VERDICT_REPLY,
  DROP_TOO_SHORT,
  DROP_NO_ROUTE,
  DROP_NO_NEXT_HOP,
  DROP_IPV6_UNROUTED,
  DROP_BAD_DESCRIPTOR,
  DROP_ICMP_RATE_LIMITED,
} from "../verdict";
import {
  ipVersion,
  ipv4Check,
  ipv4Dst,
  ipv4MayTriggerIcmpError,
  ipv4WriteNetUnreachable,
  ICMP_ERROR_OVERHEAD,
} from "./ipv4";
import { ipv6Check, ipv6MayTriggerIcmpError, ipv6WriteNoRoute, ICMPV6_ERROR_OVERHEAD } from "./ipv6";
import { icmpBucketTake } from "./icmp-rate";
import { vxlanWriteHeader, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from "./vxlan-header";
import {
  routeLookup,
  nextHopPtr,
  NEXT_HOP_UNDERLAY,
  NEXT_HOP_PORT,
  NEXT_HOP_MAC,
  NEXT_HOP_FLAGS,
  NEXT_HOP_VALID,
} from "../route/table";
import { tablesReadBegin, tablesReadValid } from "../route/seqlock";
import {
  lookup6,
  nextHop6Ptr,
  NEXT_HOP6_UNDERLAY,
  NEXT_HOP6_PORT,
  NEXT_HOP6_MAC,
  NEXT_HOP6_FLAGS,
} from "../route6/table";
import { underlayIsIpv4Mapped } from "../route6/underlay";
import { VNET_HDR_BYTES } from "./vnet-header";

/**
 * Where in a slot's headroom (bytes from its start) a packet to an IPv6 underlay keeps its peer's
 * address, which the send reads (DESC_FLAG_ADDR6): copied from the next hop while the route
 * table's seqlock vouches for it, since the control thread may change or clear the record before
 * the send. Behind the vnet header parked at the slot's start (offload-send.ts), in front of the
 * VXLAN header; an ICMPv6 error, which would overlap it, is no send. Segments and trains in other
 * slots keep pointing here: the read slot (a flow queue's too) waits untouched for the send.
 */
const PEER_ADDR6_AT: i32 = VNET_HDR_BYTES;

/** What the send path produces: VXLAN frames, or bare IP packets (flannel's udp format). */
export const ENCAP_VXLAN: i32 = 0;
export const ENCAP_NONE: i32 = 1;

@inline function resolveIpv6(ctx: usize, routes6: usize, d: usize, p: usize, len: i32, encap: i32): i32 {
  if (routes6 == 0 || encap != ENCAP_VXLAN) return DROP_IPV6_UNROUTED;
  // The kernel wrote these packets; a hop limit of 0 cannot come from it, but costs nothing to check.
  const v = ipv6Check(p, len);
  if (v != VERDICT_FORWARD) return v;
  const nh = lookup6(routes6, load<u64>(p + 24), load<u64>(p + 32));
  if (nh < 0) return ipv6MayTriggerIcmpError(p) ? VERDICT_REPLY : DROP_NO_ROUTE;
  const rec = nextHop6Ptr(routes6, nh);
  if ((load<u32>(rec + <usize>NEXT_HOP6_FLAGS) & NEXT_HOP_VALID) == 0) return DROP_NO_NEXT_HOP;
  const underlay = rec + <usize>NEXT_HOP6_UNDERLAY;
  // An IPv4 underlay (::ffff:a.b.c.d) goes out of the IPv4 socket like any IPv4 peer.
  if (underlayIsIpv4Mapped(underlay)) {
    store<i32>(d + DESC_ADDR, <i32>bswap<u32>(load<u32>(underlay, 12)));
  } else {
    const to = p - <usize>(HEADROOM - PEER_ADDR6_AT);
    store<u64>(to, load<u64>(underlay));
    store<u64>(to, load<u64>(underlay, 8), 8);
    store<i32>(d + DESC_ADDR, <i32>to);
    store<i32>(d + DESC_FLAGS, load<i32>(d + DESC_FLAGS) | DESC_FLAG_ADDR6);
  }
  store<i32>(d + DESC_PORT, <i32>load<u16>(rec + <usize>NEXT_HOP6_PORT));
  store<i32>(d + DESC_AUX, nh);
  vxlanWriteHeader(p, load<u32>(ctx + CTX_VNI), rec + <usize>NEXT_HOP6_MAC, ctx + <usize>CTX_MAC, ETHERTYPE_IPV6);
  return VERDICT_FORWARD;
}

@inline function resolveOne(ctx: usize, routes: usize, routes6: usize, d: usize, encap: i32, top: i64): i32 {
  if (!descInBounds(d, top)) return DROP_BAD_DESCRIPTOR;
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  if (len < 1) return DROP_TOO_SHORT;
  if (ipVersion(p) == 6) return resolveIpv6(ctx, routes6, d, p, len, encap);
  // The kernel wrote these packets: structure is checked, the header checksum is trusted.
  const v = ipv4Check(p, len, false);
  if (v != VERDICT_FORWARD) return v;
  // No IPv4 table (wasm-vxlan's IPv6 dataplane; its device has no IPv4 address): no route, no error.
  if (routes == 0) return DROP_NO_ROUTE;
  const nh = routeLookup(routes, ipv4Dst(p));
  if (nh < 0) return ipv4MayTriggerIcmpError(p, len) ? VERDICT_REPLY : DROP_NO_ROUTE;
  const rec = nextHopPtr(routes, nh);
  if ((load<u32>(rec + <usize>NEXT_HOP_FLAGS) & NEXT_HOP_VALID) == 0) return DROP_NO_NEXT_HOP;
  store<i32>(d + DESC_ADDR, load<i32>(rec + <usize>NEXT_HOP_UNDERLAY));
  store<i32>(d + DESC_PORT, <i32>load<u16>(rec + <usize>NEXT_HOP_PORT));
  store<i32>(d + DESC_AUX, nh);
  if (encap == ENCAP_VXLAN) {
    vxlanWriteHeader(p, load<u32>(ctx + CTX_VNI), rec + <usize>NEXT_HOP_MAC, ctx + <usize>CTX_MAC, ETHERTYPE_IPV4);
  }
  return VERDICT_FORWARD;
}

/** Makes a forwarded packet's outcome final: it grows by the `header` bytes written in front of it. */
@inline export function resolveForward(d: usize, header: i32): void {
  store<i32>(d + DESC_OFF, load<i32>(d + DESC_OFF) - header);
  store<i32>(d + DESC_LEN, load<i32>(d + DESC_LEN) + header);
}

/**
 * Makes a reply's outcome final: with a token from the worker's bucket, the ICMP or ICMPv6 error
 * is written in front of its offender (still at OFF, so its version says which) and the
 * descriptor becomes it; without, the packet is dropped (DROP_ICMP_RATE_LIMITED). Returns whether
 * the error was written.
 */
@inline export function resolveReply(ctx: usize, d: usize): bool {
  if (!icmpBucketTake(ctxIcmpBucket(ctx))) {
    store<i32>(d + DESC_VERDICT, DROP_ICMP_RATE_LIMITED);
    return false;
  }
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  if (ipVersion(p) == 6) {
    store<i32>(d + DESC_LEN, ipv6WriteNoRoute(p, len, ctx + <usize>CTX_LOCAL_ADDR6));
    store<i32>(d + DESC_OFF, <i32>p - ICMPV6_ERROR_OVERHEAD);
  } else {
    store<i32>(d + DESC_LEN, ipv4WriteNetUnreachable(p, len));
    store<i32>(d + DESC_OFF, <i32>p - ICMP_ERROR_OVERHEAD);
  }
  store<i32>(d + DESC_AUX, -1);
  return true;
}

/** Makes the phase's outcome final for one single-segment packet (resolveForward, resolveReply). */
@inline export function resolveApply(ctx: usize, d: usize, header: i32): void {
  const v = load<i32>(d + DESC_VERDICT);
  if (v == VERDICT_FORWARD) resolveForward(d, header);
  else if (v == VERDICT_REPLY) resolveReply(ctx, d);
}

/** Runs the lookup phase over the batch until it completes against one generation of each table. */
@inline export function resolveBatch(ctx: usize, descs: usize, n: i32, encap: i32): void {
  const routes = ctxRoutes(ctx);
  const routes6 = ctxRoutes6(ctx);
  const top = memoryTop();
  let gens: u64;
  do {
    gens = tablesReadBegin(routes, routes6);
    for (let i = 0; i < n; i++) {
      const d = descPtr(descs, i);
      store<i32>(d + DESC_FLAGS, load<i32>(d + DESC_FLAGS) & ~DESC_FLAG_ADDR6);
      store<i32>(d + DESC_VERDICT, resolveOne(ctx, routes, routes6, d, encap, top));
    }
  } while (!tablesReadValid(routes, routes6, gens));
}
