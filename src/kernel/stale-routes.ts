// Per-peer routes via a gateway that no userspace backend (udp, wasm-vxlan) wants. host-gw and
// vxlan with DirectRouting route each peer's subnet via its underlay address; flannel leaves those
// routes behind when it goes, and so does weft's kernel backend with `--keep-on-exit` before a
// start with a userspace backend. Being more specific than the TUN device's route for the whole
// network, they take pod traffic past the dataplane, to a node that may no longer hold the subnet.
// Only a kernel backend reconciles routes of the network, so a userspace backend removes them at
// its start: main-table routes inside the pod network, as long as a node subnet, via a gateway on
// the underlay device, this node's own subnet too (a route there is a former peer's, which would
// take the traffic of this node's own pods), written as weft and flannel write them (proto boot,
// the family's default metric). Nothing else matches: an on-link route, a route via the device's
// default gateway (an admin's, to a network moved away), another protocol's or metric's (a routing
// daemon's, an admin's), the default route, a route outside the network.
import { familyOf, formatAddr, type IpPrefix, parseAddr } from "../net/ip.js";
import { readRoutes, ROUTE, type RouteEntry, routeMetric } from "./entries.js";
import type { BatchFailure, Kernel } from "./iproute.js";

/**
 * Removes the gateway routes on the underlay device `dev` to node subnets (`subnetLen` long) of
 * `network` (flannel's and weft's kernel backends route peers there; a route on another device is
 * someone else's); returns the removed and the refusals.
 */
export async function removeStaleGatewayRoutes(
  kernel: Kernel,
  network: IpPrefix,
  subnetLen: number,
  dev: string,
): Promise<{ removed: RouteEntry[]; failures: BatchFailure[] }> {
  const family = familyOf(network.addr);
  const defaults = new Set(
    (
      await kernel.ipJson<Array<{ gateway?: string }>>([
        `-${family}`,
        "route",
        "show",
        "table",
        "main",
        "default",
        "dev",
        dev,
      ])
    ).flatMap((r) => (r.gateway ? [formatAddr(parseAddr(r.gateway))] : [])),
  );
  const staleNow = async () =>
    (await readRoutes(kernel, network)).filter(
      (r) =>
        r.gateway !== undefined &&
        !defaults.has(formatAddr(r.gateway)) &&
        r.dst.len === subnetLen &&
        r.dev === dev &&
        r.protocol === undefined &&
        r.metric === routeMetric(family),
    );
  const stale = await staleNow();
  if (stale.length === 0) return { removed: [], failures: [] };
  const failures = await kernel.ipBatchForce(stale.map((r) => ROUTE.del(r)));
  // A delete that matches nothing counts as done (the route went meanwhile), but so does one whose
  // line did not match a route that is there (one on a nexthop object): only what a second read
  // lacks is gone.
  const refused = new Set(failures.map((f) => f.command));
  const left = new Set((await staleNow()).map((r) => ROUTE.del(r)));
  for (const command of left)
    if (!refused.has(command))
      failures.push({ command, message: "the route is still there after its removal (a route on a nexthop object?)" });
  return { removed: stale.filter((r) => !left.has(ROUTE.del(r))), failures };
}
