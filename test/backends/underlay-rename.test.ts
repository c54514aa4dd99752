// The underlay interface renamed while a backend runs (`ip link set dev eth0 name up0`, as udev,
// systemd-networkd or a cloud agent do): the next reconcile finds it by its ifindex and keeps the
// overlay working on it, for each backend that names it (vxlan's device, host-gw's routes, a
// userspace backend's MTU reading). Two lab hosts with pods, the rename on host1.
import { describe, expect, it } from "vitest";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { podRoutes, removeLab, twoHostLab, type LabNode } from "./support.js";

/** A device's ifindex and, for a vxlan device, the underlay device it sends through. */
const linkOf = async (n: LabNode, dev: string) => {
  const [l] = await n.host.ns.kernel.ipJson<Array<{ ifindex: number; linkinfo?: { info_data?: { link?: string } } }>>([
    "-details",
    "link",
    "show",
    "dev",
    dev,
  ]);
  return { ifindex: l.ifindex, link: l.linkinfo?.info_data?.link };
};

describe.skipIf(!canUseNetns())("underlay interface renamed while the backend runs", () => {
  it.each(["vxlan", "host-gw", "wasm-vxlan"])(
    "%s: reconcile follows the new name; no device replaced, no kernel error, pods still reach each other",
    async (type) => {
      // Before, the backends named the interface by its start-time name: vxlan's reconcile found
      // flannel.1 mismatched (underlay device up0, not eth0), deleted it and could not make it again
      // on eth0; host-gw's routes on up0 were no longer its own and `dev eth0` was refused; a
      // userspace backend read no underlay MTU.
      const { lab, n1, n2 } = await twoHostLab(`bren${type.slice(0, 2)}`, type, 1400);
      try {
        const [h1, h2] = lab.hosts;
        const device = { vxlan: "flannel.1", "host-gw": undefined, "wasm-vxlan": "weft.1" }[type];
        const before = device && (await linkOf(n1, device));
        await h1.ns.ip("link set dev eth0 name up0");
        await h1.ns.ip("link set dev up0 mtu 1400");
        await n1.backend.reconcile();

        expect(n1.c.log.errors()).toEqual([]);
        expect(n1.c.log.lines.filter((l) => /replacing it/.test(l.msg))).toEqual([]);
        if (device) {
          // The same device, over the interface as it is now named, at the MTU it now carries.
          expect(await linkOf(n1, device)).toEqual({ ...before, link: type === "vxlan" ? "up0" : undefined });
          expect((await n1.host.ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", "dev", device]))[0].mtu).toBe(
            1350,
          );
        } else {
          expect((await podRoutes(h1)).filter((r) => r.dst === "198.19.2.0/24")).toEqual([
            { dst: "198.19.2.0/24", gateway: "198.18.0.12", dev: "up0", flags: [] },
          ]);
        }
        expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 2 })).received).toBe(2);
        expect((await ping(h2.pods[1], h1.pods[1].addr, { count: 2 })).received).toBe(2);

        // A peer removed after the rename takes its entries with it.
        await n1.backend.removePeer(n2.host.name);
        expect((await podRoutes(h1)).filter((r) => r.dst === "198.19.2.0/24")).toEqual([]);
        expect(n1.c.log.errors()).toEqual([]);
        expect(n1.c.log.lines).toContainEqual(
          expect.objectContaining({ code: "BACKEND_UNDERLAY_RENAMED", from: "eth0", to: "up0" }),
        );
      } finally {
        await removeLab(lab, [n1, n2]);
      }
    },
  );
});
