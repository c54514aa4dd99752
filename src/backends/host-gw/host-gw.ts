// The `host-gw` backend: no encapsulation, a route per peer to its subnet via its underlay
// address, as flannel's host-gw. That only works when every peer is on this host's L2 network:
// a peer the kernel reaches through a gateway (or not at all) would get a route that drops
// everything, so it gets none, and is reported instead (an error in the log, peersUnreachable).
import { WeftError } from "../../errors.js";
import type { PeerEntries } from "../../kernel/converge.js";
import { type RouteEntry, routeMetric } from "../../kernel/entries.js";
import { readAddresses } from "../../kernel/links.js";
import { familyOf, formatAddr as formatIpv4 } from "../../net/ip.js";
import type { BackendAnnouncement, BackendContext, BackendPeer } from "../backend.js";
import { KernelBackend, underlayAddr } from "../kernel-backend.js";

export class HostGwBackend extends KernelBackend {
  readonly mtu: number;
  protected readonly entryDevice = undefined;

  constructor(ctx: BackendContext) {
    super("host-gw", ctx);
    this.mtu = ctx.underlay.mtu;
  }

  protected announcement(): BackendAnnouncement {
    return { type: "host-gw" };
  }

  /** Peers route to this host's underlay address, so it must be on the interface (no NAT), as flannel insists. */
  protected async setUp(): Promise<void> {
    const { kernel, underlay } = this.ctx;
    const own = underlayAddr(this.ctx);
    const addrs = await readAddresses(kernel, underlay.iface, familyOf(own));
    if (!addrs.some((a) => a.addr === own)) {
      throw new WeftError(
        "BACKEND_HOSTGW_ADDRESS_NOT_LOCAL",
        `host-gw needs the public address ${formatIpv4(own)} on ${underlay.iface} (it has ${addrs.map((a) => formatIpv4(a.addr)).join(", ") || "none"}); ` +
          `behind NAT peers cannot route to this host: use vxlan, or set --public-ip / --iface to the interface's own address`,
      );
    }
  }

  protected async tearDown(): Promise<void> {}

  protected async ensureDevices(): Promise<void> {}

  protected async plan(peers: BackendPeer[], iface: string): Promise<Map<string, PeerEntries | string>> {
    const problems = await this.directReachProblems(peers, iface);
    return new Map(
      peers.map((p, i): [string, PeerEntries | string] => [
        p.name,
        problems[i] === undefined
          ? {
              route: {
                dst: p.subnet,
                gateway: p.underlay,
                dev: iface,
                onlink: false,
                metric: routeMetric(familyOf(p.underlay)),
              },
            }
          : `${problems[i]}; host-gw needs every host on one L2 network (use vxlan, with DirectRouting, across routers)`,
      ]),
    );
  }

  protected ownsRoute(r: RouteEntry, iface: string): boolean {
    return r.gateway !== undefined && r.dev === iface;
  }
}
