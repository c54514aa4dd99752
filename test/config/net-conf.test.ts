import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configReference, parseNetConf } from "../../src/config/net-conf.js";
import { projectFile } from "../../src/paths.js";

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
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "udp" } }).Backend).toEqual({ Type: "udp", Port: 8285, Offloads: true });
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Workers: 2 } }).Backend).toEqual({ Type: "wasm-vxlan", VNI: 1, Port: 8472, Workers: 2, Offloads: true });
  });

  it("takes Backend.Offloads for the userspace backends only", () => {
    for (const Type of ["udp", "wasm-vxlan"]) {
      expect(parse({ Network: "198.19.0.0/16", Backend: { Type } }).Backend).toMatchObject({ Offloads: true });
      expect(parse({ Network: "198.19.0.0/16", Backend: { Type, Offloads: false } }).Backend).toMatchObject({ Offloads: false });
      expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type, Offloads: "no" } })).toThrow(/Backend\.Offloads = "no"/);
    }
    for (const Type of ["vxlan", "host-gw"]) {
      const message = expect.stringMatching(new RegExp(`unknown key\\(s\\) Offloads; allowed here: .*\\(Backend\\.Type ${Type}\\)$`));
      expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type, Offloads: false } })).toThrow(expect.objectContaining({ code: "CONFIG_NET_CONF_INVALID", message }));
    }
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
      expect((e as { code: string }).code).toBe("CONFIG_NET_CONF_INVALID");
    }
  });

  it("rejects text that is not JSON", () => {
    expect(() => parseNetConf("{ Network: ")).toThrow(/not valid JSON/);
  });

  it("documents every key", () => {
    const ref = configReference();
    for (const key of ["Network", "SubnetLen", "Backend.VNI` (vxlan)", "Backend.Workers` (udp, wasm-vxlan)", "Backend.Port` (udp)", "Backend.Offloads` (udp, wasm-vxlan)"]) {
      expect(ref).toContain(key);
    }
    expect(ref).toMatch(/Offloads` \(udp, wasm-vxlan\) \| segmentation offloads \(default true\).*turn off by themselves.*wire are the same/);
    // Escaped for Markdown, where <VNI> would vanish as an HTML tag.
    expect(ref).toContain("flannel.&lt;VNI&gt;");
  });

  it("is the table in the README, as `weft config-reference` prints it", () => {
    expect(readFileSync(projectFile("README.md"), "utf8")).toContain(configReference());
  });
});
