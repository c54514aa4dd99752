// Worker threads started after weft was installed anew under a running dataplane (npm install -g
// before systemctl restart), as a crash's restart, a backend restart or swap start them: weft runs
// from a copy of itself whose build/weft.wasm or dist/ is then replaced. Before, each thread
// compiled build/weft.wasm from disk (the new module over the main thread's memory and layout) and
// ran whatever dist/ held. Now it instantiates the module the main thread compiled, and refuses to
// run JavaScript of another build than the main thread's (DATAPLANE_WORKER_BUILD_MISMATCH, the
// dataplane reported failed). Host 1 runs the dataplane in a process of its own
// (test/kernel/fixtures/dataplane-host.mjs), host 2 the kernel's vxlan device as its peer.
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUILD } from "../../src/build-id.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { until } from "../io/until.js";
import { type CopiedDataplane, startCopiedDataplane } from "../support/copied-dataplane.js";
import { dataplaneHostOptions, kernelVxlanNode, macOf, mtuOf, peerOf, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { projectFile } from "../../src/paths.js";

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
    writeFileSync(join(dp!.dir, "dist", "build-id.json"), '{"id":"a-newer-install","wasm":"0"}\n');
    expect(await dp!.killUntilFailed()).toEqual(["failed DATAPLANE_WORKER_BUILD_MISMATCH"]);
    // Each killed worker's restart refused; the first said at error, the other at debug.
    await until("both refusals logged", () =>
      logged("DATAPLANE_WORKER_BUILD_MISMATCH").length === 2 ? true : undefined,
    );
    const [first, second] = logged("DATAPLANE_WORKER_BUILD_MISMATCH");
    expect(first).toMatchObject({ level: 50, msg: "dataplane worker refused to start" });
    expect(second.level).toBe(20);
    expect(first.err.message).toContain(`weft build a-newer-install from disk, the running agent is build ${BUILD.id}`);
    expect(first.err.message).toContain("restart the agent");
    // Refused, not restarted over and over: both workers stay down, forwarding nothing.
    expect(await counters()).toMatchObject({ workersDown: 2, workerRestarts: 4 });
    expect((await podPing()).received).toBe(0);
    expect(logged("DATAPLANE_WORKER_CRASH_LOOP")).toEqual([]);
    expect(await dp!.stop()).toEqual({ code: 0 });
  });
});

// The module is compiled at the first userspace dataplane, which a SIGHUP swap may start long after
// the agent loaded its code: a weft.wasm installed meanwhile is another build's, which the old
// JavaScript would run with no error (an assembly-only change kept the JavaScript's id, too).
describe("the hot path's module compiled after an install under the agent", () => {
  it("is refused when build/weft.wasm is not the module the running code's build recorded", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-copy-"));
    try {
      for (const d of ["dist", "build", "package.json"]) cpSync(projectFile(d), join(dir, d), { recursive: true });
      symlinkSync(projectFile("node_modules"), join(dir, "node_modules"));
      // Loads the code, as the agent does at its start, then compiles the module when told.
      const script = `import { createInterface } from "node:readline";
        const { hotPathModule } = await import(${JSON.stringify(join(dir, "dist", "src", "hotpath", "module.js"))});
        console.log("loaded");
        for await (const _ of createInterface({ input: process.stdin })) {
          try { hotPathModule(); console.log("compiled"); } catch (err) { console.log(err.code, err.message); }
          break;
        }`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["pipe", "pipe", "inherit"],
      });
      const out: string[] = [];
      createInterface({ input: child.stdout! }).on("line", (l) => out.push(l));
      await until("the code loaded", () => (out.includes("loaded") ? true : undefined), 10_000);
      // Another build's module: valid Wasm, so only the hash tells it apart.
      writeFileSync(join(dir, "build", "weft.wasm"), Uint8Array.of(0, 0x61, 0x73, 0x6d, 1, 0, 0, 0));
      child.stdin!.end("compile\n");
      const line = await until("the answer", () => out[1], 10_000);
      expect(line).toMatch(/^HOTPATH_BUILD_MISMATCH /);
      expect(line).toContain(`weft build ${BUILD.id}`);
      expect(line).toContain("restart the agent");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
