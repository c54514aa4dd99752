// The kernel `vxlan` backend in a two-host lab: the device and per-peer entries exactly as
// flannel writes them (shared/seeds), pod-to-pod pings, batching, reconcile, removal, stop, and
// restarts that keep the VTEP MAC and (with keep) the device.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createBackend } from "../../src/backends/index.js";
import type { LabCluster, LabHost } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import {
  fdb,
  linkNames,
  neighbours,
  peerFrom,
  peerOf,
  podRoutes,
  removeLab,
  subnetOf,
  twoHostLab,
  type LabNode,
} from "./support.js";

describe.skipIf(!canUseNetns())("vxlan backend (kernel)", () => {
  let lab: LabCluster;
  let n1: LabNode;
  let n2: LabNode;
  let host1: LabHost;
  let host2: LabHost;
  const peer2 = () => peerFrom(n2);

  beforeAll(async () => {
    ({ lab, n1, n2 } = await twoHostLab("bvx", "vxlan", 1450));
    [host1, host2] = lab.hosts;
  });

  afterAll(() => removeLab(lab, [n1, n2]));

  it("creates flannel.1 as flannel does: nolearning, dstport 8472, MTU 1450, the subnet's network address as /32", async () => {
    expect(n1.backend.mtu).toBe(1450);
    expect(n1.announced).toMatchObject({ type: "vxlan", vni: 1, port: 8472 });
    expect(n1.announced.vtepMac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const [link] = await host1.ns.kernel.ipJson<
      Array<{
        address: string;
        mtu: number;
        flags: string[];
        linkinfo: { info_kind: string; info_data: Record<string, unknown> };
      }>
    >(["-details", "link", "show", "flannel.1"]);
    expect(link.address).toBe(n1.announced.vtepMac);
    expect(link.mtu).toBe(1450);
    expect(link.flags).toContain("UP");
    expect(link.linkinfo.info_kind).toBe("vxlan");
    expect(link.linkinfo.info_data).toMatchObject({
      id: 1,
      local: "198.18.0.11",
      link: "eth0",
      port: 8472,
      learning: false,
    });
    const [addrs] = await host1.ns.kernel.ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>>([
      "-4",
      "addr",
      "show",
      "dev",
      "flannel.1",
    ]);
    expect(addrs.addr_info.map((a) => `${a.local}/${a.prefixlen}`)).toEqual(["198.19.1.0/32"]);
  });

  it("programs a peer exactly as flannel: permanent neighbour, permanent FDB entry, onlink route", async () => {
    expect(await neighbours(host1, "flannel.1")).toEqual([
      { dst: "198.19.2.0", lladdr: n2.announced.vtepMac, state: ["PERMANENT"] },
    ]);
    expect(await fdb(host1, "flannel.1")).toEqual([
      { mac: n2.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
    const routes = await podRoutes(host1);
    expect(routes.find((r) => r.dst === "198.19.2.0/24")).toEqual({
      dst: "198.19.2.0/24",
      gateway: "198.19.2.0",
      dev: "flannel.1",
      flags: ["onlink"],
    });
    // The same line as `ip route` on a flannel host (shared/seeds).
    expect(await host1.ns.ip("route show 198.19.2.0/24")).toBe("198.19.2.0/24 via 198.19.2.0 dev flannel.1 onlink \n");
  });

  it("carries pings between pods on different hosts, both ways", async () => {
    const [p1] = host1.pods;
    const [p2] = host2.pods;
    expect((await ping(p1, p2.addr, { count: 3 })).received).toBe(3);
    expect((await ping(p2, p1.addr, { count: 3 })).received).toBe(3);
  });

  it("puts a burst of peers into a few iproute2 calls, in flannel's order, and removes them again", async () => {
    const ip = vi.spyOn(n1.c.ctx.kernel, "ipBatchForce");
    const bridge = vi.spyOn(n1.c.ctx.kernel, "bridgeBatchForce");
    try {
      const fakes = Array.from({ length: 200 }, (_, i) =>
        peerOf(`fake${i}`, subnetOf(10 + i), 0xc6120000 + 20 + i, {
          type: "vxlan",
          vni: 1,
          port: 8472,
          vtepMac: `0a:58:00:00:00:${i.toString(16).padStart(2, "0")}`,
        }),
      );
      // The batches that carried lines, in the order they ran.
      const batches = () =>
        [
          ...ip.mock.calls.map((c, i) => [ip.mock.invocationCallOrder[i], c[0]] as const),
          ...bridge.mock.calls.map((c, i) => [bridge.mock.invocationCallOrder[i], c[0]] as const),
        ]
          .sort((x, y) => x[0] - y[0])
          .map(([, lines]) => lines)
          .filter((lines) => lines.length > 0);

      await Promise.all(fakes.map((p) => n1.backend.setPeer(p)));
      // Neighbours first, then FDB entries, then routes: one call each for all 200 peers.
      expect(batches().map((lines) => [lines.length, lines[0].split(" ").slice(0, 2).join(" ")])).toEqual([
        [200, "neigh replace"],
        [200, "fdb replace"],
        [200, "route replace"],
      ]);
      expect((await podRoutes(host1)).filter((r) => r.dev === "flannel.1")).toHaveLength(201);

      ip.mockClear();
      bridge.mockClear();
      await Promise.all(fakes.map((p) => n1.backend.removePeer(p.name)));
      // Removal the other way round.
      expect(batches().map((lines) => [lines.length, lines[0].split(" ").slice(0, 2).join(" ")])).toEqual([
        [200, "route del"],
        [200, "fdb del"],
        [200, "neigh del"],
      ]);
      expect((await podRoutes(host1)).filter((r) => r.dev === "flannel.1").map((r) => r.dst)).toEqual([
        "198.19.2.0/24",
      ]);
      expect(await neighbours(host1, "flannel.1")).toHaveLength(1);
      expect(await fdb(host1, "flannel.1")).toHaveLength(1);
    } finally {
      ip.mockRestore();
      bridge.mockRestore();
    }
  });

  it("reconcile() puts back a route, neighbour and FDB entry deleted by hand, and removes entries no peer wants", async () => {
    await host1.ns.ip("route del 198.19.2.0/24");
    await host1.ns.ip("neigh del 198.19.2.0 dev flannel.1");
    await host1.ns.kernel.bridgeBatch([`fdb del ${n2.announced.vtepMac} dev flannel.1 dst 198.18.0.12 self`]);
    await host1.ns.ip("neigh replace 198.19.77.0 lladdr 0a:58:00:00:77:00 dev flannel.1 nud permanent");
    await host1.ns.ip("route replace 198.19.77.0/24 via 198.19.77.0 dev flannel.1 onlink");
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 1, timeoutS: 1 })).received).toBe(0);
    const before = n1.backend.counters().driftRepairs;

    await n1.backend.reconcile();
    expect(await neighbours(host1, "flannel.1")).toEqual([
      { dst: "198.19.2.0", lladdr: n2.announced.vtepMac, state: ["PERMANENT"] },
    ]);
    expect(await fdb(host1, "flannel.1")).toEqual([
      { mac: n2.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
    expect((await podRoutes(host1)).filter((r) => r.dev === "flannel.1").map((r) => r.dst)).toEqual(["198.19.2.0/24"]);
    expect(n1.backend.counters().driftRepairs - before).toBe(5);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("reconcile() removes FDB entries no peer wants that carry a VNI or via device of their own, and puts back a peer's given another VNI", async () => {
    // The kernel matches a delete on VNI and via too, and takes one naming neither as done while
    // the entry stays.
    await host1.ns.kernel.bridgeBatch([
      "fdb replace 0a:58:00:00:78:00 dev flannel.1 dst 198.18.0.78 vni 7 self permanent",
      "fdb replace 0a:58:00:00:79:00 dev flannel.1 dst 198.18.0.79 via eth0 self permanent",
      `fdb replace ${n2.announced.vtepMac} dev flannel.1 dst 198.18.0.12 vni 7 self permanent`,
    ]);
    const before = n1.backend.counters().driftRepairs;
    await n1.backend.reconcile();
    expect(await fdb(host1, "flannel.1")).toEqual([
      { mac: n2.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
    expect(n1.backend.counters().driftRepairs - before).toBe(3);
    await n1.backend.reconcile();
    expect(n1.backend.counters().driftRepairs - before).toBe(3);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("reconcile() removes FDB entries whose via device is gone (iproute2 shows it as if<index>, and cannot name it in a delete), the all-zeros MAC's too", async () => {
    await host1.ns.ip("link add bvxvia0 type veth peer name bvxvia1");
    try {
      // The kernel replaces no remote of a non-unicast MAC: that entry goes whole.
      await host1.ns.kernel.bridgeBatch([
        "fdb append 0a:58:00:00:7a:00 dev flannel.1 dst 198.18.0.80 via bvxvia0 vni 7 self permanent",
        "fdb append 00:00:00:00:00:00 dev flannel.1 dst 198.18.0.81 via bvxvia0 self permanent",
        "fdb append 00:00:00:00:00:00 dev flannel.1 dst 198.18.0.82 self permanent",
      ]);
    } finally {
      await host1.ns.ip("link del bvxvia0");
    }
    expect((await fdb(host1, "flannel.1")).map((e) => e.dst)).toEqual(
      expect.arrayContaining(["198.18.0.80", "198.18.0.81", "198.18.0.82"]),
    );
    const { driftRepairs, kernelErrors } = n1.backend.counters();
    await n1.backend.reconcile();
    await n1.backend.reconcile();
    expect(await fdb(host1, "flannel.1")).toEqual([
      { mac: n2.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
    // Once, not at every reconcile.
    expect(n1.backend.counters().driftRepairs - driftRepairs).toBe(3);
    expect(n1.backend.counters().kernelErrors).toBe(kernelErrors);
  });

  it("reconcile() re-creates flannel.1 deleted by hand, with the same MAC and every peer's entries", async () => {
    await host1.ns.ip("link del flannel.1");
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 1, timeoutS: 1 })).received).toBe(0);
    await n1.backend.reconcile();
    const [link] = await host1.ns.kernel.ipJson<Array<{ address: string }>>(["link", "show", "flannel.1"]);
    expect(link.address).toBe(n1.announced.vtepMac);
    expect(await neighbours(host1, "flannel.1")).toEqual([
      { dst: "198.19.2.0", lladdr: n2.announced.vtepMac, state: ["PERMANENT"] },
    ]);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("reports a peer with another wire format or VNI instead of routing into nothing", async () => {
    await n1.backend.setPeer(peerOf("udp-host", subnetOf(50), 0xc6120032, { type: "udp", port: 8285 }));
    await n1.backend.setPeer(
      peerOf("vni-host", subnetOf(51), 0xc6120033, { type: "vxlan", vni: 2, port: 8472, vtepMac: "0a:58:00:00:33:00" }),
    );
    expect(n1.backend.counters().peersUnreachable).toBe(2);
    expect(n1.c.log.errors().filter((m) => m.includes("udp-host"))[0]).toMatch(
      /cannot reach peer udp-host: it runs backend udp, which does not speak vxlan's wire format/,
    );
    expect(n1.c.log.errors().some((m) => /vni-host: it uses VNI 2, this node 1/.test(m))).toBe(true);
    expect((await podRoutes(host1)).map((r) => r.dst)).not.toContain("198.19.50.0/24");
    await n1.backend.removePeer("udp-host");
    await n1.backend.removePeer("vni-host");
    expect(n1.backend.counters().peersUnreachable).toBe(0);
  });

  it("reports a peer whose VTEP MAC is another peer's or this node's (a copied state dir) instead of moving their FDB entry", async () => {
    const repairs = n1.backend.counters().driftRepairs;
    await n1.backend.setPeer(peerOf("twin", subnetOf(53), 0xc6120035, n2.announced));
    await n1.backend.setPeer(peerOf("self-twin", subnetOf(54), 0xc6120036, n1.announced));
    expect(n1.backend.counters().peersUnreachable).toBe(2);
    expect(n1.c.log.errors()).toContain(
      `cannot reach peer twin: its VTEP MAC ${n2.announced.vtepMac} is also host2's; delete vtep-mac (vtep-mac-ipv6) from one of the two nodes' state dirs and restart it`,
    );
    expect(
      n1.c.log
        .errors()
        .some((m) => m.startsWith("cannot reach peer self-twin: its VTEP MAC") && m.includes("this node's own")),
    ).toBe(true);
    await n1.backend.reconcile();
    expect(await fdb(host1, "flannel.1")).toEqual([
      { mac: n2.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
    expect(n1.backend.counters().driftRepairs).toBe(repairs);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
    await n1.backend.removePeer("twin");
    await n1.backend.removePeer("self-twin");
    expect(n1.backend.counters().peersUnreachable).toBe(0);
  });

  it("puts a peer's VXLAN port into its FDB entry when it differs from this device's", async () => {
    await n1.backend.setPeer(
      peerOf("port-host", subnetOf(52), 0xc6120034, {
        type: "wasm-vxlan",
        vni: 1,
        port: 4789,
        vtepMac: "0a:58:00:00:34:00",
      }),
    );
    expect((await fdb(host1, "flannel.1")).find((f) => f.mac === "0a:58:00:00:34:00")).toEqual({
      mac: "0a:58:00:00:34:00",
      dst: "198.18.0.52",
      port: 4789,
      flags: ["self"],
      state: "permanent",
    });
    await n1.backend.removePeer("port-host");
    expect(await fdb(host1, "flannel.1")).toHaveLength(1);
  });

  it("removePeer removes the route, FDB entry and neighbour entry", async () => {
    await n1.backend.removePeer("host2");
    expect(await neighbours(host1, "flannel.1")).toEqual([]);
    expect(await fdb(host1, "flannel.1")).toEqual([]);
    expect((await podRoutes(host1)).filter((r) => r.dev === "flannel.1")).toEqual([]);
    await n1.backend.setPeer(peer2());
  });

  it("stop(false) leaves nothing behind; a restart gets the same VTEP MAC back", async () => {
    await n1.backend.stop(false);
    expect(await linkNames(host1)).not.toContain("flannel.1");
    expect((await podRoutes(host1)).map((r) => r.dev)).toEqual(["cni0"]);
    await expect(n1.backend.setPeer(peer2())).rejects.toThrow(/stopped/);

    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    expect((await n1.backend.start()).vtepMac).toBe(n1.announced.vtepMac);
    await n1.backend.setPeer(peer2());
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("stop(true) keeps device and entries; the next start reuses the device and traffic never stops", async () => {
    const index = async () =>
      (await host1.ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "flannel.1"]))[0].ifindex;
    const before = await index();
    await n1.backend.stop(true);
    expect(await neighbours(host1, "flannel.1")).toHaveLength(1);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);

    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    expect((await n1.backend.start()).vtepMac).toBe(n1.announced.vtepMac);
    expect(await index()).toBe(before);
    expect((await podRoutes(host1)).some((r) => r.dev === "flannel.1")).toBe(true); // not touched before the peers come
    await n1.backend.setPeer(peer2());
    await n1.backend.reconcile();
    expect(n1.backend.counters().driftRepairs).toBe(0);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("after a kept restart, a peer set while reconcile checks the device keeps its entries (not removed as no peer's)", async () => {
    await n1.backend.stop(true);
    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    await n1.backend.start();
    // setPeer lands while the round's device check runs: the real check, only timed.
    const backend = n1.backend as unknown as { ensureDevices(iface: string): Promise<void> };
    const check = backend.ensureDevices.bind(backend);
    let set: Promise<void> | undefined;
    backend.ensureDevices = async (iface) => {
      const checked = check(iface);
      set = n1.backend.setPeer(peer2());
      await checked;
    };
    await n1.backend.reconcile();
    await set;
    // Taken before the check, the round's peers lacked it: its three kept entries were removed as
    // no peer's (drift) and put back by the setPeer's round.
    expect(n1.backend.counters().driftRepairs).toBe(0);
    expect(await fdb(host1, "flannel.1")).toHaveLength(1);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("a peer removed while reconcile checks the device has its entries removed, not counted as drift", async () => {
    const backend = n1.backend as unknown as { ensureDevices(iface: string): Promise<void> };
    const check = backend.ensureDevices.bind(backend);
    let removed: Promise<void> | undefined;
    backend.ensureDevices = async (iface) => {
      const checked = check(iface);
      removed = n1.backend.removePeer("host2");
      await checked;
    };
    const { driftRepairs } = n1.backend.counters();
    const driftWarnings = () => n1.c.log.lines.filter((l) => l.msg.includes("drifted")).length;
    const warned = driftWarnings();
    try {
      await n1.backend.reconcile();
      await removed;
      // The round's peers lacked it but its entries were out of the round's scope: all three
      // removed as drift, with a warning.
      expect(n1.backend.counters().driftRepairs).toBe(driftRepairs);
      expect(driftWarnings()).toBe(warned);
      expect(await fdb(host1, "flannel.1")).toEqual([]);
      expect(await neighbours(host1, "flannel.1")).toEqual([]);
      expect((await podRoutes(host1)).filter((r) => r.dev === "flannel.1")).toEqual([]);
    } finally {
      backend.ensureDevices = check;
      await n1.backend.setPeer(peer2());
    }
  });

  it("replaces a flannel.1 that has other settings", async () => {
    await n1.backend.stop(false);
    await host1.ns.ip("link add flannel.1 type vxlan id 1 dev eth0 dstport 4789");
    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    await n1.backend.start();
    const [link] = await host1.ns.kernel.ipJson<
      Array<{ linkinfo: { info_data: { port: number; learning: boolean } } }>
    >(["-details", "link", "show", "flannel.1"]);
    expect(link.linkinfo.info_data).toMatchObject({ port: 8472, learning: false });
    expect(
      n1.c.log.lines.some((l) =>
        /exists with other settings \(local address is none, not 198\.18\.0\.11, dstport is 4789, not 8472, learning is true, not false, MAC is .*\); replacing it/.test(
          l.msg,
        ),
      ),
    ).toBe(true);
    await n1.backend.setPeer(peer2());
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("DirectRouting: a peer on the same L2 gets a plain route via its underlay address, one behind a gateway gets VXLAN", async () => {
    await n1.backend.stop(false);
    n1.backend = createBackend("vxlan", { directRouting: true }, n1.c.ctx);
    await n1.backend.start();
    await host1.ns.ip("route add 198.18.0.200/32 via 198.18.0.12");
    try {
      await n1.backend.setPeer(peer2());
      await n1.backend.setPeer(
        peerOf("far", subnetOf(60), 0xc61200c8, { type: "vxlan", vni: 1, port: 8472, vtepMac: "0a:58:00:00:c8:00" }),
      );
      const routes = await podRoutes(host1);
      expect(routes.find((r) => r.dst === "198.19.2.0/24")).toEqual({
        dst: "198.19.2.0/24",
        gateway: formatIpv4(host2.underlayAddr),
        dev: "eth0",
        flags: [],
      });
      expect(routes.find((r) => r.dst === "198.19.60.0/24")).toEqual({
        dst: "198.19.60.0/24",
        gateway: "198.19.60.0",
        dev: "flannel.1",
        flags: ["onlink"],
      });
      expect((await neighbours(host1, "flannel.1")).map((n) => n.dst)).toEqual(["198.19.60.0"]);
      expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
      await n1.backend.stop(false);
      expect((await podRoutes(host1)).map((r) => r.dev)).toEqual(["cni0"]);
    } finally {
      await host1.ns.ip("route del 198.18.0.200/32");
    }
  });

  it("a start that fails after creating the device removes it again", async () => {
    const kernel = n1.c.ctx.kernel;
    const real = kernel.ipBatch.bind(kernel);
    // The kernel creates the device, then (as if the address were refused) the batch fails.
    const spy = vi.spyOn(kernel, "ipBatch").mockImplementationOnce(async (lines) => {
      await real(lines.slice(0, 1));
      throw new Error("address refused");
    });
    try {
      n1.backend = createBackend("vxlan", {}, n1.c.ctx);
      await expect(n1.backend.start()).rejects.toThrow("address refused");
      expect(spy.mock.calls[0][0][0]).toMatch(/^link add flannel\.1 /);
      expect(await linkNames(host1)).not.toContain("flannel.1");
    } finally {
      spy.mockRestore();
    }
  });

  it("Learning: the device is created with learning on, and a kept device without it is replaced", async () => {
    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    await n1.backend.start();
    await n1.backend.stop(true); // keeps flannel.1 as it is: nolearning
    const learning = async () =>
      (
        await host1.ns.kernel.ipJson<Array<{ linkinfo: { info_data: { learning: boolean } } }>>([
          "-details",
          "link",
          "show",
          "flannel.1",
        ])
      )[0].linkinfo.info_data.learning;
    expect(await learning()).toBe(false);
    n1.backend = createBackend("vxlan", { learning: true }, n1.c.ctx);
    try {
      await n1.backend.start();
      expect(await learning()).toBe(true);
      expect(n1.c.log.lines.some((l) => /learning is false, not true\); replacing it/.test(l.msg))).toBe(true);
      await n1.backend.setPeer(peer2());
      expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
    } finally {
      await n1.backend.stop(false);
    }
  });

  it("GBP: the device carries the flag, the announcement says so, and a peer without it is reported", async () => {
    n1.backend = createBackend("vxlan", { gbp: true }, n1.c.ctx);
    try {
      expect(await n1.backend.start()).toMatchObject({ gbp: true });
      const [link] = await host1.ns.kernel.ipJson<Array<{ linkinfo: { info_data: { gbp?: boolean | null } } }>>([
        "-details",
        "link",
        "show",
        "flannel.1",
      ]);
      // A presence flag: iproute2 up to 6.3 prints true, 6.4 and later null.
      expect(link.linkinfo.info_data).toHaveProperty("gbp");
      expect(link.linkinfo.info_data.gbp).not.toBe(false);
      const since = n1.c.log.lines.length;
      await n1.backend.reconcile();
      expect(n1.c.log.lines.slice(since).some((l) => /replacing it/.test(l.msg))).toBe(false);
      await n1.backend.setPeer(peer2());
      expect(n1.backend.counters().peersUnreachable).toBe(1);
      expect(n1.c.log.errors()).toContain(
        "cannot reach peer host2: GBP is off there and on here; set GBP the same everywhere",
      );
    } finally {
      await n1.backend.stop(false);
    }
  });

  it("reconcile removes a route into this node's own subnet on flannel.1 (a peer's that held it, kept over a crash); cni0's stays", async () => {
    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    try {
      await n1.backend.start();
      await n1.backend.setPeer(peer2());
      // Written before flannel.1 and cni0 had their addresses in this subnet (appended: the
      // kernel adds cni0's route so when the bridge gets its address after it).
      await host1.ns.ip("addr del 198.19.1.0/32 dev flannel.1");
      await host1.ns.ip("route append 198.19.1.0/24 via 198.19.1.0 dev flannel.1 onlink");
      // Puts the address back, and host2's entries the kernel removed with the device's last address.
      await n1.backend.reconcile();
      expect((await podRoutes(host1)).filter((r) => r.dst === "198.19.1.0/24").map((r) => r.dev)).toEqual(["cni0"]);
      expect((await ping(host1.pods[0], host1.pods[1].addr, { count: 2 })).received).toBe(2);
      expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
    } finally {
      await n1.backend.stop(false);
    }
  });

  it("an underlay MTU lowered at runtime: a re-created device gets what fits, is not replaced at every reconcile, and takes its MTU back in place", async () => {
    const since = n1.c.log.lines.length;
    n1.backend = createBackend("vxlan", {}, n1.c.ctx);
    const ifindex = async () =>
      (await host1.ns.kernel.ipJson<Array<{ ifindex: number; mtu: number }>>(["link", "show", "dev", "flannel.1"]))[0];
    try {
      await n1.backend.start();
      await n1.backend.setPeer(peer2());
      await host1.ns.ip("link set eth0 mtu 1400");
      await host1.ns.ip("link del flannel.1");
      await n1.backend.reconcile(); // re-creates it: the kernel allows 1400 - 50
      const made = await ifindex();
      expect(made.mtu).toBe(1350);
      await n1.backend.reconcile();
      await n1.backend.reconcile();
      expect(await ifindex()).toEqual(made);
      expect(n1.c.log.lines.slice(since).some((l) => /replacing it/.test(l.msg))).toBe(false);
      expect(n1.c.log.lines.slice(since).filter((l) => l.code === "BACKEND_UNDERLAY_MTU_LOWERED")).toHaveLength(1);
      expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
      // The interface's MTU back: the same device gets 1450 again.
      await host1.ns.ip("link set eth0 mtu 1500");
      await n1.backend.reconcile();
      expect(await ifindex()).toEqual({ ...made, mtu: 1450 });
    } finally {
      await host1.ns.ip("link set eth0 mtu 1500");
      await n1.backend.stop(false);
    }
  });

  it("an MTU key above the interface's is capped to it, as the kernel caps the device: no replacement on every reconcile", async () => {
    const since = n1.c.log.lines.length;
    n1.backend = createBackend("vxlan", { mtu: 9000 }, n1.c.ctx);
    try {
      await n1.backend.start();
      expect(n1.backend.mtu).toBe(1450);
      expect(n1.c.log.lines.some((l) => l.code === "BACKEND_MTU_CAPPED")).toBe(true);
      await n1.backend.setPeer(peer2());
      await n1.backend.reconcile();
      await n1.backend.reconcile();
      expect(n1.backend.counters().driftRepairs).toBe(0);
      expect(n1.c.log.lines.slice(since).some((l) => /replacing it/.test(l.msg))).toBe(false);
      expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
    } finally {
      await n1.backend.stop(false);
    }
  });
});
