import { describe, expect, it } from "vitest";
import { configReference, parseNetConf } from "../../src/config/net-conf.js";

const parse = (o: unknown) => parseNetConf(JSON.stringify(o));

describe("net-conf.json", () => {
  it("accepts flannel's documented example and defaults the backend to vxlan", () => {
    const c = parse({ Network: "10.244.0.0/16" });
    expect(c.Backend).toEqual({ Type: "vxlan", VNI: 1, Port: 8472, DirectRouting: false, GBP: false });
    expect(c.space.subnetLen).toBe(24);
    expect(c.space.subnetOf(0)).toBe("10.244.1.0/24"); // flannel skips the first subnet
    expect(c.space.slotCount).toBe(255);
  });

  it("follows flannel's SubnetLen default for small networks", () => {
    expect(parse({ Network: "198.19.0.0/24" }).space.subnetLen).toBe(26);
  });

  it("fills per-backend defaults", () => {
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "udp" } }).Backend).toEqual({ Type: "udp", Port: 8285 });
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Workers: 2 } }).Backend).toEqual({ Type: "wasm-vxlan", VNI: 1, Port: 8472, Workers: 2 });
  });

  it.each([
    [{ Network: "198.19.0.0/16", Backend: { Type: "ipsec" } }, /Backend\.Type is "ipsec"; valid types are vxlan, host-gw, udp, wasm-vxlan/],
    [{ Network: "198.19.0.0/16", Backend: { Type: "vxlan", VNI: -1 } }, /Backend\.VNI = -1/],
    [{ Network: "198.19.0.0/16", Backend: { Type: "udp", VNI: 4 } }, /unknown key\(s\) VNI/],
    [{ Network: "198.19.0.0/16", Bogus: 1 }, /unknown key\(s\) Bogus; allowed here: Network, SubnetLen/],
    [{ Network: "198.19.0.1/16" }, /host bits set/],
    [{ Network: "198.19.0.0/16", SubnetMin: "198.20.0.0" }, /SubnetMin 198\.20\.0\.0 is not inside Network/],
    [{ Network: "198.19.0.0/16", SubnetLen: 17 }, /at least four subnets/],
    [{ SubnetLen: 24 }, /Network = undefined/],
  ])("rejects %j with one clear error", (conf, message) => {
    expect(() => parse(conf)).toThrow(message);
    try {
      parse(conf);
    } catch (e) {
      expect((e as { code: string }).code).toBe("CONFIG_INVALID");
    }
  });

  it("rejects text that is not JSON", () => {
    expect(() => parseNetConf("{ Network: ")).toThrow(/not valid JSON/);
  });

  it("documents every key", () => {
    const ref = configReference();
    for (const key of ["Network", "SubnetLen", "Backend.VNI` (vxlan)", "Backend.Workers` (wasm-vxlan)", "Backend.Port` (udp)"]) expect(ref).toContain(key);
  });
});
