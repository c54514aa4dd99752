// A dataplane worker that dies is logged as DATAPLANE_WORKER_DIED with its error's own code: a
// thrown error crossed from the worker thread with its message and stack only (structured clone
// drops an Error's own fields), so the log said "died" without the code that says why.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { errorData, reviveError } from "../../src/dataplane/queue-task.js";
import { WeftError } from "../../src/errors.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { hostCtx, type HostCtx } from "../backends/support.js";
import { until } from "../io/until.js";
import { startDataplane, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe("a worker's error as data", () => {
  it("crosses a structured clone with its code and detail, a WeftError again", () => {
    const thrown = new WeftError("HOTPATH_NOT_BUILT", "build it", { detail: "ls: no weft.wasm" });
    const back = reviveError(structuredClone(errorData(thrown)));
    expect(back).toBeInstanceOf(WeftError);
    expect(back).toMatchObject({ code: "HOTPATH_NOT_BUILT", detail: "ls: no weft.wasm", message: "build it" });
    expect(back.stack).toBe(thrown.stack);
  });
});

describe.skipIf(!canUseNetns())("userspace dataplane whose workers die", () => {
  let lab: LabCluster;
  let c: HostCtx;
  let dp: UserspaceDataplane | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "wdied", hosts: 1 });
    c = hostCtx(lab.hosts[0], subnetOf(1));
  });
  afterAll(async () => {
    await dp?.stop();
    c?.cleanup();
    await lab?.destroy();
  });

  it("logs each death with the error's code and the wait before the restart, which doubles", async () => {
    // The addon refuses a nice value outside -20..19 (RangeError, ERR_OUT_OF_RANGE) in each
    // worker's first call, so every run of the task dies the same way.
    dp = await startDataplane(lab.hosts[0], 1, "vxlan", { logger: c.ctx.logger, workers: 1, nice: 20 });
    const died = () => c.log.lines.filter((l) => l.code === "DATAPLANE_WORKER_DIED");
    await until("three deaths", () => (died().length >= 3 ? true : undefined));
    await dp.stop();
    const lines = died();
    expect(dp.counters().workerRestarts).toBe(lines.length);
    expect(lines[0].level).toBe(40);
    expect(lines[0].msg).toMatch(/^dataplane worker died \(ERR_OUT_OF_RANGE\); .*report it/);
    expect(lines[0].err).toMatchObject({ name: "RangeError", code: "ERR_OUT_OF_RANGE" });
    expect((lines[0].err as { message: string }).message).toMatch(/^nice must be in \[-20, 19\], got 20/);
    expect(lines.slice(0, 3).map((l) => l.retryInMs)).toEqual([10, 20, 40]);
  });

  // Before, such a worker was restarted for ever, once a second, and the node stayed ready while
  // its queue pairs' flows went nowhere.
  it("reports itself failed once a worker died 8 times in a row, counts it down meanwhile, and stops", async () => {
    await dp?.stop();
    c.log.lines.length = 0;
    const told: string[] = [];
    dp = await startDataplane(lab.hosts[0], 1, "vxlan", {
      logger: c.ctx.logger,
      workers: 1,
      nice: 20,
      onFailed: (err) => told.push(err.code),
    });
    const died = () => c.log.lines.filter((l) => l.code === "DATAPLANE_WORKER_DIED");
    await until("the report", () => (told.length > 0 ? true : undefined), 10_000);
    expect(told).toEqual(["DATAPLANE_WORKER_CRASH_LOOP"]);
    expect(died().length).toBeGreaterThanOrEqual(8);
    expect(dp.counters().workersDown).toBe(1);
    const report = c.log.lines.filter((l) => (l.err as { code?: string })?.code === "DATAPLANE_WORKER_CRASH_LOOP");
    expect(report).toHaveLength(1);
    expect(report[0]).toMatchObject({ level: 50, msg: "dataplane worker keeps dying", worker: 0 });
    expect((report[0].err as { message: string }).message).toMatch(/died 8 times in a row \(ERR_OUT_OF_RANGE;/);
    // Restarts go on until the owner stops it; the owner hears it once.
    await until("a ninth death", () => (died().length >= 9 ? true : undefined), 5000);
    await dp.stop();
    expect(told).toEqual(["DATAPLANE_WORKER_CRASH_LOOP"]);
  });

  it("counts no worker down while they serve", async () => {
    await dp?.stop();
    dp = await startDataplane(lab.hosts[0], 1, "vxlan", { logger: c.ctx.logger, workers: 2 });
    await until("both workers serving", () => (dp!.counters().workersDown === 0 ? true : undefined), 10_000);
    expect(dp.counters().workerRestarts).toBe(0);
  });
});
