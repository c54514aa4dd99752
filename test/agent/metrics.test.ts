// The agent's /metrics registry over a real wasm-vxlan backend in a lab host and a real control
// plane (gossip on 127.0.0.1): one scrape reads the dataplane's counters once, and without the
// per-peer sums no metric shows.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { agentMetrics } from "../../src/agent/metrics.js";
import type { ControlPlane } from "../../src/control/control-plane.js";
import { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { removeLab, startNode, type LabNode } from "../backends/support.js";
import { loopbackPlane } from "../support/loopback-plane.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("agent metrics", () => {
  let lab: LabCluster;
  let node: LabNode;
  let control: ControlPlane;
  let close: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "amt", hosts: 1 });
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
});
