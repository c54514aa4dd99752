// `weft demo --once` as a user runs it (the built CLI, as root): with --dual-stack, three hosts
// with real wasm-vxlan agents lease a subnet of each family, every pod pair pings over IPv4 and
// IPv6, and nothing is left behind. A backend that cannot carry IPv6 is refused before anything
// is built. Ctrl-C while the agents start ends it with 130 and no error, nothing left behind.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { leftovers, pids, procFile, runCli } from "../support/cli-run.js";
import { canUseNetns } from "../support/netns.js";

const work = mkdtempSync(join(tmpdir(), "weft-demo-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.runIf(canUseNetns())("weft demo", () => {
  it("--dual-stack --once: each host leases both families, every pair of hosts pings over IPv4 and IPv6, nothing left behind", async () => {
    const r = await runCli(work, "dual", ["demo", "--dual-stack", "--once"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(leftovers(r)).toEqual([]);
    const subnets = [...r.stdout.matchAll(/: subnet (198\.19\.\d+\.0\/24) and (2001:2:0:[89a-f][0-9a-f]{3}::\/64),/g)];
    expect(subnets, r.stdout).toHaveLength(3);
    expect(new Set(subnets.map((m) => m[1])).size).toBe(3);
    expect(new Set(subnets.map((m) => m[2])).size).toBe(3);
    const pings = [...r.stdout.matchAll(/^\[demo\] ping \S+ -> \S+ \((\S+)\): (\d+)\/(\d+)/gm)];
    const byFamily = (v6: boolean) => pings.filter((m) => m[1].includes(":") === v6);
    // Three hosts: six ordered pairs, each once per family, every echo answered.
    for (const v6 of [false, true]) {
      expect(byFamily(v6), r.stdout).toHaveLength(6);
      for (const m of byFamily(v6)) expect(`${m[2]}/${m[3]}`, m[0]).toBe("3/3");
    }
    expect(r.stdout).toContain("every host reaches every other host's pods over IPv4 and IPv6");
  }, 300_000);

  it("Ctrl-C while the agents start: exit 130 without an error, everything removed", async () => {
    const run = runCli(work, "sigint", ["demo", "--once", "--backend", "vxlan"]);
    const sent = await interruptOnceAgentsStart(join(work, "sigint-tmp"), run);
    const r = await run;
    expect(sent, r.stdout + r.stderr).toBe(true);
    expect(r.code, r.stdout + r.stderr).toBe(130);
    expect(r.stdout).toContain("stopping: agents leave the cluster");
    expect(r.stderr).not.toContain("weft:");
    expect(leftovers(r)).toEqual([]);
  }, 180_000);

  it("--dual-stack refuses a backend that cannot carry IPv6, building nothing", async () => {
    const r = await runCli(work, "udp", ["demo", "--dual-stack", "--once", "--backend", "udp"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("CLI_DEMO_BAD_BACKEND");
    expect(leftovers(r)).toEqual([]);
  }, 60_000);
});

/**
 * Sends SIGINT to the demo run with TMPDIR `tmp` (as a terminal's Ctrl-C, but to the demo only)
 * once its agents are started (their logs exist), unless the run ends first. Whether it was sent.
 */
async function interruptOnceAgentsStart(tmp: string, run: Promise<unknown>): Promise<boolean> {
  let ended = false;
  void run.finally(() => (ended = true));
  while (!ended) {
    const pid = demoPid(tmp);
    const labDir = readdirSync(tmp).find((d) => d.startsWith("weft-lab-") && !d.startsWith("weft-lab-cni-"));
    if (pid !== undefined && labDir && existsSync(join(tmp, labDir, "host1", "agent.log"))) {
      process.kill(pid, "SIGINT");
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** The `weft demo` process whose TMPDIR is `tmp` (its agents inherit the variable, not the command). */
function demoPid(tmp: string): number | undefined {
  return pids().find(
    (pid) =>
      procFile(pid, "cmdline")?.split("\0")[2] === "demo" &&
      procFile(pid, "environ")?.split("\0").includes(`TMPDIR=${tmp}`),
  );
}
