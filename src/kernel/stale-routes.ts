// Per-peer routes via a gateway that no userspace backend (udp, wasm-vxlan) wants. host-gw and
// vxlan with DirectRouting route each peer's subnet via its underlay address; flannel leaves those
// routes behind when it goes, and so does weft's kernel backend with `--keep-on-exit` before a
// start with a userspace backend. Being more specific than the TUN device's route for the whole
// network, they take pod traffic past the dataplane, to a node that may no longer hold the subnet.
// Only a kernel backend reconciles routes of the network, so a userspace backend removes them at
// its start: main-table routes inside the pod network, at least as long as a node subnet, via a
// gateway, this node's own subnet too (a route there is a former peer's, which would take the
// traffic of this node's own pods). Nothing else matches: an on-link route, a route via a gateway
// that contains the network (the default route), a route outside the network.
import type { IpPrefix } from "../net/ip.js";
import { readRoutes, ROUTE, type RouteEntry } from "./entries.js";
import type { BatchFailure, Kernel } from "./iproute.js";

/** Removes the gateway routes to node subnets (`subnetLen` or longer) of `network`; returns the removed and the refusals. */
export async function removeStaleGatewayRoutes(
  kernel: Kernel,
  network: IpPrefix,
  subnetLen: number,
): Promise<{ removed: RouteEntry[]; failures: BatchFailure[] }> {
  const stale = (await readRoutes(kernel, network)).filter((r) => r.gateway !== undefined && r.dst.len >= subnetLen);
  const failures = await kernel.ipBatchForce(stale.map((r) => ROUTE.del(r)));
  const refused = new Set(failures.map((f) => f.command));
  return { removed: stale.filter((r) => !refused.has(ROUTE.del(r))), failures };
}
