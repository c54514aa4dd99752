// Per-peer routes via a gateway that no userspace backend (udp, wasm-vxlan) wants. host-gw and
// vxlan with DirectRouting route each peer's subnet via its underlay address; flannel leaves those
// routes behind when it goes, and so does weft's kernel backend with `--keep-on-exit` before a
// start with a userspace backend. Being more specific than the TUN device's route for the whole
// network, they take pod traffic past the dataplane, to a node that may no longer hold the subnet.
// Only a kernel backend reconciles routes of the network, so a userspace backend removes them at
// its start: main-table routes inside the pod network, as long as a node subnet or longer (a
// migrated flannel's subnets may be longer than weft's; such a route takes traffic past the TUN
// device, whoever put it there) up to flannel's longest subnets, via a gateway on the underlay device, this
// node's own subnet too (a route there is a former peer's, which would take the traffic of this
// node's own pods), written as weft and flannel write them (proto boot, the family's default
// metric). The agent's sweeps (of a network a kept restart dropped, whose subnet length subnet.env
// gave; of a failed backend's) match that length alone: what else is there is not the old run's.
// Nothing else matches: an on-link route, a route via the device's default gateway (any of a
// multipath default route's; an admin's, to a network moved away), another protocol's or metric's
// (a routing daemon's, an admin's), another length (an admin's), the default route, a route
// outside the network. Where the default gateways cannot be read, nothing is removed.
import { familyOf, formatAddr, type IpPrefix, MAX_SUBNET_LEN, parseAddr } from "../net/ip.js";
import { readRoutes, ROUTE, type RouteEntry, routeMetric } from "./entries.js";
import type { BatchFailure, Kernel } from "./iproute.js";

/** A default route as `ip -json` gives it: a multipath one's gateways are its nexthops'. */
type DefaultRoute = { gateway?: string; dev?: string; nexthops?: Array<{ gateway?: string; dev?: string }> };

/**
 * The gateways on `dev` of the family's default routes in the main table, each of a multipath
 * one's too. Not filtered by `dev` in the command: iproute2 then leaves out a multipath route.
 */
async function defaultGateways(kernel: Kernel, family: 4 | 6, dev: string): Promise<Set<string>> {
  const routes = await kernel.ipJson<DefaultRoute[]>([`-${family}`, "route", "show", "table", "main", "default"]);
  return new Set(
    routes
      .flatMap((r) => [r, ...(r.nexthops ?? [])])
      .flatMap((h) => (h.gateway && h.dev === dev ? [formatAddr(parseAddr(h.gateway))] : [])),
  );
}

/**
 * Removes the gateway routes on the underlay device `dev` to node subnets (`subnetLen` long; with
 * `longer`, longer ones too, up to the family's longest subnet: flannel's of a network whose
 * subnets were longer) of `network` (flannel's and weft's kernel backends route peers there; a
 * route on another device is someone else's); returns the removed and the refusals.
 */
export async function removeStaleGatewayRoutes(
  kernel: Kernel,
  network: IpPrefix,
  subnetLen: number,
  dev: string,
  { longer }: { longer: boolean },
): Promise<{ removed: RouteEntry[]; failures: BatchFailure[] }> {
  const family = familyOf(network.addr);
  const maxLen = Math.min(longer ? MAX_SUBNET_LEN[family] : subnetLen, MAX_SUBNET_LEN[family]);
  const candidates = async () =>
    (await readRoutes(kernel, network)).filter(
      (r) =>
        r.gateway !== undefined &&
        r.dst.len >= subnetLen &&
        r.dst.len <= maxLen &&
        r.dev === dev &&
        r.protocol === undefined &&
        r.metric === routeMetric(family),
    );
  let defaults: Set<string>;
  try {
    defaults = await defaultGateways(kernel, family, dev);
  } catch (err) {
    // Without the default gateways a route via one (an admin's) cannot be told from a node's:
    // none is removed, as deleting an admin's route is worse than leaving a stale one, which is
    // said with the command that removes it.
    const message = `not removed, as the default gateways of ${dev} could not be read (${(err as Error).message}) and a route via one may be an admin's`;
    return { removed: [], failures: (await candidates()).map((r) => ({ command: ROUTE.del(r), message })) };
  }
  const staleNow = async () => (await candidates()).filter((r) => !defaults.has(formatAddr(r.gateway!)));
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
