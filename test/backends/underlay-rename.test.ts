// The underlay interface renamed while a backend runs (`ip link set dev eth0 name up0`, as udev,
// systemd-networkd or a cloud agent do): the next reconcile finds it by its ifindex and keeps the
// overlay working on it, for each backend that names it (vxlan's device, host-gw's routes, a
// userspace backend's MTU reading). Two lab hosts with pods, the rename on host1. The interface is
// renamed as udev and networkd do: down, rename, up (Linux before 6.2 refuses to rename an
// interface that is up: EBUSY); the down takes the routes through it, which the reconcile puts back.
// An interface deleted and made again has a new index, and its old one may be another device's.
import { chooseUnderlay } from "../../src/agent/underlay.js";
import type { LabCluster, LabHost } from "../../src/lab/cluster.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { ping } from "../../src/lab/traffic.js";
import { describe, expect, it } from "vitest";
import { canUseNetns } from "../support/netns.js";
import { podRoutes, removeLab, twoHostLab, type LabNode } from "./support.js";

/** Renames host1's interface (eth0 up0 unless told) as udev and systemd-networkd do. */
const rename = async (h: LabHost, from = "eth0", to = "up0") => {
  await h.ns.ip(`link set dev ${from} down`);
  await h.ns.ip(`link set dev ${from} name ${to}`);
  await h.ns.ip(`link set dev ${to} up`);
};

/** Runs `body` on a two-host lab of backend `type` (pods' MTU 1400), removed after whatever the outcome. */
const inLab = async (
  tag: string,
  type: string,
  body: (l: { lab: LabCluster; n1: LabNode; n2: LabNode; h1: LabHost; h2: LabHost }) => Promise<void>,
) => {
  const { lab, n1, n2 } = await twoHostLab(tag, type, 1400);
  try {
    await body({ lab, n1, n2, h1: lab.hosts[0], h2: lab.hosts[1] });
  } finally {
    await removeLab(lab, [n1, n2]);
  }
};

/** host1's routes to host2's pods. */
const toHost2 = async (h: LabHost) => (await podRoutes(h)).filter((r) => r.dst === "198.19.2.0/24");

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
      await inLab(`bren${type.slice(0, 2)}`, type, async ({ n1, n2, h1, h2 }) => {
        const device = { vxlan: "flannel.1", "host-gw": undefined, "wasm-vxlan": "weft.1" }[type];
        const before = device && (await linkOf(n1, device));
        await rename(h1);
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
      });
    },
  );

  it.each(["vxlan", "host-gw"])(
    "%s: an interface made anew under its name is taken at its new index, then followed through a rename; a device at the old index without the underlay's address is not",
    async (type) => {
      // Before, the index stayed the start-time one: the device given it was taken for the renamed
      // interface (BACKEND_UNDERLAY_RENAMED to stray, the overlay put on it), and a later rename
      // of the interface itself was not followed.
      await inLab(`bnew${type.slice(0, 2)}`, type, async ({ lab, n1, h1, h2 }) => {
        const [{ address: mac }] = await h1.ns.kernel.ipJson<Array<{ address: string }>>([
          "link",
          "show",
          "dev",
          "eth0",
        ]);
        await h1.ns.ip("link del eth0");
        // The old index taken by another device, as a pod's veth end moved in keeps its own.
        await h1.ns.ip(`link add stray index ${h1.underlayIfindex} type veth peer name strayp`);
        await h1.ns.ip("link set dev stray up");
        // The interface made again (its MAC kept, as a NIC's is, so host2's ARP entry holds).
        await lab.switchNs.ip(`link add h1 type veth peer name eth0 netns ${h1.ns.name}`);
        await lab.switchNs.ip("link set h1 master br0 up");
        await h1.ns.ip(`link set dev eth0 address ${mac}`);
        await h1.ns.ip("addr add 198.18.0.11/24 dev eth0");
        await h1.ns.ip("link set dev eth0 up");
        const [{ ifindex }] = await h1.ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "dev", "eth0"]);
        expect(ifindex).not.toBe(h1.underlayIfindex);

        await n1.backend.reconcile();
        expect(n1.c.ctx.underlay).toMatchObject({ iface: "eth0", ifindex });
        expect(n1.c.log.lines).toContainEqual(
          expect.objectContaining({ code: "BACKEND_UNDERLAY_REPLACED", from: h1.underlayIfindex, to: ifindex }),
        );
        expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 2 })).received).toBe(2);

        await rename(h1);
        await n1.backend.reconcile();
        expect(n1.c.ctx.underlay).toMatchObject({ iface: "up0", ifindex });
        if (type === "vxlan") expect((await linkOf(n1, "flannel.1")).link).toBe("up0");
        else
          expect((await podRoutes(h1)).filter((r) => r.dst === "198.19.2.0/24")).toEqual([
            { dst: "198.19.2.0/24", gateway: "198.18.0.12", dev: "up0", flags: [] },
          ]);
        expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 2 })).received).toBe(2);
        expect((await ping(h2.pods[1], h1.pods[1].addr, { count: 2 })).received).toBe(2);
        expect(n1.c.log.lines.filter((l) => l.code === "BACKEND_UNDERLAY_RENAMED")).toEqual([
          expect.objectContaining({ from: "eth0", to: "up0", ifindex }),
        ]);
        expect(n1.c.log.errors()).toEqual([]);
      });
    },
  );

  it("host-gw: with --public-ip on another device the rename is followed by the interface's own address", async () => {
    // Before, a device was taken for the renamed interface only while it held --public-ip, which
    // this interface never does: the rename was not followed, routes were refused on eth0.
    await inLab("bpubhg", "host-gw", async ({ n1, h1, h2 }) => {
      await h1.ns.ip("addr add 198.18.0.99/32 dev lo");
      const chosen = await chooseUnderlay(h1.ns.kernel, { iface: ["eth0"], publicIp: "198.18.0.99" });
      expect(chosen).toMatchObject({ iface: "eth0", addr: parseIpv4("198.18.0.99") });
      Object.assign(n1.c.ctx.underlay, chosen); // the backend's own object, as the agent shares it

      await rename(h1);
      await n1.backend.reconcile();
      expect(n1.c.ctx.underlay).toMatchObject({ iface: "up0", ifindex: h1.underlayIfindex });
      expect(await toHost2(h1)).toEqual([{ dst: "198.19.2.0/24", gateway: "198.18.0.12", dev: "up0", flags: [] }]);
      expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 2 })).received).toBe(2);
      expect(n1.c.log.lines).toContainEqual(
        expect.objectContaining({ code: "BACKEND_UNDERLAY_RENAMED", from: "eth0", to: "up0" }),
      );
      expect(n1.c.log.errors()).toEqual([]);
    });
  });

  it("host-gw: an old name left as an altname is not taken for the name; a renamed device without the address is warned of once", async () => {
    // Before, `ip addr show dev eth0` found the device at the index by its altname and the name
    // stayed eth0, while routes show up0: the backend's own routes were not its own.
    await inLab("baltnm", "host-gw", async ({ n1, h1, h2 }) => {
      await rename(h1);
      await h1.ns.ip("link property add dev up0 altname eth0");
      await n1.backend.reconcile();
      expect(n1.c.ctx.underlay).toMatchObject({ iface: "up0", ifindex: h1.underlayIfindex });
      expect(await toHost2(h1)).toEqual([{ dst: "198.19.2.0/24", gateway: "198.18.0.12", dev: "up0", flags: [] }]);
      expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 2 })).received).toBe(2);
      expect(n1.c.log.errors()).toEqual([]);

      // Renamed after its address went (as an IPv6 one does at a down with keep_addr_on_down 0):
      // not followed, and said once, not at every reconcile (before, nothing was said).
      await h1.ns.ip("addr flush dev up0");
      await rename(h1, "up0", "up1");
      const lost = () => n1.c.log.lines.filter((l) => l.code === "BACKEND_UNDERLAY_LOST");
      for (let i = 0; i < 2; i++) await n1.backend.reconcile().catch(() => undefined);
      expect(n1.c.ctx.underlay).toMatchObject({ iface: "up0" });
      expect(lost()).toEqual([
        expect.objectContaining({ level: 40, iface: "up0", device: "up1", ifindex: h1.underlayIfindex }),
      ]);
      // Its address back, it is followed.
      await h1.ns.ip("addr add 198.18.0.11/24 dev up1");
      await n1.backend.reconcile();
      expect(n1.c.ctx.underlay).toMatchObject({ iface: "up1" });
      expect(await toHost2(h1)).toEqual([{ dst: "198.19.2.0/24", gateway: "198.18.0.12", dev: "up1", flags: [] }]);
      expect(lost()).toHaveLength(1);
    });
  });
});
