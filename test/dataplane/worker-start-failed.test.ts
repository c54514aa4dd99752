// A dataplane worker thread that cannot start: weft runs from a copy of itself whose dist/ is
// removed under the running dataplane, as an in-place upgrade would (a pids limit or an out-of-memory
// thread start does the same). When a worker dies, piscina's replacement thread fails to import
// worker.js; piscina then emits 'error' on the pool (an uncaught exception without a listener: the
// process exited) and replaces no dead thread again (a task given to it still starts one, which
// fails the same way), so the dead worker's task waited in its queue for ever, and stop(), which
// waited for it, never returned. Now the dataplane reports itself failed
// (DATAPLANE_WORKER_START_FAILED, for its owner to start a new one), logs it once at error (each
// later failed start at debug), counts the workers down, and stops. Two workers, so at least two
// failed starts (piscina may report more, as timing goes). The dataplane runs in a process of its
// own (test/kernel/fixtures/dataplane-host.mjs).
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabCluster } from "../../src/lab/cluster.js";
import { until } from "../io/until.js";
import { type CopiedDataplane, startCopiedDataplane } from "../support/copied-dataplane.js";
import { dataplaneHostOptions } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("a dataplane whose replacement worker thread cannot start", () => {
  let lab: LabCluster;
  let dp: CopiedDataplane | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "wstart", hosts: 1 });
    const h = lab.hosts[0];
    // A copy the test may change: its dist/ goes.
    dp = await startCopiedDataplane(h, ["dist"], { options: dataplaneHostOptions(h, 1, { workers: 2 }) });
  });

  afterAll(async () => {
    dp?.close();
    await lab?.destroy();
  });

  it("reports itself failed once, logs it once at error, counts the workers down, and stops, the process alive throughout", async () => {
    // The workers have imported worker.js and serve their pairs before the files go.
    const { counters } = dp!;
    await until("the workers serving", async () => ((await counters()).workersDown === 0 ? true : undefined), 5000);
    rmSync(join(dp!.dir, "dist"), { recursive: true });
    expect(await dp!.killUntilFailed()).toEqual(["failed DATAPLANE_WORKER_START_FAILED"]);
    const c = await counters();
    expect(c.workersDown).toBe(2);
    expect(c.workerRestarts).toBe(2);
    const startFailures = () => dp!.logged("DATAPLANE_WORKER_START_FAILED");
    await until("both threads' start failures logged", () => (startFailures().length >= 2 ? true : undefined));
    expect(await dp!.stop()).toEqual({ code: 0 });
    // Reported once: every later one at debug (all were at error). How many 'error' events the
    // pool emits depends on timing (2 to 4 seen: a task given to the pool starts another thread).
    const failed = startFailures();
    const [first, ...later] = failed.map((l) => l.level);
    expect(first).toBe(50);
    expect(later.length).toBeGreaterThanOrEqual(1);
    expect(
      later.every((level) => level === 20),
      `levels: ${[first, ...later]}`,
    ).toBe(true);
    expect(failed[0]).toMatchObject({ msg: "dataplane worker thread failed to start" });
    expect(failed[0].err.message).toMatch(/^a dataplane worker thread failed to start \(ERR_MODULE_NOT_FOUND;/);
    expect(await lab.hosts[0].ns.ip("-o link show")).not.toContain(": weft0:");
  });
});
