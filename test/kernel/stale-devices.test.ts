// Overlay devices a start removes: weft's and flannel's devices of this pod network that the
// config does not use go (with their routes); one the config uses, and another overlay's on
// another network in the same namespace, stay. Real devices in a namespace of the test's own.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { overlayDevices, removeStaleOverlayDevices } from "../../src/kernel/stale-devices.js";
import { Netns } from "../../src/lab/netns.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";

const PODS = parsePrefix("198.19.0.0/17");

describe.skipIf(!canUseNetns())("stale overlay devices", () => {
  let ns: Netns;
  beforeAll(async () => {
    ns = await Netns.create("ksd");
    await ns.ip("link add sd0 type veth peer name sd1");
    await ns.ip("addr add 198.18.0.250/24 dev sd0");
    await ns.ip("link set sd0 up");
    // A kept flannel.1 of this network (its /32 and a peer route), another overlay's flannel.2 on
    // another network, and the TUN device the config uses.
    await ns.ip("link add flannel.1 type vxlan id 1 local 198.18.0.250 dev sd0 dstport 8472 nolearning");
    await ns.ip("addr add 198.19.3.0/32 dev flannel.1");
    await ns.ip("link set flannel.1 up");
    await ns.ip("route add 198.19.4.0/24 via 198.19.4.0 dev flannel.1 onlink");
    await ns.ip("link add flannel.2 type vxlan id 2 local 198.18.0.250 dev sd0 dstport 4790 nolearning");
    await ns.ip("addr add 198.19.200.0/32 dev flannel.2");
    await ns.ip("tuntap add dev weft.1 mode tun");
    await ns.ip("addr add 198.19.3.0/17 dev weft.1");
  });
  afterAll(() => ns?.destroy());

  it("finds them with their VXLAN ports, and removes only this network's that the config does not use", async () => {
    expect((await overlayDevices(ns.kernel, [PODS])).sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: "flannel.1", inNetwork: true, vxlanPort: 8472 },
      { name: "flannel.2", inNetwork: false, vxlanPort: 4790 },
      { name: "weft.1", inNetwork: true },
    ]);
    expect(await removeStaleOverlayDevices(ns.kernel, new Set(["weft.1"]), [PODS])).toEqual({
      removed: ["flannel.1"],
      failures: [],
    });
    const left = (await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"])).map((l) => l.ifname);
    expect(left).toContain("flannel.2");
    expect(left).toContain("weft.1");
    expect(left).not.toContain("flannel.1");
    expect(await ns.ip("-4 route show 198.19.4.0/24")).toBe("");
  });
});
