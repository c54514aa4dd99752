// A userspace dataplane whose TUN device is deleted under it (by hand, by another program): its
// workers end with DATAPLANE_TUN_GONE instead of dying on the read error (EBADFD) and being
// restarted forever, every second at most, while the device stays gone; its owner hears it once
// (onFailed: the agent then runs a new backend, test/agent/tun-gone.test.ts).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { until } from "../io/until.js";
import { hostCtx, type HostCtx } from "../backends/support.js";
import { startDataplane, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("userspace dataplane without its TUN device", () => {
  let lab: LabCluster;
  let c: HostCtx;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "tungone", hosts: 1 });
    c = hostCtx(lab.hosts[0], subnetOf(1));
  });
  afterAll(async () => {
    await dp?.stop();
    c?.cleanup();
    await lab?.destroy();
  });

  it("ends each worker with DATAPLANE_TUN_GONE once the device is deleted, restarting none, and tells its owner once", async () => {
    const told: string[] = [];
    dp = await startDataplane(lab.hosts[0], 1, "vxlan", {
      logger: c.ctx.logger,
      workers: 2,
      onFailed: (err) => told.push(err.code),
    });
    await lab.hosts[0].ns.ip("link del weft0");
    const gone = () =>
      c.log.lines.filter((l) => (l.err as { code?: string } | undefined)?.code === "DATAPLANE_TUN_GONE");
    await until("both workers to end", () => (gone().length === 2 ? true : undefined));
    expect(gone()[0].msg).toBe("dataplane worker ended: its TUN device is gone");
    expect(dp.counters().workerRestarts).toBe(0);
    expect(dp.counters().io.tunReadErrors).toBe(0n);
    expect(told).toEqual(["DATAPLANE_TUN_GONE"]);
  });
});
