// The kernel `host-gw` backend in a two-host lab: a route per peer via its underlay address,
// pod-to-pod pings, reconcile, a peer that is not on the same L2 reported (never a route into
// nothing), removal and stop.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createBackend } from "../../src/backends/index.js";
import type { LabCluster, LabHost } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { refusingTool } from "../support/refusing-tool.js";
import { loggedTo, peerFrom, peerOf, podRoutes, removeLab, subnetOf, twoHostLab, type LabNode } from "./support.js";

describe.skipIf(!canUseNetns())("host-gw backend (kernel)", () => {
  let lab: LabCluster;
  let n1: LabNode;
  let n2: LabNode;
  let host1: LabHost;
  let host2: LabHost;

  beforeAll(async () => {
    ({ lab, n1, n2 } = await twoHostLab("bhg", "host-gw", 1500));
    [host1, host2] = lab.hosts;
  });

  afterAll(() => removeLab(lab, [n1, n2]));

  it("routes each peer's subnet via its underlay address, as flannel's host-gw", async () => {
    expect(n1.announced).toEqual({ type: "host-gw" });
    expect(n1.backend.mtu).toBe(1500);
    expect((await podRoutes(host1)).find((r) => r.dst === "198.19.2.0/24")).toEqual({
      dst: "198.19.2.0/24",
      gateway: "198.18.0.12",
      dev: "eth0",
      flags: [],
    });
    expect(await host1.ns.ip("route show 198.19.2.0/24")).toBe("198.19.2.0/24 via 198.18.0.12 dev eth0 \n");
  });

  it("carries pings between pods on different hosts, both ways", async () => {
    expect((await ping(host1.pods[0], host2.pods[1].addr, { count: 3 })).received).toBe(3);
    expect((await ping(host2.pods[1], host1.pods[0].addr, { count: 3 })).received).toBe(3);
  });

  it("reports a peer that is not on the same L2 network, with an error and a counter, and gives it no route", async () => {
    // 198.18.0.200 is reached through host2 as a router: a host-gw route there would drop everything.
    await host1.ns.ip("route add 198.18.0.200/32 via 198.18.0.12");
    try {
      await n1.backend.setPeer(peerOf("far", subnetOf(9), 0xc61200c8, { type: "host-gw" }));
      expect(n1.backend.counters().peersUnreachable).toBe(1);
      expect(n1.c.log.errors()).toContain(
        "cannot reach peer far: 198.18.0.200 is reached through gateway 198.18.0.12, not directly on eth0; host-gw needs every host on one L2 network (use vxlan, with DirectRouting, across routers)",
      );
      expect((await podRoutes(host1)).map((r) => r.dst)).not.toContain("198.19.9.0/24");

      // Once it is reachable directly, the next reconcile gives it its route.
      await host1.ns.ip("route del 198.18.0.200/32");
      await n1.backend.reconcile();
      expect(n1.backend.counters().peersUnreachable).toBe(0);
      expect((await podRoutes(host1)).find((r) => r.dst === "198.19.9.0/24")).toMatchObject({
        gateway: "198.18.0.200",
        dev: "eth0",
      });
      await n1.backend.removePeer("far");
      expect((await podRoutes(host1)).map((r) => r.dst)).not.toContain("198.19.9.0/24");
    } finally {
      await host1.ns.ip("route del 198.18.0.200/32").catch(() => undefined);
    }
  });

  it("reconcile() puts back a route deleted by hand and removes a stale one", async () => {
    await host1.ns.ip("route del 198.19.2.0/24");
    await host1.ns.ip("route add 198.19.88.0/24 via 198.18.0.12");
    await n1.backend.reconcile();
    const routes = await podRoutes(host1);
    expect(routes.find((r) => r.dst === "198.19.2.0/24")).toEqual({
      dst: "198.19.2.0/24",
      gateway: "198.18.0.12",
      dev: "eth0",
      flags: [],
    });
    expect(routes.map((r) => r.dst)).not.toContain("198.19.88.0/24");
    expect(n1.backend.counters().driftRepairs).toBe(2);
    expect((await ping(host1.pods[0], host2.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("removes the route of a peer removed while a round for another peer runs", async () => {
    const peer = (name: string, i: number) => peerOf(name, subnetOf(i), host2.underlayAddr, { type: "host-gw" });
    await Promise.all([n1.backend.setPeer(peer("a", 7)), n1.backend.setPeer(peer("b", 8))]);
    // b's next round is held in its first kernel read (the real one runs once released) until a is removed.
    const kernel = host1.ns.kernel;
    const read = kernel.ipJsonBatch.bind(kernel);
    let entered!: () => void;
    let release!: () => void;
    const inRound = new Promise<void>((r) => (entered = r));
    const held = new Promise<void>((r) => (release = r));
    const spy = vi.spyOn(kernel, "ipJsonBatch").mockImplementationOnce(async (lines, family) => {
      entered();
      await held;
      return read(lines, family);
    });
    try {
      const moved = n1.backend.setPeer(peer("b", 6));
      await inRound;
      const removed = n1.backend.removePeer("a");
      release();
      await Promise.all([moved, removed]);
    } finally {
      release();
      spy.mockRestore();
    }
    const dsts = (await podRoutes(host1)).map((r) => r.dst);
    expect(dsts).toContain("198.19.6.0/24");
    expect(dsts).not.toContain("198.19.7.0/24");
    expect(dsts).not.toContain("198.19.8.0/24");
    await n1.backend.removePeer("b");
    await n1.backend.reconcile();
    expect(n1.backend.counters().driftRepairs).toBe(2); // the earlier test's, no more
  });

  it("takes a route someone deleted after the round read it as removed, not as a kernel error", async () => {
    await n1.backend.setPeer(peerOf("c", subnetOf(5), host2.underlayAddr, { type: "host-gw" }));
    const kernel = host1.ns.kernel;
    const write = kernel.ipBatchForce.bind(kernel);
    const spy = vi.spyOn(kernel, "ipBatchForce").mockImplementationOnce(async (lines) => {
      await host1.ns.ip("route del 198.19.5.0/24");
      return write(lines);
    });
    const { kernelErrors } = n1.backend.counters();
    try {
      await n1.backend.removePeer("c");
      expect(spy).toHaveBeenCalledWith(["route del 198.19.5.0/24 via 198.18.0.12 dev eth0"]);
    } finally {
      spy.mockRestore();
    }
    expect(n1.backend.counters().kernelErrors).toBe(kernelErrors);
    expect(n1.c.log.errors().filter((m) => m.includes("kernel refused"))).toEqual([]);
  });

  it("after a kept restart, a peer set while reconcile checks the peers' reach keeps its route (not removed as no peer's)", async () => {
    const kept = peerOf("kept", subnetOf(5), host2.underlayAddr, { type: "host-gw" });
    await n1.backend.setPeer(kept);
    await n1.backend.stop(true);
    n1.backend = createBackend("host-gw", {}, n1.c.ctx);
    await n1.backend.start();
    await n1.backend.setPeer(peerFrom(n2));
    // `kept` is set while reconcile's `ip route get` for host2 runs (the real one, only timed).
    const kernel = host1.ns.kernel;
    const read = kernel.ipJsonBatch.bind(kernel);
    let set: Promise<void> | undefined;
    const spy = vi.spyOn(kernel, "ipJsonBatch").mockImplementation(async (lines, family) => {
      const answer = read(lines, family);
      if (!set && lines[0]?.startsWith("route get")) set = n1.backend.setPeer(kept);
      return answer;
    });
    try {
      await n1.backend.reconcile();
      await set;
      spy.mockRestore();
      expect(set).toBeDefined();
      // The round's peers lacked it: its kept route was removed as no peer's (drift) and put back
      // by its own round.
      expect(n1.backend.counters().driftRepairs).toBe(0);
      expect((await podRoutes(host1)).map((r) => r.dst)).toContain("198.19.5.0/24");
    } finally {
      spy.mockRestore();
      await n1.backend.removePeer("kept");
    }
    // What the round left for the next (full) one: nothing drifted, nothing of `kept` left.
    await n1.backend.reconcile();
    expect(n1.backend.counters().driftRepairs).toBe(0);
    expect((await podRoutes(host1)).map((r) => r.dst)).not.toContain("198.19.5.0/24");
  });

  it("refuses to start when the public address is not on the underlay interface (NAT)", async () => {
    const b = createBackend("host-gw", {}, { ...n1.c.ctx, underlay: { ...n1.c.ctx.underlay, addr: 0xc61200fe } });
    await expect(b.start()).rejects.toThrow(
      /host-gw needs the public address 198\.18\.0\.254 on eth0 \(it has 198\.18\.0\.11\)/,
    );
  });

  it("removePeer and stop(false) leave only the host's own subnet route", async () => {
    await n1.backend.removePeer("host2");
    expect((await podRoutes(host1)).map((r) => r.dst)).toEqual(["198.19.1.0/24"]);
    await n2.backend.stop(false);
    expect((await podRoutes(host2)).map((r) => `${r.dst} ${r.dev}`)).toEqual(["198.19.2.0/24 cni0"]);
  });

  it("a route the kernel refuses to remove at stop(false) is logged as staying: no reconcile follows a stop", async () => {
    const { logger, log } = loggedTo();
    const b = createBackend("host-gw", {}, { ...n1.c.ctx, logger });
    await b.start();
    await b.setPeer(peerFrom(n2));
    expect((await podRoutes(host1)).map((r) => r.dst)).toContain("198.19.2.0/24");
    // ip refuses every batch removing a route, as a kernel refusal would.
    const ip = await refusingTool("ip");
    await ip.refuse("^route del");
    const path = process.env.PATH;
    process.env.PATH = `${ip.bin}:${path}`;
    try {
      await b.stop(false);
    } finally {
      process.env.PATH = path;
      await ip.remove();
    }
    const refused = log.errors().filter((m) => m.includes("route del 198.19.2.0/24"));
    expect(refused.length).toBeGreaterThan(0);
    // Before, it said "reconcile will try again", which no reconcile of a stopped backend does.
    for (const m of refused) expect(m).toMatch(/while the backend stopped: .*; it stays .*remove it by hand$/);
    await host1.ns.ip("route del 198.19.2.0/24");
  });
});
