// The plugin's pure parts: its network config and subnet.env schemas, the delegate config it
// builds (checked against what flannel's plugin builds from the same input), and prefixes of both
// families (against a plain reference, with fast-check).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cidrContains, networkOf, parseCidr } from "../../src/cni/cidr.js";
import { parseDelConf, parseGcConf, parseNetConf, parseSubnetEnvFile } from "../../src/cni/config.js";
import type { CniError } from "../../src/cni/errors.js";
import { delegateConfig } from "../../src/cni/plugin.js";

const KUBE_FLANNEL_CNI_CONF = {
  name: "cbr0",
  cniVersion: "0.3.1",
  type: "flannel",
  delegate: { hairpinMode: true, isDefaultGateway: true },
};
const ENV4 = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as CniError).cniCode;
  }
  return undefined;
};

describe("weft cni: config", () => {
  it("reads kube-flannel.yml's cni-conf.json plugin entry, with flannel's defaults", () => {
    const c = parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF));
    expect(c.subnetFile).toBe("/run/flannel/subnet.env");
    expect(c.dataDir).toBe("/var/lib/cni/flannel");
  });

  it("builds the delegate as flannel does: bridge, host-local over the subnet, route to the network, MTU, isGateway, ipMasq the opposite of FLANNEL_IPMASQ", () => {
    const d = delegateConfig(
      parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF)),
      parseSubnetEnvFile(ENV4, "subnet.env"),
    );
    expect(d).toEqual({
      name: "cbr0",
      cniVersion: "0.3.1",
      type: "bridge",
      hairpinMode: true,
      isDefaultGateway: true,
      isGateway: true,
      ipMasq: false,
      mtu: 1450,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.244.3.0/24" }]],
        routes: [{ dst: "10.244.0.0/16", gw: "10.244.3.1" }],
      },
    });
    const noMasq = delegateConfig(
      parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF)),
      parseSubnetEnvFile(ENV4.replace("IPMASQ=true", "IPMASQ=false"), "f"),
    );
    expect(noMasq.ipMasq).toBe(true);
  });

  it("keeps delegate keys and IPAM keys given in the config; runtimeConfig goes to the delegate", () => {
    const conf = {
      ...KUBE_FLANNEL_CNI_CONF,
      delegate: { type: "bridge", mtu: 1400, ipMasq: true, isGateway: false, bridge: "br9" },
      ipam: { dataDir: "/x", routes: [{ dst: "192.0.2.0/24" }] },
      runtimeConfig: { portMappings: [] },
    };
    const d = delegateConfig(parseNetConf(JSON.stringify(conf)), parseSubnetEnvFile(ENV4, "f"));
    expect(d).toMatchObject({
      mtu: 1400,
      ipMasq: true,
      isGateway: false,
      bridge: "br9",
      runtimeConfig: { portMappings: [] },
    });
    expect(d.ipam).toEqual({
      type: "host-local",
      dataDir: "/x",
      ranges: [[{ subnet: "10.244.3.0/24" }]],
      routes: [{ dst: "192.0.2.0/24" }, { dst: "10.244.0.0/16", gw: "10.244.3.1" }],
    });
  });

  it("both families: one range set and one route per family", () => {
    const env = parseSubnetEnvFile(
      `${ENV4}FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8003::1/64\n`,
      "f",
    );
    const d = delegateConfig(parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF)), env);
    expect(d.ipam).toMatchObject({
      ranges: [[{ subnet: "10.244.3.0/24" }], [{ subnet: "2001:2:0:8003::/64" }]],
      routes: [
        { dst: "10.244.0.0/16", gw: "10.244.3.1" },
        { dst: "2001:2:0:8000::/49", gw: "2001:2:0:8003::1" },
      ],
    });
    // IPv6 alone is a valid subnet.env too.
    expect(
      parseSubnetEnvFile(
        "FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8003::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
        "f",
      ).families.length,
    ).toBe(1);
  });

  it("a network listed twice in FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK is one route, as flannel (isSubnetAlreadyPresent)", () => {
    const env = parseSubnetEnvFile(
      `${ENV4.replace("=10.244.0.0/16", "=10.244.0.0/16,10.244.0.0/16,10.244.9.9/16")}FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49,2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8003::1/64\n`,
      "f",
    );
    expect(
      (delegateConfig(parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF)), env).ipam as { routes: unknown }).routes,
    ).toEqual([
      { dst: "10.244.0.0/16", gw: "10.244.3.1" },
      { dst: "2001:2:0:8000::/49", gw: "2001:2:0:8003::1" },
    ]);
  });

  it("matches keys regardless of case, as flannel's Go plugin: Delegate, SubnetFile, DataDir, IPAM, CNIVersion are honoured", () => {
    const c = parseNetConf(
      JSON.stringify({
        name: "cbr0",
        type: "flannel",
        CNIVersion: "0.3.1",
        Delegate: { hairpinMode: true },
        SubnetFile: "/run/x.env",
        DataDir: "/d",
        IPAM: { type: "host-local", dataDir: "/ipam" },
      }),
    );
    expect(c).toMatchObject({
      cniVersion: "0.3.1",
      delegate: { hairpinMode: true },
      subnetFile: "/run/x.env",
      dataDir: "/d",
      ipam: { dataDir: "/ipam" },
    });
    expect(delegateConfig(c, parseSubnetEnvFile(ENV4, "f"))).toMatchObject({ hairpinMode: true });
    expect(parseDelConf(JSON.stringify({ DataDir: "/d" }))).toMatchObject({ dataDir: "/d" });
    expect(codeOf(() => parseNetConf(JSON.stringify({ name: "cbr0", type: "flannel", CNIVersion: "9.9.9" })))).toBe(1);
    // Two spellings neither of which is exact: Go would silently take the later one; refused, naming both.
    const twice = JSON.stringify({ name: "cbr0", type: "flannel", Delegate: {}, DELEGATE: {} });
    expect(codeOf(() => parseNetConf(twice))).toBe(7);
    expect(() => parseNetConf(twice)).toThrow(/"Delegate" and "DELEGATE" are both the key delegate/);
  });

  it("the exact spelling wins over another for the keys libcni adds (name, cniVersion), and only for them", () => {
    // As containerd and CRI-O hand it over for a file with "CNIVersion" and "Name".
    const added = { CNIVersion: "0.3.1", Name: "old", cniVersion: "1.0.0", name: "cbr0", type: "flannel" };
    const conf = JSON.stringify({ ...added, Delegate: { hairpinMode: true } });
    expect(parseNetConf(conf)).toMatchObject({ cniVersion: "1.0.0", name: "cbr0", delegate: { hairpinMode: true } });
    expect(parseGcConf(conf)).toMatchObject({ cniVersion: "1.0.0" });
    expect(parseDelConf(conf)).toBeDefined();
    // Two spellings of a key the runtime does not add: which one flannel takes depends on how they
    // sort, so neither is taken silently.
    const both = JSON.stringify({ ...added, Delegate: { hairpinMode: false }, delegate: { hairpinMode: true } });
    expect(codeOf(() => parseNetConf(both))).toBe(7);
  });

  it("DEL reads only dataDir and prevResult: delegate keys ADD refuses (name, ipam) do not stop it", () => {
    const edited = JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, dataDir: "/d", delegate: { name: "x", ipam: {} } });
    expect(codeOf(() => parseNetConf(edited))).toBe(7);
    expect(parseDelConf(edited)).toMatchObject({ dataDir: "/d" });
    expect(codeOf(() => parseDelConf(JSON.stringify({ dataDir: 5 })))).toBe(7);
  });

  it("IPv6-only (flanneld's file without FLANNEL_NETWORK/FLANNEL_SUBNET): an IPv6 range and route only, the MTU and ip-masq from the file", () => {
    const env = parseSubnetEnvFile(
      "FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8003::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
      "f",
    );
    const d = delegateConfig(parseNetConf(JSON.stringify(KUBE_FLANNEL_CNI_CONF)), env);
    expect(d).toMatchObject({ type: "bridge", mtu: 1430, ipMasq: false, isGateway: true });
    expect(d.ipam).toEqual({
      type: "host-local",
      ranges: [[{ subnet: "2001:2:0:8003::/64" }]],
      routes: [{ dst: "2001:2:0:8000::/49", gw: "2001:2:0:8003::1" }],
    });
  });

  it("rejects configs with the spec's codes, naming the key", () => {
    expect(codeOf(() => parseNetConf("{"))).toBe(6);
    expect(codeOf(() => parseNetConf(JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, cniVersion: "9.9.9" })))).toBe(1);
    expect(codeOf(() => parseNetConf(JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, delegate: { name: "x" } })))).toBe(7);
    expect(codeOf(() => parseNetConf(JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, delegate: { type: 3 } })))).toBe(7);
    expect(codeOf(() => parseNetConf(JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, name: "" })))).toBe(7);
    expect(() => parseNetConf(JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, subnetFile: 5 }))).toThrow(/subnetFile/);
  });

  it("takes every cniVersion flannel's plugin takes; DEL any; none leaves the delegate its own, as flannel", () => {
    const withVersion = (v: unknown) => JSON.stringify({ ...KUBE_FLANNEL_CNI_CONF, cniVersion: v });
    for (const v of ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", ""])
      expect(parseNetConf(withVersion(v)).cniVersion).toBe(v);
    expect(codeOf(() => parseNetConf(withVersion("2.0.0")))).toBe(1);
    expect(parseDelConf(withVersion("2.0.0")).dataDir).toBe("/var/lib/cni/flannel");
    const env = parseSubnetEnvFile(ENV4, "f");
    const { cniVersion: _, ...none } = KUBE_FLANNEL_CNI_CONF;
    expect(delegateConfig(parseNetConf(JSON.stringify(none)), env)).not.toHaveProperty("cniVersion");
    expect(
      delegateConfig(parseNetConf(JSON.stringify({ ...none, delegate: { cniVersion: "0.4.0" } })), env).cniVersion,
    ).toBe("0.4.0");
  });

  it.each([
    [
      "FLANNEL_SUBNET without FLANNEL_NETWORK",
      "FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
      /FLANNEL_NETWORK: missing/,
    ],
    [
      "an IPv6 prefix as FLANNEL_SUBNET",
      ENV4.replace("10.244.3.1/24", "2001:2::1/64"),
      /FLANNEL_SUBNET: "2001:2::1\/64" is not an IPv4 prefix/,
    ],
    ["MTU out of range", ENV4.replace("1450", "70000"), /FLANNEL_MTU/],
    ["IPMASQ not a boolean", ENV4.replace("=true", "=yes"), /FLANNEL_IPMASQ/],
    [
      "IPv6 subnet outside its network",
      `${ENV4}FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:1::1/64\n`,
      /FLANNEL_IPV6_SUBNET: 2001:2:0:1::\/64 is not inside/,
    ],
  ])("a subnet.env with %s is an invalid config (7) naming the key", (_, text, msg) => {
    expect(codeOf(() => parseSubnetEnvFile(text, "f"))).toBe(7);
    expect(() => parseSubnetEnvFile(text, "f")).toThrow(msg);
  });

  it("prefixes of both families: network and containment agree with a bit-by-bit reference", () => {
    const bits = (b: Uint8Array) => [...b].map((x) => x.toString(2).padStart(8, "0")).join("");
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.nat(128), fc.oneof(fc.ipV4(), fc.ipV6()), (a, l, b) => {
        const width = a.includes(":") ? 128 : 32;
        const len = l % (width + 1);
        const outer = parseCidr(`${a}/${len}`)!;
        const inner = parseCidr(`${b}/${width}`);
        expect(outer).toBeDefined();
        expect(bits(parseCidr(networkOf(outer))!.bytes)).toBe(bits(outer.bytes).slice(0, len).padEnd(width, "0"));
        if (inner)
          expect(cidrContains(outer, inner)).toBe(
            inner.family === outer.family && bits(inner.bytes).slice(0, len) === bits(outer.bytes).slice(0, len),
          );
      }),
    );
  });
});
