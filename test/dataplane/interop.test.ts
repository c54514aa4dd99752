// Wire compatibility with the Linux kernel: host1 runs the kernel's vxlan device exactly as
// flannel programs it, host2 runs weft's userspace dataplane in the VXLAN format. Pods must reach
// each other both ways, with ping and with an exact TCP transfer.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { kernelPeerPair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;

describe.skipIf(!canUseNetns())("wasm-vxlan against a kernel vxlan peer", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    ({ lab, dp } = await kernelPeerPair("interop"));
  });

  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("pings both ways", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    expect((await ping(p1, p2.addr)).received).toBe(3);
    expect((await ping(p2, p1.addr)).received).toBe(3);
  });

  it("carries TCP exactly from the kernel peer to weft and back", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const there = await tcpTransfer(p1, p2, 50 * MB);
    expect(there.received).toEqual(there.sent);
    const back = await tcpTransfer(p2, p1, 50 * MB);
    expect(back.received).toEqual(back.sent);
    const c = dp.counters({ peers: true });
    expect(c.rx.packets.SPOOFED + c.rx.packets.UNKNOWN_SOURCE).toBe(0n);
    expect(c.peers![lab.hosts[0].name].rxBytes).toBeGreaterThan(50n * BigInt(MB));
  });
});
