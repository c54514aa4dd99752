// The agent's /metrics registry over a real wasm-vxlan backend in a lab host and a real control
// plane (gossip on 127.0.0.1): one scrape reads the dataplane's counters once, and without the
// per-peer sums no metric shows; the unreachable peers are a gauge that falls when a peer becomes
// reachable again, while no counter ever falls; the process metrics are weft_process_* and
// weft_nodejs_* (before, weft_process_process_* and weft_process_nodejs_*).
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { agentMetrics } from "../../src/agent/metrics.js";
import { KernelStats } from "../../src/backends/backend.js";
import type { ControlPlane } from "../../src/control/control-plane.js";
import { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { peerFrom, peerOf, removeLab, startNode, subnetOf, type LabNode } from "../backends/support.js";
import { loopbackPlane } from "../support/loopback-plane.js";
import { until } from "../io/until.js";
import { counterSamples } from "./support.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

describe.skipIf(!canUseNetns())("agent metrics", () => {
  let lab: LabCluster;
  let node: LabNode;
  let control: ControlPlane;
  let close: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "amt", hosts: 2 });
    node = await startNode(lab.hosts[0], 1, "wasm-vxlan");
    ({ plane: control, close } = await loopbackPlane("host1"));
  });

  afterAll(async () => {
    await close?.();
    await removeLab(lab, [node]);
  });

  const registry = () =>
    agentMetrics(
      control,
      () => [{ family: 4, backend: node.backend }],
      () => node.backend.counters(),
      () => [],
      () => undefined,
    );

  it("reads the dataplane's counters once per scrape, without the per-peer sums", async () => {
    const metrics = registry();
    const counters = vi.spyOn(UserspaceDataplane.prototype, "counters");
    try {
      const text = await metrics.metrics();
      expect(text).toMatch(/^weft_dataplane_memory_bytes\{backend="wasm-vxlan",family="4"\} [1-9]\d*$/m);
      expect(counters).toHaveBeenCalledTimes(1);
      expect(counters.mock.results[0].value).not.toHaveProperty("peers");
      // And again at the next scrape: nothing kept from the last one.
      await metrics.metrics();
      expect(counters).toHaveBeenCalledTimes(2);
    } finally {
      counters.mockRestore();
    }
  });

  it("names the process metrics weft_process_* and weft_nodejs_*, and the trusted checksums by family alone (rx only)", async () => {
    const text = await registry().metrics();
    expect(text).toMatch(/^weft_process_cpu_seconds_total \S+$/m);
    expect(text).toMatch(/^weft_nodejs_heap_size_used_bytes \S+$/m);
    expect(text).not.toMatch(/weft_process_(process|nodejs)_/);
    // A sent packet's inner checksum is never checked: a tx series would always read 0.
    expect([...text.matchAll(/^weft_dataplane_checksum_trusted_total(\S*) /gm)].map((m) => m[1])).toEqual([
      '{family="4"}',
    ]);
  });

  it("shows unreachable peers as a gauge that falls when the peer is reachable again; no counter falls", async () => {
    const metrics = registry();
    const unreachable = (text: string) => Number(/^weft_peers_unreachable\{family="4"\} (\d+)$/m.exec(text)?.[1]);
    const peer = peerOf("other", subnetOf(2), 0xc6120063, node.announced); // 198.18.0.99
    await node.backend.setPeer({ ...peer, backend: { ...peer.backend, vni: 99 } });
    const before = await metrics.metrics();
    expect(before).toMatch(/^# TYPE weft_peers_unreachable gauge$/m);
    expect(unreachable(before)).toBe(1);
    await node.backend.setPeer(peer);
    const after = await metrics.metrics();
    expect(unreachable(after)).toBe(0);
    const was = counterSamples(before);
    expect(was.size).toBeGreaterThan(10);
    for (const [series, value] of counterSamples(after))
      expect(value, series).toBeGreaterThanOrEqual(was.get(series) ?? 0);
    await node.backend.removePeer("other");
  });

  it("counts sends that fail, for want of a route to the peer's underlay address, beside the other I/O errors", async () => {
    const metrics = registry();
    const errors = (text: string, op: string) =>
      Number(new RegExp(`^weft_dataplane_io_errors_total\\{family="4",op="${op}"\\} (\\d+)$`, "m").exec(text)?.[1]);
    const host = lab.hosts[0];
    await host.ns.ip("route add unreachable 198.18.0.250/32");
    await node.backend.setPeer(peerOf("far", subnetOf(3), 0xc61200fa, node.announced));
    try {
      // From the host itself: its route to the pod network goes through the TUN device.
      const pings = host.ns.exec(["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.19.3.1"]);
      await expect(pings).rejects.toThrow();
      const text = await metrics.metrics();
      expect(errors(text, "send")).toBe(3);
      expect(errors(text, "tun-read")).toBe(0);
      expect(errors(text, "tun-write")).toBe(0);
    } finally {
      await node.backend.removePeer("far");
      await host.ns.ip("route del unreachable 198.18.0.250/32");
    }
  });

  it("counts sends whose UDP GSO message the kernel refused as larger than the path's MTU (the underlay's MTU lowered)", async () => {
    const metrics = registry();
    const tooBig = (text: string) =>
      Number(/^weft_dataplane_udp_gso_too_big_total\{family="4"\} (\d+)$/m.exec(text)?.[1]);
    expect(tooBig(await metrics.metrics())).toBe(0);
    const [h1, h2] = lab.hosts;
    await lab.addPods(h1, subnetOf(1), 1, 1450);
    await lab.addPods(h2, subnetOf(2), 1, 1450);
    const other = await startNode(h2, 2, "wasm-vxlan");
    try {
      await Promise.all([node.backend.setPeer(peerFrom(other)), other.backend.setPeer(peerFrom(node))]);
      await h1.ns.ip(`link set ${h1.underlayIf} mtu 1400`);
      const { sent, received } = await tcpTransfer(h1.pods[0], h2.pods[0], 2_000_000);
      expect(received).toEqual(sent);
      const text = await metrics.metrics();
      expect(tooBig(text)).toBeGreaterThan(0);
      expect(tooBig(text)).toBe(Number(node.backend.dataplaneCounters!().io.udpGsoTooBig));
    } finally {
      await h1.ns.ip(`link set ${h1.underlayIf} mtu 1500`);
      await node.backend.removePeer(other.host.name);
      await other.backend.stop(false);
      other.c.cleanup();
    }
  });

  it("a kernel backend whose rounds fail (its underlay NIC gone) counts each as a refused command: no sample falls", async () => {
    const vx = await startNode(lab.hosts[1], 2, "vxlan");
    try {
      await vx.backend.setPeer(peerFrom(node));
      const metrics = agentMetrics(
        control,
        () => [{ family: 4, backend: vx.backend }],
        () => vx.backend.counters(),
        () => [],
        () => undefined,
      );
      const before = await metrics.metrics();
      // flannel.1 cannot be made again without its underlay device: every reconcile fails whole.
      await lab.hosts[1].ns.ip("link del flannel.1");
      await lab.hosts[1].ns.ip(`link del ${lab.hosts[1].underlayIf}`);
      for (let i = 0; i < 3; i++) await expect(vx.backend.reconcile()).rejects.toThrow();
      const c = vx.backend.counters();
      expect(c.kernelErrors).toBeGreaterThanOrEqual(3);
      // Before, a failed round added an error alone: ok (commands - errors) fell.
      expect(c.kernelErrors).toBeLessThanOrEqual(c.kernelCommands);
      const was = counterSamples(before);
      for (const [series, value] of counterSamples(await metrics.metrics()))
        expect(value, series).toBeGreaterThanOrEqual(was.get(series) ?? 0);
    } finally {
      await vx.backend.stop(false).catch(() => undefined);
    }
  });

  it("counts weft_kernel_programming_total by KernelStats' one rule: errors never outrun commands, ok never falls", async () => {
    const stats = new KernelStats();
    const metrics = agentMetrics(
      control,
      () => [],
      () => ({ ...stats.counters(), peersUnreachable: 0 }),
      () => [],
      () => undefined,
      { ready: () => true, backendRestarts: () => [], logLinesDropped: () => 0, httpRefused: () => undefined },
    );
    let was = counterSamples(await metrics.metrics());
    // Failed rounds and reads, batches with refusals (one refusing more lines than it sent), one taken whole.
    const steps = [() => stats.refused(), () => stats.done(4, 3), () => stats.done(0, 2), () => stats.done(2)];
    for (const step of steps) {
      step();
      const c = stats.counters();
      expect(c.kernelErrors).toBeLessThanOrEqual(c.kernelCommands);
      const text = await metrics.metrics();
      expect(text).toMatch(/^weft_ready 1$/m);
      // Before, the metric held ok at its highest against counts that outran the commands.
      for (const [result, n] of [
        ["ok", c.kernelCommands - c.kernelErrors],
        ["error", c.kernelErrors],
      ] as const)
        expect(text).toMatch(new RegExp(`^weft_kernel_programming_total\\{result="${result}"\\} ${n}$`, "m"));
      const now = counterSamples(text);
      for (const [series, value] of now) expect(value, series).toBeGreaterThanOrEqual(was.get(series) ?? 0);
      was = now;
    }
    expect(stats.counters()).toEqual({ kernelCommands: 9, kernelErrors: 6, driftRepairs: 0 });
  });

  it("shows the dataplane's workers not serving their queue pairs as a gauge, 0 once they serve", async () => {
    await until("the workers serving", () => (node.backend.dataplaneCounters!().workersDown === 0 ? true : undefined));
    expect(await registry().metrics()).toMatch(/^weft_dataplane_workers_down\{family="4"\} 0$/m);
  });

  it("counts socket drops by family: one family's dataplane gone lowers no sample", async () => {
    const both = {
      sockets: 4,
      drops: 12,
      families: [
        { family: 4 as const, sockets: 2, drops: 5 },
        { family: 6 as const, sockets: 2, drops: 7 },
      ],
    };
    let drops = both;
    const metrics = agentMetrics(
      control,
      () => [],
      () => ({ kernelCommands: 0, kernelErrors: 0, peersUnreachable: 0, driftRepairs: 0 }),
      () => [],
      () => drops,
    );
    const before = await metrics.metrics();
    expect(before).toMatch(/^weft_dataplane_socket_drops_total\{family="6"\} 7$/m);
    // The IPv6 dataplane replaced: its sockets closed, the IPv4 one's count goes on.
    drops = { sockets: 2, drops: 6, families: [{ family: 4, sockets: 2, drops: 6 }] };
    const after = counterSamples(await metrics.metrics());
    expect(after.get('weft_dataplane_socket_drops_total{family="4"}')).toBe(6);
    for (const [series, value] of counterSamples(before))
      if (after.has(series)) expect(after.get(series), series).toBeGreaterThanOrEqual(value);
  });
});
