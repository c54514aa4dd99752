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
import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabCluster } from "../../src/lab/cluster.js";
import { projectFile } from "../../src/paths.js";
import { until } from "../io/until.js";
import { dataplaneHostOptions } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { FIXTURES } from "../support/preload.js";

describe.skipIf(!canUseNetns())("a dataplane whose replacement worker thread cannot start", () => {
  let dir: string;
  let lab: LabCluster;
  let child: ChildProcess | undefined;
  const out: string[] = [];
  let stderr = "";

  beforeAll(async () => {
    // A copy the test may change: dist/ copied (modules resolve through symlinks to their real
    // path, which would be the project's own), the rest linked.
    dir = mkdtempSync(join(tmpdir(), "weft-upgrade-"));
    cpSync(projectFile("dist"), join(dir, "dist"), { recursive: true });
    cpSync(projectFile("package.json"), join(dir, "package.json"));
    for (const d of ["node_modules", "native", "build"]) symlinkSync(projectFile(d), join(dir, d));
    mkdirSync(join(dir, "test", "kernel", "fixtures"), { recursive: true });
    cpSync(join(FIXTURES, "dataplane-host.mjs"), join(dir, "test", "kernel", "fixtures", "dataplane-host.mjs"));
    lab = await LabCluster.create({ tag: "wstart", hosts: 1 });
    const h = lab.hosts[0];
    const options = dataplaneHostOptions(h, 1, { workers: 2 });
    const [cmd, ...argv] = h.ns.wrap([
      process.execPath,
      join(dir, "test", "kernel", "fixtures", "dataplane-host.mjs"),
      JSON.stringify({ options }),
    ]);
    child = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
    child.stderr!.on("data", (d) => (stderr += d));
    createInterface({ input: child.stdout! }).on("line", (l) => out.push(l));
    await until("the dataplane to start", () => (out.includes("ready") ? true : undefined), 15_000);
  });

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill("SIGKILL");
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The child's counters, asked for on stdin. */
  const counters = async (): Promise<{ workersDown: number; workerRestarts: number }> => {
    const from = out.length;
    child!.stdin!.write("counters\n");
    const line = await until("counters", () => out.slice(from).find((l) => l.startsWith("{")), 5000);
    return JSON.parse(line);
  };
  const exited = () => (child!.exitCode !== null || child!.signalCode !== null ? { code: child!.exitCode } : undefined);

  it("reports itself failed once, logs it once at error, counts the workers down, and stops, the process alive throughout", async () => {
    // The workers have imported worker.js and serve their pairs before the files go.
    await until("the workers serving", async () => ((await counters()).workersDown === 0 ? true : undefined), 5000);
    rmSync(join(dir, "dist"), { recursive: true });
    child!.stdin!.write("kill\n");
    await until(
      "the dataplane to report itself failed",
      () => (out.some((l) => l.startsWith("failed ")) || exited() ? true : undefined),
      15_000,
    );
    expect(exited(), `the process exited; its stderr:\n${stderr}`).toBeUndefined();
    expect(out.filter((l) => l.startsWith("failed "))).toEqual(["failed DATAPLANE_WORKER_START_FAILED"]);
    const c = await counters();
    expect(c.workersDown).toBe(2);
    expect(c.workerRestarts).toBe(2);
    const startFailures = () =>
      stderr
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .filter((l) => l.err?.code === "DATAPLANE_WORKER_START_FAILED");
    await until("both threads' start failures logged", () => (startFailures().length >= 2 ? true : undefined));
    child!.stdin!.write("stop\n");
    expect(await until("stop() to return and the process to exit", exited, 15_000)).toEqual({ code: 0 });
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
