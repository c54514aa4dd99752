// The kernel backends for IPv6, one instance per family as a dual-stack node runs them, in a
// two-host lab with an IPv6 underlay (2001:2::/64) and pods in 2001:2:0:8000::/49: vxlan's
// flannel-v6.<VNI> with flannel's neighbour, FDB and onlink route entries, host-gw's route via the
// peer's IPv6 underlay address, pings over IPv6 and IPv4 side by side, drift repaired, peers
// removed, a peer whose IPv6 rides its IPv4 underlay refused, a VTEP MAC that survives a restart,
// and vxlan's DirectRouting over the IPv6 underlay.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSubnetEnv } from "../../src/agent/subnet-env.js";
import type { Backend, BackendAnnouncement, BackendContext, BackendPeer } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { formatIpv6, ipv4Mapped, parseIpv6 } from "../../src/net/ipv6.js";
import { canUseNetns, Netns } from "../support/netns.js";
import { familyCtx, loggedTo, subnet6Of, subnetOf } from "./support.js";

interface Node6 {
  host: LabHost;
  dir: string;
  v4: Backend;
  v6: Backend;
  a4: BackendAnnouncement;
  a6: BackendAnnouncement;
}

async function start(
  host: LabHost,
  type: string,
  i: number,
  dir = mkdtempSync(join(tmpdir(), "weft-v6-")),
): Promise<Node6> {
  const v4 = createBackend(type, {}, familyCtx(host, dir, 4, i));
  const v6 = createBackend(type, {}, familyCtx(host, dir, 6, i));
  return { host, dir, v4, v6, a4: await v4.start(), a6: await v6.start() };
}

const peers = (n: Node6, i: number): [BackendPeer, BackendPeer] => [
  { name: n.host.name, subnet: subnetOf(i), underlay: n.host.underlayAddr, backend: n.a4 },
  { name: n.host.name, subnet: subnet6Of(i), underlay: n.host.underlayAddr6!, backend: n.a6 },
];

async function connect(n1: Node6, n2: Node6): Promise<void> {
  const [p1, p1v6] = peers(n1, 1);
  const [p2, p2v6] = peers(n2, 2);
  await Promise.all([n1.v4.setPeer(p2), n1.v6.setPeer(p2v6), n2.v4.setPeer(p1), n2.v6.setPeer(p1v6)]);
}

/** The host's IPv6 routes to the peer's subnet (its own subnet's routes on cni0 and the device left out). */
const routes6 = async (h: LabHost) =>
  (await h.ns.ip("-6 route show root 2001:2:0:8000::/49"))
    .split("\n")
    .filter((l) => l.startsWith("2001:2:0:8002:"))
    .join("\n");

/** The ifindex the tests give the eth0 they make. */
const ETH0_INDEX = 20;

/** Node 1's IPv6 lease over eth0 (2001:2::b, MTU 1500 as the agent read it) in `ns`. */
const context6 = (ns: Netns, stateDir: string, o: Partial<BackendContext> = {}): BackendContext => ({
  kernel: ns.kernel,
  network: LAB_POD_NETWORK6,
  subnet: subnet6Of(1),
  underlay: { iface: "eth0", ifindex: ETH0_INDEX, addr: 0xc612000b, addr6: parseIpv6("2001:2::b"), mtu: 1500 },
  stateDir,
  logger: pino({ level: "silent" }),
  ...o,
});

describe.skipIf(!canUseNetns())("udp backend and IPv6", () => {
  it("refuses an IPv6 subnet with BACKEND_NO_IPV6 (flannel's udp format is IPv4-only) before it opens anything", async () => {
    // In a namespace of its own, so that a backend which wrongly went on would open its TUN device there.
    const ns = await Netns.create("b6u");
    const dir = mkdtempSync(join(tmpdir(), "weft-v6-udp-"));
    try {
      const context = context6(ns, dir);
      expect(() => withNetns(ns.name, () => createBackend("udp", {}, context))).toThrow(
        expect.objectContaining({ code: "BACKEND_NO_IPV6", message: expect.stringMatching(/use vxlan or wasm-vxlan/) }),
      );
      expect(await ns.ip("-br link show")).not.toContain("flannel0");
    } finally {
      await ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!canUseNetns())("IPv6 over an underlay too small for it", () => {
  it("refuses an IPv6 device below 1280 with BACKEND_IPV6_MTU before it makes anything, vxlan and wasm-vxlan alike; 1280 itself runs", async () => {
    // Before, the kernel refused the device's address with a bare "Invalid argument" at every start.
    const ns = await Netns.create("b6m");
    const dir = mkdtempSync(join(tmpdir(), "weft-v6-mtu-"));
    try {
      await ns.ip(`link add eth0 index ${ETH0_INDEX} mtu 1349 type veth peer name eth0p mtu 1349`);
      await ns.ip("addr add 2001:2::b/64 nodad dev eth0");
      await ns.ip("addr add 198.18.0.11/24 dev eth0");
      await ns.ip("link set eth0 up");
      const context = (mtu: number, ipv6Underlay = true): BackendContext => ({
        kernel: ns.kernel,
        network: LAB_POD_NETWORK6,
        subnet: subnet6Of(1),
        underlay: {
          iface: "eth0",
          ifindex: ETH0_INDEX,
          addr: 0xc612000b,
          addr6: ipv6Underlay ? parseIpv6("2001:2::b") : undefined,
          mtu,
        },
        stateDir: dir,
        logger: pino({ level: "silent" }),
      });
      const refused = (type: string, ctx: BackendContext, device: string, mtu: number, needs: number) =>
        expect(() => withNetns(ns.name, () => createBackend(type, { workers: 1 }, ctx))).toThrow(
          expect.objectContaining({
            code: "BACKEND_IPV6_MTU",
            message: expect.stringMatching(
              new RegExp(`^${device.replace(".", "\\.")} would get MTU ${mtu} .* at least ${needs} `),
            ),
          }),
        );
      // The interface's MTU, as the agent reads it: 1349 - 70 = 1279 over the IPv6 underlay.
      refused("vxlan", context(1349), "flannel-v6.1", 1279, 1350);
      refused("wasm-vxlan", context(1349), "weft-v6.1", 1279, 1350);
      // Over the IPv4 underlay (no IPv6 address): 1329 - 50; Backend.MTU counts as the interface's.
      refused("wasm-vxlan", context(1329, false), "weft-v6.1", 1279, 1330);
      expect(() => withNetns(ns.name, () => createBackend("wasm-vxlan", { mtu: 1329 }, context(1500, false)))).toThrow(
        expect.objectContaining({ code: "BACKEND_IPV6_MTU" }),
      );
      expect(await ns.ip("-br link show")).not.toMatch(/flannel|weft/);
      // 1280 is IPv6's minimum, and enough: the device gets its address.
      await ns.ip("link set eth0 mtu 1350");
      const backend = createBackend("vxlan", {}, context(1350));
      try {
        await backend.start();
        expect(await ns.ip("-6 addr show dev flannel-v6.1")).toContain("2001:2:0:8001::/128");
        expect(await ns.ip("link show dev flannel-v6.1")).toContain("mtu 1280");
      } finally {
        await backend.stop(false);
      }
    } finally {
      await ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("an underlay MTU lowered at runtime below what IPv6 needs: flannel-v6 and weft-v6 do not follow it below 1280 but keep their MTU and IPv6 (BACKEND_UNDERLAY_MTU_LOWERED says so), and follow it back up", async () => {
    // Before, reconcile set the device below 1280: the kernel took IPv6 off it and every later reconcile failed.
    const ns = await Netns.create("b6f");
    const dir = mkdtempSync(join(tmpdir(), "weft-v6-low-"));
    const { logger, log } = loggedTo();
    const backends: Backend[] = [];
    try {
      await ns.ip(`link add eth0 index ${ETH0_INDEX} type veth peer name eth0p`);
      await ns.ip("addr add 2001:2::b/64 nodad dev eth0");
      await ns.ip("link set eth0 up");
      const context = (i: number): BackendContext => ({
        kernel: ns.kernel,
        network: LAB_POD_NETWORK6,
        subnet: subnet6Of(i),
        underlay: { iface: "eth0", ifindex: ETH0_INDEX, addr: 0xc612000b, addr6: parseIpv6("2001:2::b"), mtu: 1500 },
        stateDir: dir,
        logger,
      });
      backends.push(createBackend("vxlan", {}, context(1)));
      backends.push(
        withNetns(ns.name, () => createBackend("wasm-vxlan", { workers: 1, vni: 2, port: 8473 }, context(2))),
      );
      for (const b of backends) await b.start();
      const devices: Array<[string, string]> = [
        ["flannel-v6.1", "2001:2:0:8001::"],
        ["weft-v6.2", "2001:2:0:8002::"],
      ];
      const mtus = async () =>
        Promise.all(
          devices.map(async ([d]) => (await ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", d]))[0].mtu),
        );
      const reconcile = async () => {
        for (const b of backends) await b.reconcile();
      };
      const lowered = () => log.lines.filter((l) => l.code === "BACKEND_UNDERLAY_MTU_LOWERED");
      expect(await mtus()).toEqual([1430, 1430]);
      await ns.ip("link set eth0 mtu 1400");
      await reconcile();
      expect(await mtus()).toEqual([1330, 1330]);
      await ns.ip("link set eth0 mtu 1340");
      await reconcile();
      await reconcile();
      expect(await mtus()).toEqual([1330, 1330]);
      for (const [d, addr] of devices) {
        expect(await ns.ip(`-6 addr show dev ${d} scope global`)).toContain(addr);
        expect(await ns.exec(["cat", `/proc/sys/net/ipv6/conf/${d}/mtu`])).toBe("1330\n");
      }
      expect(lowered().map((l) => [l.underlayMtu, l.deviceMtu])).toEqual([
        [1400, 1330],
        [1400, 1330],
        [1340, 1330],
        [1340, 1330],
      ]);
      expect(lowered()[2].msg).toMatch(/below the 1280 IPv6 needs: it stays at 1330, .* at least 1350 /);
      await ns.ip("link set eth0 mtu 1500");
      await reconcile();
      expect(await mtus()).toEqual([1430, 1430]);
      expect(log.errors()).toEqual([]);
      expect(backends.map((b) => b.counters().kernelErrors)).toEqual([0, 0]);
    } finally {
      for (const b of backends) await b.stop(false).catch(() => undefined);
      await ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("flannel-v6 deleted while the underlay is below what IPv6 needs: reconcile refuses to make it again with BACKEND_IPV6_MTU and reports the backend failed, as a new one's start refuses, until the underlay's MTU is raised", async () => {
    // Before, reconcile made the device, which the kernel clamped below 1280, and its address was
    // refused at every reconcile, the node ready all along.
    const ns = await Netns.create("b6r");
    const dir = mkdtempSync(join(tmpdir(), "weft-v6-recreate-"));
    const { logger, log } = loggedTo();
    const failed: Error[] = [];
    let backend: Backend | undefined;
    try {
      await ns.ip(`link add eth0 index ${ETH0_INDEX} type veth peer name eth0p`);
      await ns.ip("addr add 2001:2::b/64 nodad dev eth0");
      await ns.ip("link set eth0 up");
      // The agent reads the underlay once, at its start: a lane's new backend gets the same context.
      const context = context6(ns, dir, { logger, onFailed: (err) => failed.push(err) });
      const ipv6MtuRefusal = expect.objectContaining({
        code: "BACKEND_IPV6_MTU",
        message: expect.stringMatching(/^flannel-v6\.1 would get MTU 1270 .* raise eth0's MTU to at least 1350, /),
      });
      backend = createBackend("vxlan", {}, context);
      await backend.start();
      await ns.ip("link set eth0 mtu 1340");
      await ns.ip("link del flannel-v6.1");
      await expect(backend.reconcile()).rejects.toEqual(ipv6MtuRefusal);
      await expect(backend.reconcile()).rejects.toEqual(ipv6MtuRefusal);
      expect(failed).toEqual([ipv6MtuRefusal]);
      expect(await ns.ip("-br link show")).not.toContain("flannel-v6");
      // What the agent's lane does next: stop it, start a new one, which is refused alike.
      await backend.stop(false);
      backend = createBackend("vxlan", {}, context);
      await expect(backend.start()).rejects.toEqual(ipv6MtuRefusal);
      expect(await ns.ip("-br link show")).not.toContain("flannel-v6");
      await ns.ip("link set eth0 mtu 1350");
      backend = createBackend("vxlan", {}, context);
      await backend.start();
      expect(await ns.ip("-6 addr show dev flannel-v6.1")).toContain("2001:2:0:8001::/128");
      expect(await ns.ip("link show dev flannel-v6.1")).toContain("mtu 1280");
      await backend.reconcile();
      expect(failed).toHaveLength(1);
      expect(backend.counters().kernelErrors).toBe(0);
      expect(log.errors()).toEqual([
        expect.stringMatching(/failed, and the backend cannot go on: it is to be replaced$/),
        expect.stringMatching(/failed, and the backend cannot go on: it is to be replaced$/),
      ]);
    } finally {
      await backend?.stop(false).catch(() => undefined);
      await ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

for (const type of ["vxlan", "host-gw"] as const) {
  describe.skipIf(!canUseNetns())(`${type} backend, dual-stack (kernel)`, () => {
    let lab: LabCluster;
    let n1: Node6;
    let n2: Node6;
    const mtu = type === "vxlan" ? 1450 : 1500;

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: type === "vxlan" ? "b6x" : "b6h", hosts: 2, ipv6: true });
      // Pods through the CNI plugins from a dual-stack subnet.env, as the agent would write it.
      for (const [k, h] of lab.hosts.entries()) {
        const file = join(lab.hostDir(h), "subnet.env");
        await writeSubnetEnv(file, {
          v4: { network: LAB_POD_NETWORK, subnet: subnetOf(k + 1) },
          v6: { network: LAB_POD_NETWORK6, subnet: subnet6Of(k + 1) },
          mtu,
          ipMasq: false,
        });
        await lab.addPodsFromSubnetFile(h, file, 1);
      }
      n1 = await start(lab.hosts[0], type, 1);
      n2 = await start(lab.hosts[1], type, 2);
      await connect(n1, n2);
    });

    afterAll(async () => {
      for (const n of [n1, n2]) {
        await n?.v4.stop(false).catch(() => undefined);
        await n?.v6.stop(false).catch(() => undefined);
      }
      await lab?.destroy();
      for (const n of [n1, n2]) if (n) rmSync(n.dir, { recursive: true, force: true });
    });

    if (type === "vxlan") {
      it("creates flannel-v6.1 as flannel does: its own MAC, the IPv6 underlay, MTU underlay - 70 (pods: - 50), the subnet's network address as /128", async () => {
        expect(n1.v6.mtu).toBe(1450);
        expect(n1.a6.vtepMac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        expect(n1.a6.vtepMac).not.toBe(n1.a4.vtepMac);
        const [link] = await n1.host.ns.kernel.ipJson<
          Array<{ address: string; mtu: number; linkinfo: { info_data: Record<string, unknown> } }>
        >(["-details", "link", "show", "flannel-v6.1"]);
        expect(link.address).toBe(n1.a6.vtepMac);
        expect(link.mtu).toBe(1430);
        expect(link.linkinfo.info_data).toMatchObject({
          id: 1,
          local6: "2001:2::b",
          link: "eth0",
          port: 8472,
          learning: false,
        });
        expect(await n1.host.ns.ip("-6 addr show dev flannel-v6.1 scope global")).toContain(
          "inet6 2001:2:0:8001::/128 scope global",
        );
      });

      it("an MTU key at least 20 below the interface's: flannel-v6 at the key - 50, as flanneld asks and the kernel keeps", async () => {
        const dir = mkdtempSync(join(tmpdir(), "weft-v6-mtu-"));
        const v6 = createBackend("vxlan", { vni: 7, port: 8479, mtu: 1400 }, familyCtx(lab.hosts[0], dir, 6, 5));
        try {
          await v6.start();
          expect(v6.mtu).toBe(1350);
          const [link] = await lab.hosts[0].ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", "flannel-v6.7"]);
          expect(link.mtu).toBe(1350);
        } finally {
          await v6.stop(false);
          rmSync(dir, { recursive: true, force: true });
        }
        expect(await lab.hosts[0].ns.ip("-br link show")).not.toContain("flannel-v6.7");
      });

      it("programs the peer exactly as flannel does for IPv6: permanent neighbour, permanent FDB entry to its IPv6 underlay, onlink route", async () => {
        expect(await n1.host.ns.ip("-6 neigh show dev flannel-v6.1")).toBe(
          `2001:2:0:8002:: lladdr ${n2.a6.vtepMac} PERMANENT \n`,
        );
        expect(
          await n1.host.ns.kernel
            .bridgeJson(["fdb", "show", "dev", "flannel-v6.1"])
            .then((f) => (f as Array<{ dst?: string }>).filter((x) => x.dst)),
        ).toEqual([{ mac: n2.a6.vtepMac, dst: "2001:2::c", flags: ["self"], state: "permanent" }]);
        expect(await routes6(n1.host)).toBe(
          "2001:2:0:8002::/64 via 2001:2:0:8002:: dev flannel-v6.1 metric 1024 onlink pref medium",
        );
      });
    } else {
      it("routes the peer's IPv6 subnet via its IPv6 underlay address", async () => {
        expect(n1.v6.mtu).toBe(1500);
        expect(await routes6(n1.host)).toBe("2001:2:0:8002::/64 via 2001:2::c dev eth0 metric 1024 pref medium");
      });
    }

    it("carries pings between pods over IPv6 and IPv4, both ways", async () => {
      const [p1] = n1.host.pods;
      const [p2] = n2.host.pods;
      expect((await ping(p1, p2.addr6!, { count: 3 })).received).toBe(3);
      expect((await ping(p2, p1.addr6!, { count: 3 })).received).toBe(3);
      expect((await ping(p1, p2.addr, { count: 3 })).received).toBe(3);
    });

    it("repairs a deleted IPv6 route and counts it as drift; a second reconcile finds nothing", async () => {
      const before = n1.v6.counters().driftRepairs;
      await n1.host.ns.ip(`-6 route del ${formatIpv6(subnet6Of(2).addr)}/64`);
      await n1.v6.reconcile();
      expect(n1.v6.counters().driftRepairs).toBe(before + 1);
      expect(await routes6(n1.host)).toContain("2001:2:0:8002::/64");
      await n1.v6.reconcile();
      expect(n1.v6.counters().driftRepairs).toBe(before + 1);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
    });

    it("removes a peer's IPv6 entries (as when it is declared dead), leaving IPv4 alone", async () => {
      await n1.v6.removePeer(n2.host.name);
      expect(await routes6(n1.host)).toBe("");
      if (type === "vxlan") expect(await n1.host.ns.ip("-6 neigh show dev flannel-v6.1 nud permanent")).toBe("");
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
      await n1.v6.setPeer(peers(n2, 2)[1]);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
    });

    it("refuses a peer whose IPv6 rides its IPv4 underlay (::ffff:a.b.c.d, a wasm-vxlan node without an IPv6 underlay address): counted, its entries gone", async () => {
      const before = n1.v6.counters().peersUnreachable;
      await n1.v6.setPeer({ ...peers(n2, 2)[1], underlay: ipv4Mapped(n2.host.underlayAddr) });
      expect(n1.v6.counters().peersUnreachable).toBe(before + 1);
      expect(await routes6(n1.host)).toBe("");
      if (type === "vxlan") expect(await n1.host.ns.ip("-6 neigh show dev flannel-v6.1 nud permanent")).toBe("");
      await n1.v6.setPeer(peers(n2, 2)[1]);
      expect(n1.v6.counters().peersUnreachable).toBe(before);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
    });

    if (type === "vxlan") {
      it("reconcile() re-creates flannel-v6.1 deleted by hand, with the same MAC and the peer's IPv6 entries; flannel.1 untouched", async () => {
        await n1.host.ns.ip("link del flannel-v6.1");
        expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 1, timeoutS: 1 })).received).toBe(0);
        await n1.v6.reconcile();
        const [link] = await n1.host.ns.kernel.ipJson<Array<{ address: string }>>(["link", "show", "flannel-v6.1"]);
        expect(link.address).toBe(n1.a6.vtepMac);
        expect(await n1.host.ns.ip("-6 neigh show dev flannel-v6.1")).toBe(
          `2001:2:0:8002:: lladdr ${n2.a6.vtepMac} PERMANENT \n`,
        );
        expect(await routes6(n1.host)).toBe(
          "2001:2:0:8002::/64 via 2001:2:0:8002:: dev flannel-v6.1 metric 1024 onlink pref medium",
        );
        expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
        expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
      });

      it("keeps the IPv6 VTEP MAC across a restart with the same state dir", async () => {
        await n2.v6.stop(false);
        await n2.v4.stop(false);
        n2 = await start(lab.hosts[1], type, 2, n2.dir);
        expect(n2.a6.vtepMac).toBe(peers(n2, 2)[1].backend.vtepMac);
        await connect(n1, n2);
        expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 3 })).received).toBe(3);
      });

      it("DirectRouting for IPv6: a peer on the same L2 gets a plain route via its IPv6 underlay address, one behind a gateway gets flannel-v6.1's entries", async () => {
        await n1.v6.stop(false);
        n1.v6 = createBackend("vxlan", { directRouting: true }, familyCtx(n1.host, n1.dir, 6, 1));
        n1.a6 = await n1.v6.start();
        const far = { addr: "2001:2::c8", subnet: subnet6Of(60), vtepMac: "0a:58:00:00:c8:00" };
        await n1.host.ns.ip(`-6 route add ${far.addr}/128 via 2001:2::c`);
        try {
          await n1.v6.setPeer(peers(n2, 2)[1]);
          await n1.v6.setPeer({
            name: "far",
            subnet: far.subnet,
            underlay: parseIpv6(far.addr),
            backend: { type: "vxlan", vni: 1, port: 8472, vtepMac: far.vtepMac },
          });
          expect(await routes6(n1.host)).toBe("2001:2:0:8002::/64 via 2001:2::c dev eth0 metric 1024 pref medium");
          expect(await n1.host.ns.ip("-6 route show 2001:2:0:803c::/64")).toBe(
            "2001:2:0:803c::/64 via 2001:2:0:803c:: dev flannel-v6.1 metric 1024 onlink pref medium\n",
          );
          expect(await n1.host.ns.ip("-6 neigh show dev flannel-v6.1")).toBe(
            `2001:2:0:803c:: lladdr ${far.vtepMac} PERMANENT \n`,
          );
          expect((await ping(n1.host.pods[0], n2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
          await n1.v6.stop(false);
          expect(await routes6(n1.host)).toBe("");
          expect(await n1.host.ns.ip("-6 route show 2001:2:0:803c::/64")).toBe("");
        } finally {
          await n1.host.ns.ip(`-6 route del ${far.addr}/128`);
        }
      });
    }
  });
}
