import { describe, expect, it } from "vitest";
import { SubnetSpace } from "../../src/control/lease/slots.js";

describe("SubnetSpace (flannel's Network/SubnetLen/SubnetMin/SubnetMax)", () => {
  it("applies flannel's defaults: /24s of a /16, skipping the first subnet", () => {
    const space = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
    expect(space.subnetLen).toBe(24);
    expect(space.slotCount).toBe(255);
    expect(space.subnetOf(0)).toBe("198.19.1.0/24");
    expect(space.subnetOf(254)).toBe("198.19.255.0/24");
    expect(space.slotOf("198.19.7.0/24")).toBe(6);
    expect(space.slotOf("198.19.0.0/24")).toBeUndefined();
    expect(space.slotOf("198.20.1.0/24")).toBeUndefined();
    expect(space.slotOf("198.19.1.0/25")).toBeUndefined();
  });

  it("gives networks smaller than /22 four subnets", () => {
    expect(SubnetSpace.fromConfig({ Network: "198.19.0.0/23" }).subnetLen).toBe(25);
    expect(SubnetSpace.fromConfig({ Network: "198.19.0.0/28" }).subnetLen).toBe(30);
  });

  it("honours SubnetMin and SubnetMax", () => {
    const space = SubnetSpace.fromConfig({
      Network: "10.0.0.0/8",
      SubnetLen: 20,
      SubnetMin: "10.10.0.0",
      SubnetMax: "10.99.0.0",
    });
    expect(space.subnetOf(0)).toBe("10.10.0.0/20");
    expect(space.slotCount).toBe((0x0a630000 - 0x0a0a0000) / 4096 + 1);
    expect(space.subnetOf(space.slotCount - 1)).toBe("10.99.0.0/20");
  });

  it("round-trips every slot of a space", () => {
    const space = SubnetSpace.fromConfig({ Network: "172.16.0.0/12", SubnetLen: 22 });
    for (let s = 0; s < space.slotCount; s++) expect(space.slotOf(space.subnetOf(s))).toBe(s);
  });

  it("refuses bad configs with LEASE_BAD_NETWORK_CONFIG and a hint", () => {
    const bad = [
      { Network: "198.19.0.0/29" },
      { Network: "198.19.0.0/16", SubnetLen: 31 },
      { Network: "198.19.0.0/16", SubnetLen: 17 },
      { Network: "198.19.0.0/16", SubnetMin: "198.20.0.0" },
      { Network: "198.19.0.0/16", SubnetMax: "198.19.3.128" },
      { Network: "198.19.0.0/16", SubnetMin: "198.19.9.0", SubnetMax: "198.19.3.0" },
    ];
    for (const config of bad) {
      expect(() => SubnetSpace.fromConfig(config), JSON.stringify(config)).toThrow(
        expect.objectContaining({ code: "LEASE_BAD_NETWORK_CONFIG" }),
      );
    }
    expect(() => SubnetSpace.fromConfig({ Network: "198.19.0.1/16" })).toThrow(
      expect.objectContaining({ code: "NET_BAD_PREFIX" }),
    );
    // Large spaces are fine: the ring holds ranges, not slots.
    expect(SubnetSpace.fromConfig({ Network: "10.0.0.0/8", SubnetLen: 26 }).slotCount).toBe(2 ** 18 - 1);
  });

  it("fingerprints the resolved config, so nodes with different configs can tell", () => {
    const a = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
    const b = SubnetSpace.fromConfig({ Network: "198.19.0.0/16", SubnetLen: 24, SubnetMin: "198.19.1.0" });
    const c = SubnetSpace.fromConfig({ Network: "198.19.0.0/16", SubnetMin: "198.19.2.0" });
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(a.fingerprint).not.toBe(c.fingerprint);
  });
});
