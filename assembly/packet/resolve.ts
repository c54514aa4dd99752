// The send path's first phase, shared by both encapsulations: check each packet read from the
// TUN device, look its destination up in the route table and take what the next hop says.
//
// The route table may be changed by the control thread while a worker reads it (seqlock,
// route/table.ts). Everything in this phase only reads the packet and writes the descriptor and
// the slot's headroom, so when the table changed under it, the phase simply runs again; steps
// that change the packet itself (the udp backend's TTL decrement) come after it.
import { DESC_OFF, DESC_LEN, DESC_ADDR, DESC_PORT, DESC_VERDICT, DESC_AUX, descPtr } from "../descriptor";
import { descInBounds, memoryTop } from "../batch";
import { CTX_VNI, CTX_MAC, CTX_LOCAL_ADDR, ctxRoutes } from "../context";
import {
  VERDICT_FORWARD, VERDICT_REPLY, DROP_TOO_SHORT, DROP_NO_ROUTE, DROP_NO_NEXT_HOP,
  DROP_IPV6_UNROUTED, DROP_BAD_DESCRIPTOR,
} from "../verdict";
import { ipVersion, ipv4Check, ipv4Dst, ipv4MayTriggerIcmpError, ipv4WriteNetUnreachable, ICMP_ERROR_OVERHEAD } from "./ipv4";
import { vxlanWriteHeader, ETHERTYPE_IPV4 } from "./vxlan";
import {
  routeReadBegin, routeReadValid, routeLookup, nextHopPtr,
  NEXT_HOP_UNDERLAY, NEXT_HOP_PORT, NEXT_HOP_MAC, NEXT_HOP_FLAGS, NEXT_HOP_VALID,
} from "../route/table";

/** What the send path produces: VXLAN frames, or bare IP packets (flannel's udp format). */
export const ENCAP_VXLAN: i32 = 0;
export const ENCAP_NONE: i32 = 1;

@inline function resolveOne(ctx: usize, routes: usize, d: usize, encap: i32, top: i64): i32 {
  if (!descInBounds(d, top)) return DROP_BAD_DESCRIPTOR;
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  if (len < 1) return DROP_TOO_SHORT;
  if (ipVersion(p) == 6) return DROP_IPV6_UNROUTED;
  // The kernel wrote these packets: structure is checked, the header checksum is trusted.
  const v = ipv4Check(p, len, false);
  if (v != VERDICT_FORWARD) return v;
  const nh = routeLookup(routes, ipv4Dst(p));
  if (nh < 0) {
    if (!ipv4MayTriggerIcmpError(p, len)) return DROP_NO_ROUTE;
    // The reply's length waits in AUX: LEN must stay as read until the phase is final.
    store<i32>(d + DESC_AUX, ipv4WriteNetUnreachable(p, len, load<u32>(ctx + CTX_LOCAL_ADDR)));
    return VERDICT_REPLY;
  }
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

/**
 * Makes the phase's outcome final for one descriptor: a forwarded packet grows by the `header`
 * bytes written in front of it; a reply becomes the ICMP packet written in front of its offender.
 */
@inline export function resolveApply(d: usize, header: i32): void {
  const v = load<i32>(d + DESC_VERDICT);
  if (v == VERDICT_FORWARD) {
    store<i32>(d + DESC_OFF, load<i32>(d + DESC_OFF) - header);
    store<i32>(d + DESC_LEN, load<i32>(d + DESC_LEN) + header);
  } else if (v == VERDICT_REPLY) {
    store<i32>(d + DESC_OFF, load<i32>(d + DESC_OFF) - ICMP_ERROR_OVERHEAD);
    store<i32>(d + DESC_LEN, load<i32>(d + DESC_AUX));
    store<i32>(d + DESC_AUX, -1);
  }
}

/** Runs the lookup phase over the batch until it completes against one table generation. */
@inline export function resolveBatch(ctx: usize, descs: usize, n: i32, encap: i32): void {
  const routes = ctxRoutes(ctx);
  const top = memoryTop();
  let gen: u32;
  do {
    gen = routeReadBegin(routes);
    for (let i = 0; i < n; i++) {
      const d = descPtr(descs, i);
      store<i32>(d + DESC_VERDICT, resolveOne(ctx, routes, d, encap, top));
    }
  } while (!routeReadValid(routes, gen));
}
