// CPU accounting of bench:e2e and bench:profile, whose own process runs the dataplanes: the
// children it reaps (iperf3, perf) must not count as the dataplanes' CPU.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { measureOwnCpu } from "../../src/bench/cpu.js";

/** A child that spends `seconds` of its own CPU time in user mode, then exits. */
const burner = (seconds: number) =>
  new Promise<void>((resolve, reject) => {
    const c = spawn(process.execPath, ["-e", `while (process.cpuUsage().user < ${seconds * 1e6}) {}`], {
      stdio: "ignore",
    });
    c.on("error", reject);
    c.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`burner exited with ${code}`))));
  });

describe("measureOwnCpu", () => {
  it("leaves out a child reaped inside the window, which the machine's counters still see", async () => {
    const { cpu } = await measureOwnCpu(() => burner(1));
    expect(cpu.agentsUser + cpu.agentsSystem).toBeLessThan(0.3);
    // The child did burn its second (tick-sampled machine counters, so not to the tick).
    expect(cpu.machineUser).toBeGreaterThan(0.7);
  });

  it("counts this process's own work", async () => {
    const { cpu } = await measureOwnCpu(async () => {
      const t = process.cpuUsage().user;
      while (process.cpuUsage().user - t < 500_000) {}
    });
    expect(cpu.agentsUser + cpu.agentsSystem).toBeGreaterThan(0.4);
  });
});
