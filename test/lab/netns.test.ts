// The lab's namespaces take what runs inside them along when they go: a process whose stop never
// came (an agent left by a test worker that exited mid-hook) must not keep a namespace, its
// devices and its CPU use alive after the namespace's name is gone.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { Netns } from "../../src/lab/netns.js";
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
