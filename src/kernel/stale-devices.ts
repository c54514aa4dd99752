// Overlay devices no backend of the running config uses. A device kept by `--keep-on-exit` (or
// left by flannel) stays when the next start runs another backend: flannel.<VNI>'s per-peer
// onlink routes are more specific than a TUN device's network route and took pod traffic into a
// tunnel the peers no longer speak (udp, wasm-vxlan), or into nothing where host-gw cannot reach
// a peer; a kept flannel.<VNI> also holds the VXLAN port wasm-vxlan binds. So before the
// backends start, every weft or flannel overlay device they will not use goes, with its routes.
import { WEFT_DEVICE } from "./pod-addresses.js";
import type { BatchFailure, Kernel } from "./iproute.js";

/** Deletes the overlay devices (WEFT_DEVICE) not in `keep`; returns those deleted and the refusals. */
export async function removeStaleOverlayDevices(
  kernel: Kernel,
  keep: ReadonlySet<string>,
): Promise<{ removed: string[]; failures: BatchFailure[] }> {
  const links = await kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]);
  const stale = links.map((l) => l.ifname).filter((n) => WEFT_DEVICE.test(n) && !keep.has(n));
  const failures = await kernel.ipBatchForce(stale.map((n) => `link del ${n}`));
  const refused = new Set(failures.map((f) => f.command));
  return { removed: stale.filter((n) => !refused.has(`link del ${n}`)), failures };
}
