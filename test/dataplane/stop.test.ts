// A dataplane's stop closes its device and sockets even when destroying its worker pool fails:
// left open, the sockets would stay in their SO_REUSEPORT group, which a new backend's sockets
// on the same address and port then join (half its datagrams to a dead socket).
import { Piscina } from "piscina";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { LinkStats } from "../../src/io/link-stats.js";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { portOf, startDataplane } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("stopping a userspace dataplane", () => {
  let lab: LabCluster;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "dpclose", hosts: 1 });
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("closes its sockets when the worker pool's destroy fails", async () => {
    const h = lab.hosts[0];
    const dp = await startDataplane(h, 1);
    const destroy = Piscina.prototype.destroy;
    const spy = vi.spyOn(Piscina.prototype, "destroy").mockImplementationOnce(async function (this: Piscina) {
      await destroy.call(this);
      throw new Error("destroy failed");
    });
    try {
      await expect(dp.stop()).rejects.toThrow("destroy failed");
    } finally {
      spy.mockRestore();
    }
    // Without reusePort, the bind fails while any socket of the group is open.
    const socket = withNetns(h.ns.name, () =>
      UdpSocket.open({ address: h.underlayAddr, port: portOf("vxlan"), reusePort: false }),
    );
    socket.close();
  });

  it("stops when its TUN device's drops cannot be read as it closes, and counts them no more", async () => {
    // Only a counter: before, the throw failed the stop (the agent's AGENT_BACKEND_STOP_FAILED).
    const dp = await startDataplane(lab.hosts[0], 1);
    const spy = vi.spyOn(LinkStats.prototype, "txDropped").mockImplementationOnce(() => {
      throw Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" });
    });
    try {
      await dp.stop();
    } finally {
      spy.mockRestore();
    }
    expect(dp.counters()).not.toHaveProperty("tunRingDrops");
  });
});
