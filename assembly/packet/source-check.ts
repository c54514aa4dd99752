// Anti-spoofing on the receive path, which flannel lacks: a packet is accepted only if its inner
// source address lies in the subnet of a known peer and it arrived from that peer's underlay
// address. One route lookup of the inner source per packet, in the table of its family (IPv6
// packets in the context's IPv6 table; without one they are dropped as IPV6_UNROUTED; IPv4
// packets without an IPv4 table come from no known peer: UNKNOWN_SOURCE). The
// route tables are read under their seqlocks, so the phase writes only AUX (the peer's next hop,
// or minus a drop reason) and runs again when a table changed under it. Verdicts become final
// afterwards.
import { DESC_OFF, DESC_ADDR, DESC_FLAGS, DESC_VERDICT, DESC_AUX, DESC_FLAG_ADDR6, descPtr } from "../descriptor";
import { CTX_FLAG_ANTI_SPOOF, ctxHasFlag, ctxRoutes, ctxRoutes6 } from "../context";
import { VERDICT_FORWARD, DROP_IPV6_UNROUTED, DROP_UNKNOWN_SOURCE, DROP_SPOOFED } from "../verdict";
import { routeLookup, nextHopPtr, NEXT_HOP_UNDERLAY, NEXT_HOP_FLAGS, NEXT_HOP_VALID } from "../route/table";
import { tablesReadBegin, tablesReadValid } from "../route/seqlock";
import { lookup6, nextHop6Ptr, NEXT_HOP6_UNDERLAY, NEXT_HOP6_FLAGS } from "../route6/table";
import { underlayIsIpv4Mapped } from "../route6/underlay";
import { ipVersion } from "./ipv4";
import { be32 } from "./bytes";

/** Whether the packet of descriptor d came from the 16-byte underlay address at u. */
@inline function cameFrom6(d: usize, u: usize): bool {
  if ((load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6) != 0) {
    const a = <usize>load<i32>(d + DESC_ADDR);
    return load<u64>(a) == load<u64>(u) && load<u64>(a, 8) == load<u64>(u, 8);
  }
  return underlayIsIpv4Mapped(u) && bswap<u32>(load<u32>(u, 12)) == load<u32>(d + DESC_ADDR);
}

@inline function sourcePeer(routes: usize, routes6: usize, d: usize): i32 {
  const p = <usize>load<i32>(d + DESC_OFF);
  if (ipVersion(p) != 4) {
    if (routes6 == 0) return -DROP_IPV6_UNROUTED;
    const nh = lookup6(routes6, load<u64>(p + 8), load<u64>(p + 16));
    if (nh < 0) return -DROP_UNKNOWN_SOURCE;
    const rec = nextHop6Ptr(routes6, nh);
    const ok =
      (load<u32>(rec + <usize>NEXT_HOP6_FLAGS) & NEXT_HOP_VALID) != 0 && cameFrom6(d, rec + <usize>NEXT_HOP6_UNDERLAY);
    return ok ? nh : -DROP_SPOOFED;
  }
  if ((load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6) != 0) return -DROP_SPOOFED; // IPv4 peers have IPv4 underlays
  if (routes == 0) return -DROP_UNKNOWN_SOURCE; // no IPv4 table: no IPv4 peers
  const nh = routeLookup(routes, be32(p + 12));
  if (nh < 0) return -DROP_UNKNOWN_SOURCE;
  const rec = nextHopPtr(routes, nh);
  const ok =
    (load<u32>(rec + <usize>NEXT_HOP_FLAGS) & NEXT_HOP_VALID) != 0 &&
    load<u32>(rec + <usize>NEXT_HOP_UNDERLAY) == load<u32>(d + DESC_ADDR);
  return ok ? nh : -DROP_SPOOFED;
}

/** Checks the sources of the packets still to forward, when the context asks for it. */
export function sourceCheckBatch(ctx: usize, descs: usize, n: i32): void {
  if (!ctxHasFlag(ctx, CTX_FLAG_ANTI_SPOOF)) return;
  const routes = ctxRoutes(ctx);
  const routes6 = ctxRoutes6(ctx);
  let gens: u64;
  do {
    gens = tablesReadBegin(routes, routes6);
    for (let i = 0; i < n; i++) {
      const d = descPtr(descs, i);
      if (load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD) store<i32>(d + DESC_AUX, sourcePeer(routes, routes6, d));
    }
  } while (!tablesReadValid(routes, routes6, gens));
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    const peer = load<i32>(d + DESC_AUX);
    if (load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD && peer < 0) {
      store<i32>(d + DESC_VERDICT, -peer);
      store<i32>(d + DESC_AUX, -1);
    }
  }
}
