// Worker threads started after weft was installed anew under a running dataplane (npm install -g
// before systemctl restart), as a crash's restart, a backend restart or swap start them: weft runs
// from a copy of itself whose build/weft.wasm or dist/ is then replaced. Before, each thread
// compiled build/weft.wasm from disk (the new module over the main thread's memory and layout) and
// ran whatever dist/ held. Now it instantiates the module the main thread compiled, and refuses to
// run JavaScript of another build than the main thread's (DATAPLANE_WORKER_BUILD_MISMATCH, the
// dataplane reported failed). Host 1 runs the dataplane in a process of its own
// (test/kernel/fixtures/dataplane-host.mjs), host 2 the kernel's vxlan device as its peer.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUILD_ID } from "../../src/build-id.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { until } from "../io/until.js";
import { type CopiedDataplane, startCopiedDataplane } from "../support/copied-dataplane.js";
import { dataplaneHostOptions, kernelVxlanNode, macOf, mtuOf, peerOf, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("dataplane worker threads started after an install under the agent", () => {
  let lab: LabCluster;
  let dp: CopiedDataplane | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "wbuild", hosts: 2 });
    const [h1, h2] = lab.hosts;
    await lab.addPods(h1, subnetOf(1), 1, mtuOf("vxlan"));
    await lab.addPods(h2, subnetOf(2), 1, mtuOf("vxlan"));
    await kernelVxlanNode(h2, 2, h1, 1);
    // A copy whose weft.wasm and build id the tests replace.
    dp = await startCopiedDataplane(h1, ["dist", "build"], {
      options: dataplaneHostOptions(h1, 1, { workers: 2 }),
      peer: { ...peerOf(h2, 2), vtepMac: [...macOf(2)] },
    });
  });

  afterAll(async () => {
    dp?.close();
    await lab?.destroy();
  });

  const podPing = () => ping(lab.hosts[0].pods[0], lab.hosts[1].pods[0].addr, { count: 2, timeoutS: 1 });

  it("restarts killed workers on the main thread's Wasm module, not the file on disk", async () => {
    expect((await pingWhenRouted(lab.hosts[0].pods[0], lab.hosts[1].pods[0].addr)).received).toBe(2);
    const { out, counters } = dp!;
    await until("the workers serving", async () => ((await counters()).workersDown === 0 ? true : undefined), 5000);
    // Not a Wasm module at all: a thread that compiled the file would die at every start.
    writeFileSync(join(dp!.dir, "build", "weft.wasm"), "a newer install's module");
    dp!.child.stdin!.write("kill\n");
    await until("the workers killed", () => (out.includes("killed 2") ? true : undefined), 5000);
    await until(
      "the workers serving again",
      async () => ((await counters()).workersDown === 0 ? true : undefined),
      10_000,
    );
    expect((await podPing()).received).toBe(2);
    expect((await counters()).workerRestarts).toBe(2);
    expect(out.filter((l) => l.startsWith("failed "))).toEqual([]);
  });

  it("refuses a worker whose JavaScript is another build than the main thread's, and says so once", async () => {
    const { counters, logged } = dp!;
    writeFileSync(join(dp!.dir, "dist", "src", "build-id.js"), 'export const BUILD_ID = "a-newer-install";\n');
    expect(await dp!.killUntilFailed()).toEqual(["failed DATAPLANE_WORKER_BUILD_MISMATCH"]);
    // Each killed worker's restart refused; the first said at error, the other at debug.
    await until("both refusals logged", () =>
      logged("DATAPLANE_WORKER_BUILD_MISMATCH").length === 2 ? true : undefined,
    );
    const [first, second] = logged("DATAPLANE_WORKER_BUILD_MISMATCH");
    expect(first).toMatchObject({ level: 50, msg: "dataplane worker refused to start" });
    expect(second.level).toBe(20);
    expect(first.err.message).toContain(`weft build a-newer-install from disk, the running agent is build ${BUILD_ID}`);
    expect(first.err.message).toContain("restart the agent");
    // Refused, not restarted over and over: both workers stay down, forwarding nothing.
    expect(await counters()).toMatchObject({ workersDown: 2, workerRestarts: 4 });
    expect((await podPing()).received).toBe(0);
    expect(logged("DATAPLANE_WORKER_CRASH_LOOP")).toEqual([]);
    expect(await dp!.stop()).toEqual({ code: 0 });
  });
});
