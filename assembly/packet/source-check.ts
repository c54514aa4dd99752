// Anti-spoofing on the receive path, which flannel lacks: a packet is accepted only if its inner
// source address lies in the subnet of a known peer and it arrived from that peer's underlay
// address. One route lookup of the inner source per packet; the route table is read under its
// seqlock, so the phase writes only AUX (the peer's next hop, or minus a drop reason) and runs
// again when the table changed under it. Verdicts become final afterwards.
import { DESC_OFF, DESC_ADDR, DESC_VERDICT, DESC_AUX, descPtr } from "../descriptor";
import { CTX_FLAG_ANTI_SPOOF, ctxHasFlag, ctxRoutes } from "../context";
import { VERDICT_FORWARD, DROP_IPV6_UNROUTED, DROP_UNKNOWN_SOURCE, DROP_SPOOFED } from "../verdict";
import { routeReadBegin, routeReadValid, routeLookup, nextHopPtr, NEXT_HOP_UNDERLAY, NEXT_HOP_FLAGS, NEXT_HOP_VALID } from "../route/table";
import { ipVersion } from "./ipv4";
import { be32 } from "./bytes";

@inline function sourcePeer(routes: usize, d: usize): i32 {
  const p = <usize>load<i32>(d + DESC_OFF);
  if (ipVersion(p) != 4) return -DROP_IPV6_UNROUTED; // no IPv6 peers without IPv6 routes
  const nh = routeLookup(routes, be32(p + 12));
  if (nh < 0) return -DROP_UNKNOWN_SOURCE;
  const rec = nextHopPtr(routes, nh);
  const ok = (load<u32>(rec + <usize>NEXT_HOP_FLAGS) & NEXT_HOP_VALID) != 0
    && load<u32>(rec + <usize>NEXT_HOP_UNDERLAY) == load<u32>(d + DESC_ADDR);
  return ok ? nh : -DROP_SPOOFED;
}

/** Checks the sources of the packets still to forward, when the context asks for it. */
export function sourceCheckBatch(ctx: usize, descs: usize, n: i32): void {
  if (!ctxHasFlag(ctx, CTX_FLAG_ANTI_SPOOF)) return;
  const routes = ctxRoutes(ctx);
  let gen: u32;
  do {
    gen = routeReadBegin(routes);
    for (let i = 0; i < n; i++) {
      const d = descPtr(descs, i);
      if (load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD) store<i32>(d + DESC_AUX, sourcePeer(routes, d));
    }
  } while (!routeReadValid(routes, gen));
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    const peer = load<i32>(d + DESC_AUX);
    if (load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD && peer < 0) {
      store<i32>(d + DESC_VERDICT, -peer);
      store<i32>(d + DESC_AUX, -1);
    }
  }
}
