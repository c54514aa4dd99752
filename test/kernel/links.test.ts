// readLink's reading of `ip -json -details link show`, fed the output of iproute2 versions this
// machine does not have: 6.4 and later print the vxlan GBP flag as `"gbp": null` (a presence
// flag, iproute2 commit a183eba7) where 6.3 and before print `"gbp": true`.
import { describe, expect, it } from "vitest";
import type { Kernel } from "../../src/kernel/iproute.js";
import { readLink } from "../../src/kernel/links.js";

/** A Kernel whose `ip -json link show` answers `links`. */
const kernelShowing = (links: unknown[]): Kernel => ({ ipJson: async () => links }) as unknown as Kernel;

/** flannel.1 as `ip -d -j link show` prints it, with these vxlan info_data keys besides the usual. */
const flannel1 = (extra: Record<string, unknown>) => ({
  ifname: "flannel.1",
  address: "0a:58:c6:13:01:00",
  mtu: 1450,
  flags: ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
  linkinfo: {
    info_kind: "vxlan",
    info_data: { id: 1, local: "198.18.0.11", link: "eth0", port: 8472, learning: false, ttl: 0, ...extra },
  },
});

describe("readLink", () => {
  it.each([
    ["iproute2 6.4 and later (null)", { gbp: null }, true],
    ["iproute2 up to 6.3 (true)", { gbp: true }, true],
    ["a device without it (no key)", {}, false],
  ])("reads the vxlan GBP flag by its presence: %s", async (_, extra, gbp) => {
    const link = await readLink(kernelShowing([flannel1(extra)]), "flannel.1");
    expect(link?.vxlan).toMatchObject({ vni: 1, port: 8472, learning: false, gbp });
  });
});
