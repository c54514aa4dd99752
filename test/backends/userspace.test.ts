// The userspace backends (`wasm-vxlan`, `udp`) behind the Backend interface in a two-host lab,
// and a mixed cluster: a kernel `vxlan` host and a `wasm-vxlan` host talking VXLAN to each other.
// The dataplane opens its TUN device and sockets in the calling thread's namespace, so each
// backend is constructed inside withNetns (support.ts startNode).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { PeerSync } from "../../src/agent/peer-sync.js";
import type { BackendContext, BackendPeer } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { PeerTable } from "../../src/dataplane/peers.js";
import { WeftError } from "../../src/errors.js";
import { withNetns } from "../../src/io/netns.js";
import { Kernel } from "../../src/kernel/iproute.js";
import { LabCluster, LAB_POD_NETWORK } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns, Netns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";
import {
  fdb,
  hostCtx,
  loggedTo,
  linkNames,
  neighbours,
  peerFrom,
  removeLab,
  startNode,
  subnetOf,
  twoHostLab,
  type LabNode,
} from "./support.js";

describe.skipIf(!canUseNetns())("Backend.MTU above the underlay interface's (userspace)", () => {
  it("is capped to the interface's MTU with BACKEND_MTU_CAPPED, as the vxlan backend caps it: pods and TUN device fit the interface", async () => {
    // Before, wasm-vxlan took Backend.MTU 1500 over a 1400 interface: TUN device and pods at 1450.
    const ns = await Netns.create("bucap");
    try {
      await ns.ip("link add eth0 index 20 mtu 1400 type veth peer name eth0p mtu 1400");
      await ns.ip("addr add 198.18.0.11/24 dev eth0");
      await ns.ip("link set eth0 up");
      for (const [type, tun, overhead] of [
        ["wasm-vxlan", "weft.1", 50],
        ["udp", "flannel0", 28],
      ] as const) {
        const { logger, log } = loggedTo();
        // Twice, as the agent restarts a failed backend (up to every 30 s): warned once.
        for (const round of [1, 2]) {
          const dir = mkdtempSync(join(tmpdir(), "weft-mtu-cap-"));
          const ctx: BackendContext = {
            kernel: ns.kernel,
            network: LAB_POD_NETWORK,
            subnet: subnetOf(1),
            underlay: { iface: "eth0", ifindex: 20, addr: 0xc612000b, mtu: 1400 },
            stateDir: dir,
            logger,
          };
          const backend = withNetns(ns.name, () => createBackend(type, { workers: 1, mtu: 1500 }, ctx));
          try {
            await backend.start();
            expect(backend.mtu, type).toBe(1400 - overhead);
            expect((await ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", "dev", tun]))[0].mtu, type).toBe(
              1400 - overhead,
            );
            expect(
              log.lines.filter((l) => l.code === "BACKEND_MTU_CAPPED"),
              `${type} ${round}`,
            ).toEqual([
              expect.objectContaining({
                mtu: 1500,
                underlayMtu: 1400,
                msg: expect.stringMatching(/^Backend\.MTU 1500 is above eth0's MTU 1400, .*: using 1400; /),
              }),
            ]);
          } finally {
            await backend.stop(false);
            rmSync(dir, { recursive: true, force: true });
          }
        }
      }
    } finally {
      await ns.destroy();
    }
  });
});

/** The MTU of `dev` in node `n`'s namespace. */
const tunMtu = async (n: LabNode, dev: string) =>
  (await n.host.ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", "dev", dev]))[0].mtu;

for (const type of ["wasm-vxlan", "udp"] as const) {
  describe.skipIf(!canUseNetns())(`${type} backend (userspace dataplane)`, () => {
    let lab: LabCluster;
    let n1: LabNode;
    let n2: LabNode;
    const mtu = type === "udp" ? 1472 : 1450;

    beforeAll(async () => {
      ({ lab, n1, n2 } = await twoHostLab(type === "udp" ? "bud" : "bwv", type, mtu));
    });

    afterAll(() => removeLab(lab, [n1, n2]));

    it("announces its port (and VTEP MAC for VXLAN) and the pod MTU", () => {
      expect(n1.backend.mtu).toBe(mtu);
      if (type === "udp") expect(n1.announced).toEqual({ type: "udp", port: 8285 });
      else
        expect(n1.announced).toMatchObject({
          type: "wasm-vxlan",
          vni: 1,
          port: 8472,
          vtepMac: expect.stringMatching(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/),
        });
    });

    it("keeps IPv6 off on its IPv4-only TUN device: no address, so the kernel sends it no router solicitations to drop", async () => {
      const dev = type === "udp" ? "flannel0" : "weft.1";
      expect((await n1.host.ns.exec(["sysctl", "-n", `net/ipv6/conf/${dev}/disable_ipv6`])).trim()).toBe("1");
      expect(await n1.host.ns.ip(`-6 addr show dev ${dev}`)).toBe("");
      // The kernel solicits routers within seconds of an IPv6 interface coming up (and every 4 s
      // after): none reach the dataplane.
      await new Promise((r) => setTimeout(r, 5000));
      expect(n1.backend.dataplaneCounters!().tx.packets.IPV6_UNROUTED ?? 0n).toBe(0n);
    });

    it("carries pings between pods on different hosts, both ways", async () => {
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 3 })).received).toBe(3);
      expect((await ping(n2.host.pods[1], n1.host.pods[1].addr, { count: 3 })).received).toBe(3);
      expect(n1.backend.dataplaneCounters!({ peers: true }).peers!.host2.txPackets).toBeGreaterThanOrEqual(6n);
    });

    it("a full sync of more peers than the dataplane holds sets the others and reports the refused ones unreachable", async () => {
      // As the agent drives it (PeerSync): 4,095 peers besides host2 fill the dataplane's 4,096
      // next hops (/29s in 198.19.16.0/20 and on: several per /24, as the ring spreads them), one
      // overlaps another's subnet and one finds no slot left. The sync checks each peer against
      // its neighbour in the peer table, not against a copy of every other peer.
      const at = (i: number) => ({
        ...peerFrom(n2),
        name: `p${i}`,
        subnet: { addr: 0xc6131000 + i * 8, len: 29 }, // 198.19.16.0/29 + i
        underlay: 0xc6120064, // 198.18.0.100: nobody, no packet goes there
      });
      const many = Array.from({ length: 4095 }, (_, i) => at(i));
      const overlapping = { ...at(0), name: "overlapping", subnet: { addr: 0xc6131000, len: 28 } };
      const tooMany = at(4095);
      let peers: BackendPeer[] = [peerFrom(n2), ...many, overlapping, tooMany];
      const sync = new PeerSync(
        () => peers,
        () => n1.backend,
        pino({ level: "silent" }),
      );
      const lists = vi.spyOn(PeerTable.prototype, "list");
      try {
        await sync.kick();
        expect(lists).not.toHaveBeenCalled();
      } finally {
        lists.mockRestore();
      }
      expect(n1.backend.counters().peersUnreachable).toBe(2);
      const errors = n1.c.log.errors();
      expect(errors).toContainEqual(expect.stringMatching(/^cannot reach peer overlapping: .*overlaps p[01]'s/));
      expect(errors).toContainEqual(expect.stringMatching(/^cannot reach peer p4095: no next-hop slot left/));
      expect(Object.keys(n1.backend.dataplaneCounters!({ peers: true }).peers!).length).toBe(4096);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
      // A peer whose update is refused (p1 moved onto p0's subnet) leaves, and its room goes to
      // the one waiting for room (it stayed free until another peer left).
      peers = peers.map((p) => (p.name === "p1" ? { ...p, subnet: { addr: 0xc6131000, len: 29 } } : p));
      await sync.kick();
      const held = Object.keys(n1.backend.dataplaneCounters!({ peers: true }).peers!);
      expect(held).toContain("p4095");
      expect(held).not.toContain("p1");
      // Once the peers are gone, the refused one fits.
      peers = [peerFrom(n2), tooMany];
      await sync.kick();
      expect(n1.backend.counters().peersUnreachable).toBe(0);
      peers = [peerFrom(n2)];
      await sync.kick();
      expect(Object.keys(n1.backend.dataplaneCounters!({ peers: true }).peers!)).toEqual(["host2"]);
    });

    it("reconcile() restores the TUN device's address after it was deleted by hand", async () => {
      const tun = type === "udp" ? "flannel0" : "weft.1";
      await n1.host.ns.ip(`addr flush dev ${tun}`);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 1, timeoutS: 1 })).received).toBe(0);
      await n1.backend.reconcile();
      expect(n1.backend.counters().driftRepairs).toBe(1);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
    });

    it("reconcile() brings a TUN device set down by hand up again, its route back, without a kernel error", async () => {
      const tun = type === "udp" ? "flannel0" : "weft.1";
      const before = n1.backend.counters();
      await n1.host.ns.ip(`link set ${tun} down`);
      await n1.backend.reconcile();
      // Before, it replaced the route on the down device first, which the kernel refuses (ENETDOWN).
      const after = n1.backend.counters();
      expect(after.kernelErrors).toBe(before.kernelErrors);
      expect(after.driftRepairs).toBe(before.driftRepairs + 1);
      expect(await n1.host.ns.ip(`-4 route show dev ${tun}`)).toMatch(/^198\.19\.0\.0\/16 proto kernel scope link/m);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
    });

    it("reconcile() sets back a TUN device MTU changed by hand", async () => {
      const tun = type === "udp" ? "flannel0" : "weft.1";
      const before = n1.backend.counters();
      await n1.host.ns.ip(`link set ${tun} mtu 1300`);
      await n1.backend.reconcile();
      // Before, the MTU was never looked at: the device stayed at 1300 below the pods' MTU.
      expect(await tunMtu(n1, tun)).toBe(mtu);
      const after = n1.backend.counters();
      expect([after.driftRepairs - before.driftRepairs, after.kernelErrors - before.kernelErrors]).toEqual([1, 0]);
    });

    it("an underlay MTU lowered at runtime: GSO sends refused for it are counted and logged once (BACKEND_GSO_TOO_BIG), and reconcile lowers the TUN device's MTU with BACKEND_UNDERLAY_MTU_LOWERED once, then takes it back", async () => {
      const tun = type === "udp" ? "flannel0" : "weft.1";
      const since = n1.c.log.lines.length;
      const codes = (code: string) => n1.c.log.lines.slice(since).filter((l) => l.code === code);
      const dp = () => n1.backend.dataplaneCounters!();
      const gsoTooBig = dp().io.udpGsoTooBig;
      try {
        await n1.host.ns.ip("link set eth0 mtu 1400");
        // TCP's super-packets of the pods' MTU become GSO sends of segments above 1400: the kernel
        // refuses them (EINVAL), and their datagrams go again one by one, fragmented. Nothing is lost.
        const { sent, received } = await tcpTransfer(n1.host.pods[0], n2.host.pods[0], 2_000_000);
        expect(received).toEqual(sent);
        expect(dp().offload.enabled).toBe(true);
        expect(dp().io.udpGsoTooBig).toBeGreaterThan(gsoTooBig);
        expect(dp().io.sendErrors).toBe(0n);
        await n1.backend.reconcile();
        await n1.backend.reconcile();
        expect(await tunMtu(n1, tun)).toBe(mtu - 100);
        expect(codes("BACKEND_GSO_TOO_BIG")).toHaveLength(1);
        expect(codes("BACKEND_UNDERLAY_MTU_LOWERED")).toEqual([
          expect.objectContaining({ underlayMtu: 1400, deviceMtu: mtu - 100, podMtu: mtu }),
        ]);
        expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
        await n1.host.ns.ip("link set eth0 mtu 1500");
        await n1.backend.reconcile();
        expect(await tunMtu(n1, tun)).toBe(mtu);
        expect(codes("BACKEND_UNDERLAY_MTU_LOWERED")).toHaveLength(1);
        expect(n1.c.log.lines.slice(since).filter((l) => l.level >= 50)).toEqual([]);
      } finally {
        await n1.host.ns.ip("link set eth0 mtu 1500");
      }
    });

    it("reconcile() that cannot reach its namespace at all counts one refused command, as a kernel backend's failed round does", async () => {
      const before = n1.backend.counters();
      // /dev/null over the namespace's file: every `ip -n` fails whole (setns: Invalid argument).
      const nsFile = `/run/netns/${n1.host.ns.name}`;
      execFileSync("mount", ["--bind", "/dev/null", nsFile]);
      try {
        await expect(n1.backend.reconcile()).rejects.toThrow();
      } finally {
        execFileSync("umount", [nsFile]);
      }
      // Before, the failed reads counted nothing: kernel_programming_total said all was well.
      const after = n1.backend.counters();
      expect([after.kernelCommands - before.kernelCommands, after.kernelErrors - before.kernelErrors]).toEqual([1, 1]);
      await n1.backend.reconcile();
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 2 })).received).toBe(2);
    });

    it("a subnet that moved from a gone peer to another in one sync (a reclaim) reaches the new owner", async () => {
      // As the agent drives it: the control plane's peers, synced by PeerSync. The ghost held host2's
      // subnet (at another underlay address); the next view has host2 holding it and the ghost gone.
      const ghost = { ...peerFrom(n2), name: "ghost", underlay: 0xc6120063 }; // 198.18.0.99
      let peers: BackendPeer[] = [ghost];
      const sync = new PeerSync(
        () => peers,
        () => n1.backend,
        pino({ level: "silent" }),
      );
      await n1.backend.removePeer("host2");
      await sync.kick();
      peers = [peerFrom(n2)];
      await sync.kick();
      expect(n1.backend.counters().peersUnreachable).toBe(0);
      expect((await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 3 })).received).toBe(3);
      // Moves in a chain in one sync (b takes d's subnet, d a new one), b listed first.
      const at = (name: string, i: number) => ({
        ...peerFrom(n2),
        name,
        subnet: subnetOf(i),
        underlay: 0xc6120060 + i,
      });
      peers = [peerFrom(n2), at("b", 60), at("d", 61)];
      await sync.kick();
      peers = [peerFrom(n2), at("b", 61), at("d", 62)];
      await sync.kick();
      expect(n1.backend.counters().peersUnreachable).toBe(0);
      peers = [peerFrom(n2)];
      await sync.kick();
    });

    it("stops carrying a removed peer's traffic; stop() removes the TUN device", async () => {
      await n1.backend.removePeer("host2");
      // The pod is told at once: ICMP net unreachable from the dataplane reaches it (the kernel
      // would drop one from the TUN device's own address as a martian source).
      expect(await ping(n1.host.pods[0], n2.host.pods[0].addr, { count: 1, timeoutS: 1 })).toMatchObject({
        received: 0,
        unreachable: 1,
      });
      await n1.backend.stop(false);
      expect(await linkNames(n1.host)).not.toContain(type === "udp" ? "flannel0" : "weft.1");
    });
  });
}

describe.skipIf(!canUseNetns())("mixed cluster: kernel vxlan and wasm-vxlan", () => {
  let lab: LabCluster;
  let kernelNode: LabNode;
  let wasmNode: LabNode;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "bmix", hosts: 2 });
    await lab.addPods(lab.hosts[0], subnetOf(1), 1, 1450);
    await lab.addPods(lab.hosts[1], subnetOf(2), 1, 1450);
    kernelNode = await startNode(lab.hosts[0], 1, "vxlan");
    wasmNode = await startNode(lab.hosts[1], 2, "wasm-vxlan");
    await kernelNode.backend.setPeer(peerFrom(wasmNode));
    await wasmNode.backend.setPeer(peerFrom(kernelNode));
  });

  afterAll(() => removeLab(lab, [kernelNode, wasmNode]));

  it("gives the wasm-vxlan peer flannel's neighbour and FDB entries on the kernel side", async () => {
    expect(kernelNode.backend.counters().peersUnreachable).toBe(0);
    expect(wasmNode.backend.counters().peersUnreachable).toBe(0);
    expect(await neighbours(kernelNode.host, "flannel.1")).toEqual([
      { dst: "198.19.2.0", lladdr: wasmNode.announced.vtepMac, state: ["PERMANENT"] },
    ]);
    expect(await fdb(kernelNode.host, "flannel.1")).toEqual([
      { mac: wasmNode.announced.vtepMac, dst: "198.18.0.12", flags: ["self"], state: "permanent" },
    ]);
  });

  it("carries pings both ways between a kernel vxlan host and a wasm-vxlan host", async () => {
    const [k] = kernelNode.host.pods;
    const [w] = wasmNode.host.pods;
    expect((await ping(k, w.addr, { count: 3 })).received).toBe(3);
    expect((await ping(w, k.addr, { count: 3 })).received).toBe(3);
    const c = wasmNode.backend.dataplaneCounters!({ peers: true }).peers!.host1;
    expect(c.rxPackets).toBeGreaterThanOrEqual(6n);
    expect(c.txPackets).toBeGreaterThanOrEqual(6n);
  });
});

/**
 * A lab host's Kernel as on a kernel booted with ipv6.disable=1, which this machine is not: no
 * /proc/sys/net/ipv6, so every net/ipv6 sysctl is missing.
 */
class NoIpv6Kernel extends Kernel {
  override hasIpv6(): boolean {
    return false;
  }

  override async sysctl(key: string, value: string | number): Promise<void> {
    NoIpv6Kernel.check([key]);
    return super.sysctl(key, value);
  }

  override async readSysctls(keys: string[]): Promise<string[]> {
    NoIpv6Kernel.check(keys);
    return super.readSysctls(keys);
  }

  private static check(keys: string[]): void {
    const missing = keys.find((k) => /^net[./]ipv6[./]/.test(k));
    if (missing)
      throw new WeftError("KERNEL_COMMAND_FAILED", `cannot set sysctl ${missing}: ENOENT: no such file or directory`);
  }
}

describe.skipIf(!canUseNetns())("userspace backends on a kernel without IPv6 (ipv6.disable=1)", () => {
  let lab: LabCluster;
  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "bn6", hosts: 1 });
  });
  afterAll(() => lab?.destroy());

  it.each(["wasm-vxlan", "udp"] as const)(
    "%s starts and reconciles: its IPv4 device has no IPv6 to switch off",
    async (type) => {
      const host = lab.hosts[0];
      const c = hostCtx(host, subnetOf(1));
      const ctx = { ...c.ctx, kernel: new NoIpv6Kernel(host.ns.kernel.opts) };
      const backend = withNetns(host.ns.name, () => createBackend(type, { workers: 1 }, ctx));
      try {
        await backend.start();
        await backend.reconcile();
        await backend.reconcile();
        expect(backend.counters()).toMatchObject({ kernelErrors: 0, driftRepairs: 0 });
        expect(c.log.errors()).toEqual([]);
        expect(c.log.lines.filter((l) => /runs without IPv6/.test(l.msg))).toHaveLength(1);
      } finally {
        await backend.stop(false);
        c.cleanup();
      }
    },
  );
});
