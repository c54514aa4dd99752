// The lab's namespaces take what runs inside them along when they go: a process whose stop never
// came (an agent left by a test worker that exited mid-hook) must not keep a namespace, its
// devices and its CPU use alive after the namespace's name is gone.
import { execFileSync, spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { Netns, sweepOrphans } from "../../src/lab/netns.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("lab namespaces", () => {
  it("destroy() kills the processes still running inside", async () => {
    const ns = await Netns.create("nsk");
    const [cmd, ...argv] = ns.wrap(["sleep", "60"]);
    const child = spawn(cmd, argv, { stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once("exit", (_code, signal) => r(signal)));
    // Wait until the process is inside (ip netns exec has switched and exec'd sleep).
    for (let t = 0; t < 50 && !(await ns.pids()).includes(child.pid!); t++) await new Promise((r) => setTimeout(r, 20));
    expect(await ns.pids()).toContain(child.pid);
    await ns.destroy();
    expect(await exited).toBe("SIGKILL");
  });
});

describe.skipIf(!canUseNetns())("lab namespaces of a maker that died without cleaning up", () => {
  it("are swept, with what runs inside; those of a live maker stay", async () => {
    // A pid that has just exited stands for a tool killed by SIGKILL or a native crash.
    const gone = spawn("true");
    await new Promise((r) => gone.once("exit", r));
    const orphan = `weft-orphan-${gone.pid}-1`;
    const kept = `weft-orphan-${process.pid}-${Date.now()}`;
    try {
      execFileSync("ip", ["netns", "add", orphan]);
      execFileSync("ip", ["netns", "add", kept]);
      const sleeper = spawn("ip", ["netns", "exec", orphan, "sleep", "60"], { stdio: "ignore" });
      const killed = new Promise<NodeJS.Signals | null>((r) => sleeper.once("exit", (_c, signal) => r(signal)));
      for (let t = 0; t < 50 && !netnsPids(orphan).includes(sleeper.pid!); t++)
        await new Promise((r) => setTimeout(r, 20));
      expect(netnsPids(orphan)).toContain(sleeper.pid);
      expect(sweepOrphans()).toContain(orphan);
      expect(await killed).toBe("SIGKILL");
      const names = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
      expect(names).not.toContain(orphan);
      expect(names).toContain(kept);
    } finally {
      for (const name of [orphan, kept]) execFileSync("sh", ["-c", `ip netns del ${name} 2>/dev/null || true`]);
    }
  });
});

function netnsPids(name: string): number[] {
  return execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" }).split(/\s+/).filter(Boolean).map(Number);
}
