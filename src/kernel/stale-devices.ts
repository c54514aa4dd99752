// Overlay devices no backend of the running config uses. A device kept by `--keep-on-exit` (or
// left by flannel) stays when the next start runs another backend: flannel.<VNI>'s per-peer
// onlink routes are more specific than a TUN device's network route and took pod traffic into a
// tunnel the peers no longer speak (udp, wasm-vxlan), or into nothing where host-gw cannot reach
// a peer; a kept flannel.<VNI> also holds the VXLAN port wasm-vxlan binds. So before the
// backends start, every weft or flannel overlay device they will not use goes, with its routes —
// only one that holds an address in this config's pod network, as the devices of this network
// do: another overlay on another network in the same namespace is left alone.
import { contains, parseAddr, type IpPrefix } from "../net/ip.js";
import type { BatchFailure, Kernel } from "./iproute.js";
import { WEFT_DEVICE } from "./pod-addresses.js";

export interface OverlayDevice {
  name: string;
  /** Holds an address in one of the pod networks given. */
  inNetwork: boolean;
  /** A kernel VXLAN device's UDP port (it holds it on the wildcard address). */
  vxlanPort?: number;
}

/** The weft and flannel overlay devices here (WEFT_DEVICE). */
export async function overlayDevices(kernel: Kernel, networks: readonly IpPrefix[]): Promise<OverlayDevice[]> {
  const links = await kernel.ipJson<
    Array<{
      ifname: string;
      addr_info?: Array<{ local: string }>;
      linkinfo?: { info_kind?: string; info_data?: { port?: number } };
    }>
  >(["-details", "addr", "show"]);
  return links
    .filter((l) => WEFT_DEVICE.test(l.ifname))
    .map((l) => ({
      name: l.ifname,
      inNetwork: (l.addr_info ?? []).some((a) => networks.some((n) => contains(n, parseAddr(a.local)))),
      ...(l.linkinfo?.info_kind === "vxlan" && { vxlanPort: l.linkinfo.info_data?.port }),
    }));
}

/** Deletes this network's overlay devices not in `keep`; returns those deleted and the refusals. */
export async function removeStaleOverlayDevices(
  kernel: Kernel,
  keep: ReadonlySet<string>,
  networks: readonly IpPrefix[],
): Promise<{ removed: string[]; failures: BatchFailure[] }> {
  const stale = (await overlayDevices(kernel, networks)).filter((d) => d.inNetwork && !keep.has(d.name));
  const lines = stale.map((d) => `link del ${d.name}`);
  const failures = await kernel.ipBatchForce(lines);
  const refused = new Set(failures.map((f) => f.command));
  return { removed: stale.map((d) => d.name).filter((n) => !refused.has(`link del ${n}`)), failures };
}
