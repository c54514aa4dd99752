import { readFileSync } from "node:fs";
import { describe, expect, it, vi } from "vitest";
import { backendOptions } from "../../src/backends/index.js";
import { backendInForce, configReference, ignoredKeysMessage, parseNetConf } from "../../src/config/net-conf.js";
import { projectFile } from "../../src/paths.js";

// The host's core count, which sets the default Workers: a test sets it to reach the check that
// names the default, which the CI machine's few cores never trigger.
const host = vi.hoisted(() => ({ cores: undefined as number | undefined }));
vi.mock("node:os", async (actual) => {
  const os = await actual<typeof import("node:os")>();
  return { ...os, availableParallelism: () => host.cores ?? os.availableParallelism() };
});

const parse = (o: unknown) => parseNetConf(JSON.stringify(o));
/** The Backend keys a config's Type ignores, each with the Types that read it. */
const ignored = (o: unknown) => parse(o).ignoredBackendKeys.map(({ key, types }) => [key, types.join(",")]);

describe("net-conf.json", () => {
  it("accepts flannel's documented example and defaults the backend to vxlan", () => {
    const c = parse({ Network: "10.244.0.0/16" });
    expect(c.Backend).toEqual({
      Type: "vxlan",
      VNI: 1,
      Port: 8472,
      DirectRouting: false,
      GBP: false,
      Learning: false,
    });
    expect(c.space?.subnetLen).toBe(24);
    expect(c.space?.subnetOf(0)).toBe("10.244.1.0/24"); // flannel skips the first subnet
    expect(c.space?.slotCount).toBe(255);
  });

  it("accepts the net-conf.json of the current upstream kube-flannel.yml", () => {
    const c = parseNetConf('{"Network": "10.244.0.0/16", "EnableNFTables": false, "Backend": {"Type": "vxlan"}}');
    expect(c.space?.subnetOf(0)).toBe("10.244.1.0/24");
    expect(c.Backend.Type).toBe("vxlan");
  });

  it("accepts EnableNFTables (default false), which changes nothing in weft", () => {
    expect(parse({ Network: "10.244.0.0/16" }).EnableNFTables).toBe(false);
    for (const EnableNFTables of [true, false])
      expect(parse({ Network: "10.244.0.0/16", EnableNFTables })).toMatchObject({ EnableNFTables });
    expect(() => parse({ Network: "10.244.0.0/16", EnableNFTables: "yes" })).toThrow(/EnableNFTables = "yes"/);
    expect(configReference()).toMatch(/\| `EnableNFTables` \| .*accepted and ignored: weft writes its masquerade/);
  });

  it("reads flannel's zero values (0, 0.0.0.0, ::) and null as unset, as its CheckNetworkConfig does", () => {
    const plain = parse({ Network: "10.244.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" });
    const zeros = parse({
      Network: "10.244.0.0/16",
      SubnetLen: 0,
      SubnetMin: "0.0.0.0",
      SubnetMax: null,
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      IPv6SubnetLen: null,
      IPv6SubnetMin: "::",
      IPv6SubnetMax: "::",
    });
    expect(zeros.space!.describe()).toBe(plain.space!.describe());
    expect(zeros.space6!.describe()).toBe(plain.space6!.describe());
    expect(configReference()).toMatch(/\| `SubnetLen` \| .*\(0 or null: the default, as in flannel\)/);
  });

  it("reads an IPv6SubnetMin/Max that parses to zero as unset, in any spelling, as flannel compares the address", () => {
    const base = { Network: "10.244.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" };
    const plain = parse(base);
    for (const zero of ["0::0", "0:0:0:0:0:0:0:0", "::0"]) {
      const c = parse({ ...base, IPv6SubnetMin: zero, IPv6SubnetMax: zero });
      expect(c.space6!.describe()).toBe(plain.space6!.describe());
    }
    expect(parse({ ...base, SubnetMin: "000.0.0.0" }).space!.describe()).toBe(plain.space!.describe());
    expect(() => parse({ ...base, IPv6SubnetMin: "::1" })).toThrow(/IPv6SubnetMin/);
  });

  it("takes null in a boolean, number or string key as its default or unset, as Go's encoding/json leaves it", () => {
    const net = { Network: "10.244.0.0/16" };
    const plain = parse(net);
    const nulls = parse({ ...net, EnableIPv4: null, EnableIPv6: null, EnableNFTables: null });
    expect(nulls).toMatchObject({ EnableIPv4: true, EnableIPv6: false, EnableNFTables: false });
    const vx = { VNI: null, Port: null, MTU: null, DirectRouting: null, GBP: null, Learning: null };
    expect(parse({ ...net, Backend: { Type: "vxlan", ...vx } }).Backend).toEqual(plain.Backend);
    const tuning = {
      Workers: null,
      QueuesPerWorker: null,
      Offloads: null,
      BusyPollMicros: null,
      QueueDelayMicros: null,
      FlowQueue: null,
    };
    expect(parse({ ...net, Backend: { Type: "udp", Port: null, ...tuning } }).Backend).toEqual(
      parse({ ...net, Backend: { Type: "udp" } }).Backend,
    );
    expect(
      parse({
        ...net,
        Backend: { Type: "wasm-vxlan", VNI: null, Port: null, MTU: null, IPv6OverIPv4Port: null, ...tuning },
      }).Backend,
    ).toEqual(parse({ ...net, Backend: { Type: "wasm-vxlan" } }).Backend);
    // flannel refuses null in SubnetMin/SubnetMax (its address type); weft takes it, and says so.
    expect(configReference()).toMatch(
      /\| `SubnetMin` \| .*\(0\.0\.0\.0: the default, as in flannel; null too, which flannel refuses\) \|/,
    );
    expect(() => parse({ ...net, Backend: { Type: "vxlan", VNI: "1" } })).toThrow(/Backend\.VNI = "1"/);
    // String keys: Go leaves a string field empty on null.
    const windows = parse({ ...net, Backend: { Type: "vxlan", MacPrefix: null, Name: null } });
    expect(backendInForce(windows.Backend)).toEqual(backendInForce(plain.Backend));
    expect(parse({ ...net, Backend: { Type: "host-gw", Name: null, DNSServerList: null } }).Backend).toEqual({
      Type: "host-gw",
    });
    // flannel's address type refuses null in Network and IPv6Network; weft takes it as unset, and says so.
    expect(parse({ ...net, IPv6Network: null }).space!.describe()).toBe(plain.space!.describe());
    const six = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" };
    expect(parse({ ...six, Network: null }).space6!.describe()).toBe(parse(six).space6!.describe());
    expect(() => parse({ Network: null })).toThrow(
      /^net-conf\.json: Network = null: Network is required while EnableIPv4 is true/,
    );
    expect(() => parse({ ...net, EnableIPv6: true, IPv6Network: null })).toThrow(
      /IPv6Network = null: EnableIPv6 needs IPv6Network/,
    );
    expect(configReference()).toMatch(/\| `IPv6Network` \| .*\(null: unset, which flannel refuses\) \|/);
    // A null Type is none (flannel: the empty Type, no backend).
    expect(() => parse({ ...net, Backend: { Type: null, VNI: 2 } })).toThrow(
      /^net-conf\.json: Backend has no Type; give one of vxlan, host-gw, udp, wasm-vxlan/,
    );
    expect(() => parse({ ...net, Backend: { Type: "vxlan", Name: 1 } })).toThrow(/Backend\.Name = 1/);
  });

  it("says what to do: a negative SubnetLen, a Backend without Type, MTU or udp Port 0", () => {
    expect(() => parse({ Network: "10.244.0.0/16", SubnetLen: -1 })).toThrow(
      /^net-conf\.json: network config: SubnetLen -1 is not a prefix length: give one from 18 to 30, or leave it out for the default$/,
    );
    const six = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" };
    expect(() => parse({ ...six, IPv6SubnetLen: -1 })).toThrow(
      /IPv6SubnetLen -1 is not a prefix length: give one from 51 to 126, or leave it out for the default$/,
    );
    for (const Backend of [{}, { VNI: 2 }])
      expect(() => parse({ Network: "10.244.0.0/16", Backend })).toThrow(
        /^net-conf\.json: Backend has no Type; give one of vxlan, host-gw, udp, wasm-vxlan \(a config without Backend gets vxlan\)$/,
      );
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", MTU: 0 } })).toThrow(
      /^net-conf\.json: Backend\.MTU = 0: .*leave MTU out for the default, the interface's$/,
    );
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "udp", Port: 0 } })).toThrow(
      /^net-conf\.json: Backend\.Port = 0: .*leave Port out for the default 8285$/,
    );
  });

  it("ignores another backend's keys under flannel's Types, as flanneld's backends do, and says whose they are", () => {
    const conf = {
      Network: "10.244.0.0/16",
      Backend: { Type: "host-gw", VNI: 1, MTU: 1400, Port: 8472, PSK: "k", DirectRouting: true },
    };
    const c = parse(conf);
    expect(c.Backend).toEqual({ Type: "host-gw" }); // never in force, so a reload that adds them swaps nothing
    expect(ignored(conf)).toEqual([
      ["VNI", "vxlan,wasm-vxlan"],
      ["MTU", "vxlan,wasm-vxlan,flannel's wireguard"],
      ["Port", "vxlan,udp,wasm-vxlan"],
      ["PSK", "flannel's wireguard,flannel's ipsec"],
      ["DirectRouting", "vxlan,flannel's ipip"],
    ]);
    // Said of flanneld only where it is true (host-gw is flannel's), and naming what the Type reads on Linux.
    expect(ignoredKeysMessage(c, "net-conf.json")).toBe(
      "net-conf.json: Backend.Type host-gw does not read VNI (a key of vxlan, wasm-vxlan), MTU (a key of vxlan, wasm-vxlan, flannel's wireguard), Port (a key of vxlan, udp, wasm-vxlan), PSK (a key of flannel's wireguard, flannel's ipsec), DirectRouting (a key of vxlan, flannel's ipip); " +
        "ignored, as flanneld's host-gw backend ignores them: remove them (host-gw reads no key but Type)",
    );
    expect(
      ignoredKeysMessage(parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", Workers: 2 } }), "f"),
    ).toMatch(
      /ignored, as flanneld's vxlan backend ignores them: remove them \(vxlan reads VNI, Port, MTU, DirectRouting, GBP, Learning\)$/,
    );
    expect(ignoredKeysMessage(parse({ Network: "10.244.0.0/16" }), "net-conf.json")).toBeUndefined();
    // Every key of flannel's backends weft lacks (pkg/backend, and the cloud ones of older releases).
    const flannels = {
      ListenPort: 51820,
      ListenPortV6: 51821,
      PersistentKeepaliveInterval: 25,
      Mode: "auto",
      UDPEncap: true,
      ESPProposal: "x",
      PreStartupCommand: "x",
      PostStartupCommand: "x",
      SubnetAddCommand: "x",
      SubnetRemoveCommand: "x",
      AccessKeyID: "x",
      AccessKeySecret: "x",
      RouteTableID: "x",
    };
    expect(ignored({ Network: "10.244.0.0/16", Backend: { Type: "udp", ...flannels } }).map(([k]) => k)).toEqual(
      Object.keys(flannels),
    );
    // Keys match regardless of case, so does the Type they belong to; values are not read.
    expect(ignored({ Network: "10.244.0.0/16", Backend: { Type: "host-gw", vni: "x", psk: 1 } })).toEqual([
      ["vni", "vxlan,wasm-vxlan"],
      ["psk", "flannel's wireguard,flannel's ipsec"],
    ]);
    // A key the Type reads is still checked.
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "udp", VNI: 1, Port: "8285" } })).toThrow(
      /^net-conf\.json: Backend\.Port = "8285": /,
    );
  });

  it("refuses a Backend key no backend reads, as an unknown top-level key: a typo must not leave a default in force", () => {
    for (const Type of ["vxlan", "host-gw", "udp", "wasm-vxlan"])
      expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type, Prot: 9000 } }), Type).toThrow(
        expect.objectContaining({ code: "CONFIG_NET_CONF_INVALID" }),
      );
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", VNI: 2, DirectRoutng: true } })).toThrow(
      /^net-conf\.json: Backend: unknown key\(s\) DirectRoutng, which no backend reads \(a misspelt key would leave its default in force\): correct or remove them \(vxlan reads VNI, Port, MTU, DirectRouting, GBP, Learning\)$/,
    );
    // Spelt as given; at most five named, however many there are; odd keys quoted.
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { type: "vxlan", vnid: 2 } })).toThrow(
      /Backend: unknown key\(s\) vnid, /,
    );
    const many = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, i]));
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "udp", VNI: 1, ...many, "a b": 1 } })).toThrow(
      /^net-conf\.json: Backend: unknown key\(s\) k0, k1, k2, k3, k4 and 5 more, /,
    );
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "host-gw", "a b": 1 } })).toThrow(
      /^net-conf\.json: Backend: unknown key\(s\) "a b", .*\(host-gw reads no key but Type\)$/,
    );
  });

  it("refuses another backend's keys under wasm-vxlan, which flanneld does not have (not a Windows node's, nor a null), and takes vxlan's MTU there", () => {
    // A ConfigMap switched from vxlan: its MTU keeps the pods' MTU, as under vxlan.
    const mtu = parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", MTU: 1400 } });
    expect(mtu.Backend).toMatchObject({ MTU: 1400 });
    expect(backendOptions(mtu.Backend)).toMatchObject({ mtu: 1400 });
    expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", MTU: 500 } })).toThrow(
      /Backend\.MTU = 500: too small/,
    );
    expect(configReference()).toMatch(/\| `Backend\.MTU` \(vxlan, wasm-vxlan\) \| the underlay MTU to assume/);
    // vxlan's other keys change traffic too (DirectRouting's plain routes, GBP, Learning): refused, not lapsed unseen.
    expect(() =>
      parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", DirectRouting: true, GBP: true, Prot: 1 } }),
    ).toThrow(
      /^net-conf\.json: Backend\.Type wasm-vxlan does not read DirectRouting \(a key of vxlan, flannel's ipip\), GBP \(a key of vxlan\), Prot \(no backend's key\); refused: wasm-vxlan is weft's own Type, which flanneld does not have, so no flanneld ignores them here, and a setting made for another Type would lapse unseen: remove them \(wasm-vxlan reads VNI, Port, MTU, IPv6OverIPv4Port, Workers, /,
    );
    for (const Backend of [{ learning: true }, { PSK: "k" }, { DirectRouting: false }])
      expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", ...Backend } })).toThrow(
        /^net-conf\.json: Backend\.Type wasm-vxlan does not read \w+ \(a key of [^)]+\); refused: /,
      );
    // Except a Windows node's keys (a ConfigMap shared with Windows nodes), ignored and logged as
    // flanneld on Linux ignores them, and a null, which is unset; a misspelt key is refused all the same.
    const shared = {
      Network: "198.19.0.0/16",
      Backend: { Type: "wasm-vxlan", MacPrefix: "0E-2A", name: "vxlan0", DNSServerList: null, DirectRouting: null },
    };
    expect(parse(shared).Backend).toEqual(parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan" } }).Backend);
    expect(ignored(shared)).toEqual([
      ["MacPrefix", "vxlan"],
      ["name", "vxlan,host-gw"],
    ]);
    expect(ignoredKeysMessage(parse(shared), "f")).toMatch(
      /^f: Backend\.Type wasm-vxlan does not read MacPrefix \(a key of vxlan\), name \(a key of vxlan, host-gw\); ignored, as flanneld on Linux ignores them: remove them \(wasm-vxlan reads VNI, /,
    );
    expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Prot: null } })).toThrow(
      /^net-conf\.json: Backend: unknown key\(s\) Prot, which no backend reads/,
    );
    // Under flannel's udp, as flanneld's udp backend: ignored.
    expect(ignored({ Network: "198.19.0.0/16", Backend: { Type: "udp", MTU: 1400 } })).toEqual([
      ["MTU", "vxlan,wasm-vxlan,flannel's wireguard"],
    ]);
  });

  it("accepts the keys of flannel's Windows backends (its Helm chart writes MacPrefix) and ignores them", () => {
    const vx = parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", MacPrefix: "0E-2A", Name: "vxlan0" } });
    expect(vx.Backend).toMatchObject({ Type: "vxlan", VNI: 1 });
    // Not in force: a reload that adds them swaps nothing, and weft status does not list them.
    expect(backendInForce(vx.Backend)).toEqual(backendInForce(parse({ Network: "10.244.0.0/16" }).Backend));
    const gw = parse({
      Network: "10.244.0.0/16",
      Backend: { Type: "host-gw", Name: "cbr0", DNSServerList: "10.96.0.10" },
    });
    expect(gw.Backend.Type).toBe("host-gw");
    expect(ignored({ Network: "10.244.0.0/16", Backend: { Type: "udp", MacPrefix: "0E-2A" } })).toEqual([
      ["MacPrefix", "vxlan"],
    ]);
  });

  it("clears host bits of Network and IPv6Network, as flannel's net.ParseCIDR does", () => {
    const c = parse({ Network: "10.244.1.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8123::1/49" });
    expect([c.Network, c.IPv6Network]).toEqual(["10.244.0.0/16", "2001:2:0:8000::/49"]);
    expect(c.space?.subnetOf(0)).toBe("10.244.1.0/24");
    expect(c.space6?.subnetOf(0)).toBe("2001:2:0:8001::/64");
    // The same space as written without host bits: agents so written agree on their leases.
    expect(c.space?.fingerprint).toBe(parse({ Network: "10.244.0.0/16" }).space?.fingerprint);
  });

  it("follows flannel's SubnetLen default for small networks", () => {
    expect(parse({ Network: "198.19.0.0/24" }).space?.subnetLen).toBe(26);
  });

  it("fills per-backend defaults", () => {
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "udp" } }).Backend).toEqual({
      Type: "udp",
      Port: 8285,
      Offloads: true,
    });
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Workers: 2 } }).Backend).toEqual({
      Type: "wasm-vxlan",
      VNI: 1,
      Port: 8472,
      IPv6OverIPv4Port: 8473,
      Workers: 2,
      Offloads: true,
    });
  });

  it("takes flannel's vxlan key Learning (default false), for vxlan only", () => {
    const vxlan = (b: object) => parse({ Network: "198.19.0.0/16", Backend: { Type: "vxlan", ...b } }).Backend;
    expect(vxlan({})).toMatchObject({ Learning: false });
    expect(vxlan({ Learning: true })).toMatchObject({ Learning: true });
    expect(() => vxlan({ Learning: 1 })).toThrow(/Backend\.Learning = 1/);
    expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Learning: true } })).toThrow(
      /does not read Learning \(a key of vxlan\); refused: /,
    );
    expect(configReference()).toMatch(/\| `Backend\.Learning` \(vxlan\) \| the kernel device's learning flag/);
  });

  it("refuses more TUN queues than the driver takes before the node joins, not when the dataplane starts", () => {
    const backend = (b: object) => parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", ...b } }).Backend;
    expect(() => backend({ Workers: 64, QueuesPerWorker: 14 })).toThrow(
      /Backend\.QueuesPerWorker = 14: 64 workers × 14 = 896 TUN queues, above the driver's 256/,
    );
    expect(() =>
      parse({ Network: "198.19.0.0/16", Backend: { Type: "udp", Workers: 19, QueuesPerWorker: 14 } }),
    ).toThrow(/266 TUN queues/);
    expect(backend({ Workers: 18, QueuesPerWorker: 14 })).toMatchObject({ Workers: 18, QueuesPerWorker: 14 });
    // Without Workers the host's default count is the one that will run: on 32 cores 32 workers,
    // which take 8 queues each at most.
    host.cores = 32;
    try {
      expect(() => backend({ QueuesPerWorker: 9 })).toThrow(
        /Backend\.QueuesPerWorker = 9: 32 workers \(this host's default\) × 9 = 288 TUN queues/,
      );
      expect(backend({ QueuesPerWorker: 8 })).toMatchObject({ QueuesPerWorker: 8 });
    } finally {
      host.cores = undefined;
    }
  });

  it("matches keys regardless of case and lowercases Backend.Type, as flannel (Go's encoding/json)", () => {
    const c = parse({
      network: "10.244.0.0/16",
      ENABLENFTABLES: true,
      backend: { type: "VXLAN", vni: 4, directRouting: true, learning: true },
    });
    expect(c.space?.subnetOf(0)).toBe("10.244.1.0/24");
    expect(c.EnableNFTables).toBe(true);
    expect(c.Backend).toEqual({ Type: "vxlan", VNI: 4, Port: 8472, DirectRouting: true, GBP: false, Learning: true });
    expect(parse({ Network: "10.244.0.0/16", Backend: { Type: "Host-GW" } }).Backend).toEqual({ Type: "host-gw" });
    expect(parse({ Network: "10.244.0.0/16", Backend: { TYPE: "udp", workers: 2 } }).Backend).toMatchObject({
      Type: "udp",
      Workers: 2,
    });
    // Errors name the key as weft spells it.
    expect(() => parse({ network: "10.244.0.0/33" })).toThrow(/^net-conf\.json: Network = "10\.244\.0\.0\/33": /);
  });

  it("takes a VXLAN Port of 0 as flannel does: the kernel's default, 8472 (udp has no such default)", () => {
    for (const Type of ["vxlan", "wasm-vxlan"])
      expect(parse({ Network: "10.244.0.0/16", Backend: { Type, Port: 0 } }).Backend).toMatchObject({ Port: 8472 });
    expect(parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", Port: 4789 } }).Backend).toMatchObject({
      Port: 4789,
    });
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "vxlan", Port: -1 } })).toThrow(/Backend\.Port/);
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "udp", Port: 0 } })).toThrow(/Backend\.Port/);
  });

  it.each([
    [{ Network: "10.244.0.0/16", network: "10.245.0.0/16" }, /^net-conf\.json: "Network" and "network" are both/],
    [
      { Network: "10.244.0.0/16", Backend: { type: "vxlan", Type: "udp" } },
      /^net-conf\.json: Backend: "type" and "Type" are both the key Type/,
    ],
    [
      { Network: "10.244.0.0/16", Backend: { Type: "vxlan", vni: 1, VNI: 2 } },
      /^net-conf\.json: Backend: "vni" and "VNI" are both the key VNI \(keys match regardless of case, as in flannel\); keep one of them$/,
    ],
  ])("refuses two spellings of one key in %j, naming both", (conf, message) => {
    expect(() => parse(conf)).toThrow(
      expect.objectContaining({ code: "CONFIG_NET_CONF_INVALID", message: expect.stringMatching(message) }),
    );
  });

  it("still refuses unknown top-level keys (flannel ignores them; weft catches the typo), spelt as given", () => {
    expect(() => parse({ Network: "10.244.0.0/16", subnetlem: 24 })).toThrow(
      /unknown key\(s\) subnetlem; allowed here/,
    );
    // Another Type's key in another case is that Type's key, said so.
    expect(ignored({ Network: "10.244.0.0/16", Backend: { type: "vxlan", workers: 2 } })).toEqual([
      ["workers", "udp,wasm-vxlan"],
    ]);
    expect(() => parse({ Network: "10.244.0.0/16", Backend: { Type: "IPSEC" } })).toThrow(
      /Backend\.Type is "ipsec"; valid types are/,
    );
  });

  it("refuses flannel's multi-cluster-cidr lists Networks and IPv6Networks with what to give instead", () => {
    expect(() => parse({ Networks: ["10.244.0.0/16", "10.245.0.0/16"] })).toThrow(
      /^net-conf\.json: Networks: flannel's lists of pod networks for --use-multi-cluster-cidr, which weft does not have \(it reads no ClusterCIDR objects\): give the pod network as one range, Network \(IPv6Network with EnableIPv6: true\), and remove it$/,
    );
    expect(() =>
      parse({ Network: "10.244.0.0/16", networks: ["10.244.0.0/16"], IPv6Networks: ["2001:2:0:8000::/49"] }),
    ).toThrow(
      /^net-conf\.json: networks and IPv6Networks: .* give the pod network as one range, Network and IPv6Network \(IPv6Network with EnableIPv6: true\), and remove them$/,
    );
    expect(() => parse({ Networks: ["10.244.0.0/16"], SubnetLem: 24 })).toThrow(
      /, and remove it; also unknown: SubnetLem$/,
    );
  });

  it("takes Backend.Offloads for the userspace backends only", () => {
    for (const Type of ["udp", "wasm-vxlan"]) {
      expect(parse({ Network: "198.19.0.0/16", Backend: { Type } }).Backend).toMatchObject({ Offloads: true });
      expect(parse({ Network: "198.19.0.0/16", Backend: { Type, Offloads: false } }).Backend).toMatchObject({
        Offloads: false,
      });
      expect(() => parse({ Network: "198.19.0.0/16", Backend: { Type, Offloads: "no" } })).toThrow(
        /Backend\.Offloads = "no"/,
      );
    }
    for (const Type of ["vxlan", "host-gw"])
      expect(ignored({ Network: "198.19.0.0/16", Backend: { Type, Offloads: false } })).toEqual([
        ["Offloads", "udp,wasm-vxlan"],
      ]);
  });

  it.each([
    [
      { Network: "198.19.0.0/16", Backend: { Type: "ipsec" } },
      /Backend\.Type is "ipsec"; valid types are vxlan, host-gw, udp, wasm-vxlan/,
    ],
    [{ Network: "198.19.0.0/16", Backend: { Type: "vxlan", VNI: -1 } }, /Backend\.VNI = -1/],
    [{ Network: "198.19.0.0/16", Backend: { Type: "udp", VNI: 4, Port: 0 } }, /Backend\.Port = 0/],
    [{ Network: "198.19.0.0/16", Bogus: 1 }, /unknown key\(s\) Bogus; allowed here: Network, SubnetLen/],
    [{ Network: "198.19.0.0/33" }, /Network = "198\.19\.0\.0\/33": .*not an IPv4 prefix/],
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
    for (const key of [
      "Network",
      "SubnetLen",
      "Backend.VNI` (vxlan)",
      "Backend.Workers` (udp, wasm-vxlan)",
      "Backend.Port` (udp)",
      "Backend.Offloads` (udp, wasm-vxlan)",
    ]) {
      expect(ref).toContain(key);
    }
    expect(ref).toMatch(
      /Offloads` \(udp, wasm-vxlan\) \| segmentation offloads \(default true\).*turn off by themselves.*wire are the same/,
    );
    // Escaped for Markdown, where <VNI> would vanish as an HTML tag.
    expect(ref).toContain("flannel.&lt;VNI&gt;");
  });

  it("is the table in the README, as `weft config-reference` prints it", () => {
    expect(readFileSync(projectFile("README.md"), "utf8")).toContain(configReference());
  });
});

describe("net-conf.json: IPv6 and dual-stack (flannel's keys, defaults and limits)", () => {
  it("is IPv4-only unless EnableIPv6", () => {
    const c = parse({ Network: "198.19.0.0/16", IPv6Network: "2001:2:0:8000::/49" });
    expect(c.EnableIPv4).toBe(true);
    expect(c.EnableIPv6).toBe(false);
    expect(c.space6).toBeUndefined(); // flannel ignores the keys of a disabled family
  });

  it("dual-stack: a /64 per node by default, skipping the first, up to the last", () => {
    const c = parse({ Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" });
    expect(c.space!.subnetOf(0)).toBe("198.19.1.0/24");
    const s6 = c.space6!;
    expect(s6.subnetLen).toBe(64);
    expect(s6.subnetOf(0)).toBe("2001:2:0:8001::/64");
    expect(s6.slotCount).toBe(2 ** 15 - 1);
    expect(s6.subnetOf(s6.slotCount - 1)).toBe("2001:2:0:ffff::/64");
    expect(s6.slotOf("2001:2:0:8002::/64")).toBe(1);
    expect(s6.fingerprint).not.toBe(c.space!.fingerprint);
  });

  it("wasm-vxlan carries IPv6: dual-stack and IPv6-only", () => {
    const dual = parse({
      Network: "198.19.0.0/16",
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      Backend: { Type: "wasm-vxlan" },
    });
    expect(dual.space!.subnetOf(0)).toBe("198.19.1.0/24");
    expect(dual.space6!.subnetOf(0)).toBe("2001:2:0:8001::/64");
    const only = parse({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      Backend: { Type: "wasm-vxlan", Offloads: false },
    });
    expect(only.space).toBeUndefined();
    expect(only.Backend).toMatchObject({ Type: "wasm-vxlan", Offloads: false });
  });

  it("IPv6-only: EnableIPv4 false needs no Network", () => {
    const c = parse({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      Backend: { Type: "host-gw" },
    });
    expect(c.space).toBeUndefined();
    expect(c.space6!.subnetOf(0)).toBe("2001:2:0:8001::/64");
  });

  it("follows flannel's IPv6SubnetLen default for small networks (prefix + 2) and takes Min/Max", () => {
    expect(parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/120" }).space6!.subnetLen).toBe(
      122,
    );
    expect(parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/62" }).space6!.subnetLen).toBe(
      64,
    );
    expect(parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/63" }).space6!.subnetLen).toBe(
      65,
    );
    const s = parse({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      IPv6SubnetLen: 80,
      IPv6SubnetMin: "2001:2:0:8000:1::",
      IPv6SubnetMax: "2001:2:0:8000:10::",
    }).space6!;
    expect([s.subnetOf(0), s.slotCount]).toEqual(["2001:2:0:8000:1::/80", 16]);
  });

  it("holds 2^32 subnets of a /32 (the ring holds ranges, not slots)", () => {
    expect(parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2::/32" }).space6!.slotCount).toBe(
      2 ** 32 - 1,
    );
  });

  it.each([
    [{ EnableIPv4: false }, "EnableIPv4", /at least one address family must be enabled/],
    [{ EnableIPv4: false, EnableIPv6: false, Network: "198.19.0.0/16" }, "EnableIPv4", /at least one address family/],
    [{ Network: "198.19.0.0/16", EnableIPv6: true }, "IPv6Network", /EnableIPv6 needs IPv6Network/],
    [{ EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" }, "Network", /required while EnableIPv4 is true/],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", Backend: { Type: "udp" } },
      "Backend",
      /udp cannot carry IPv6 \(flannel's udp wire format carries IPv4 packets only\); with EnableIPv6 use one of vxlan, host-gw, wasm-vxlan/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "198.19.0.0/16" },
      "IPv6Network",
      /not an IPv6 address/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/129" },
      "IPv6Network",
      /not an IPv6 prefix/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", IPv6SubnetLen: 127 },
      "",
      /IPv6SubnetLen 127 must be a whole number no larger than 126/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", IPv6SubnetLen: 50 },
      "",
      /IPv6SubnetLen \/50 is too large .* at least four subnets \(use \/51/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/125" },
      "",
      /IPv6Network 2001:2:0:8000::\/125 is too small: use a \/124/,
    ],
    [
      { Network: "198.19.0.0/16", EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", IPv6SubnetMin: "2001:2::" },
      "",
      /IPv6SubnetMin 2001:2:: is not inside IPv6Network/,
    ],
    [
      {
        Network: "198.19.0.0/16",
        EnableIPv6: true,
        IPv6Network: "2001:2:0:8000::/49",
        IPv6SubnetMax: "2001:2:0:8000::8",
      },
      "",
      /IPv6SubnetMax 2001:2:0:8000::8 is not on a \/64 boundary/,
    ],
    [
      {
        Network: "198.19.0.0/16",
        EnableIPv6: true,
        IPv6Network: "2001:2:0:8000::/49",
        IPv6SubnetMin: "2001:2:0:9000::",
        IPv6SubnetMax: "2001:2:0:8100::",
      },
      "",
      /IPv6SubnetMin 2001:2:0:9000:: is above IPv6SubnetMax/,
    ],
    [{ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2000::/8" }, "", /2\^48/],
  ])("rejects %j with one clear error naming the key", (conf, key, message) => {
    try {
      parse(conf);
      expect.unreachable("parsed");
    } catch (e) {
      expect((e as { code: string }).code).toBe("CONFIG_NET_CONF_INVALID");
      expect((e as Error).message).toMatch(message);
      if (key) expect((e as Error).message).toMatch(new RegExp(`^net-conf.json: ${key} = `));
    }
  });

  it("documents the IPv6 keys", () => {
    const ref = configReference();
    for (const key of ["EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"])
      expect(ref).toContain(`| \`${key}\` |`);
    expect(ref).toMatch(
      /\| `Backend\.IPv6OverIPv4Port` \(wasm-vxlan\) \| UDP port of the IPv6 dataplane .*default Port \+ 1/,
    );
  });

  it("wasm-vxlan's IPv6OverIPv4Port: Port + 1 by default (following Port), or its own; never Port itself", () => {
    const only = (backend: object) =>
      parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", Backend: backend });
    expect(only({ Type: "wasm-vxlan" }).Backend).toMatchObject({ Port: 8472, IPv6OverIPv4Port: 8473 });
    expect(only({ Type: "wasm-vxlan", Port: 9000 }).Backend).toMatchObject({ Port: 9000, IPv6OverIPv4Port: 9001 });
    expect(only({ Type: "wasm-vxlan", IPv6OverIPv4Port: 8400 }).Backend).toMatchObject({ IPv6OverIPv4Port: 8400 });
    // vxlan has none: the IPv6 of a kernel vxlan device rides an IPv6 underlay.
    expect(only({ Type: "vxlan", IPv6OverIPv4Port: 8473 }).ignoredBackendKeys).toEqual([
      { key: "IPv6OverIPv4Port", types: ["wasm-vxlan"] },
    ]);
    // Port 65535 leaves no Port + 1: refused where IPv6 is on, unless the key is given.
    expect(only({ Type: "wasm-vxlan", Port: 65535, IPv6OverIPv4Port: 8400 }).Backend).toMatchObject({
      IPv6OverIPv4Port: 8400,
    });
    expect(parse({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Port: 65535 } }).Backend).toMatchObject({
      Port: 65535,
    });
    for (const [backend, message] of [
      [
        { Type: "wasm-vxlan", IPv6OverIPv4Port: 8472 },
        /^net-conf\.json: Backend\.IPv6OverIPv4Port = 8472: the same as Backend\.Port 8472: .*set Backend\.IPv6OverIPv4Port to another free port$/,
      ],
      [
        { Type: "wasm-vxlan", Port: 65535 },
        /^net-conf\.json: Backend\.Port = 65535: leaves no Port \+ 1 for IPv6 over the IPv4 underlay .*set Backend\.IPv6OverIPv4Port/,
      ],
      [{ Type: "wasm-vxlan", IPv6OverIPv4Port: 0 }, /^net-conf\.json: Backend\.IPv6OverIPv4Port = 0: /],
    ] as const)
      expect(() => only(backend)).toThrow(
        expect.objectContaining({ code: "CONFIG_NET_CONF_INVALID", message: expect.stringMatching(message) }),
      );
  });
});
