// weft bench decides after a failed run whether an agent's exit was the cause (BENCH_AGENT_GONE,
// which ends the run): every agent of the setup counts, its IPv6 lab's too. Real processes stand
// for the agents; the rest of the lab is not needed for the decision.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { BenchLab, checkAgents } from "../../src/bench/topology.js";
import type { LabAgents } from "../../src/lab/agents.js";
import type { LabCluster } from "../../src/lab/cluster.js";

const started: ChildProcess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) p.kill("SIGKILL");
});

/** A running process, or one that has already exited (as an agent that died). */
async function agentProcess(exited: boolean): Promise<ChildProcess> {
  const p = spawn(exited ? "true" : "sleep", exited ? [] : ["60"], { stdio: "ignore" });
  started.push(p);
  if (exited) await once(p, "exit");
  return p;
}

/** A lab of two hosts whose agents are these processes. */
const labOf = (processes: ChildProcess[], family: 4 | 6) =>
  new BenchLab(
    { name: "vxlan", backend: "vxlan" },
    {},
    {} as LabCluster,
    { agents: processes.map((p, i) => ({ host: { name: `h${i + 1}` }, process: p })) } as unknown as LabAgents,
    family,
  );

describe("checkAgents", () => {
  it("passes while every agent of both labs runs", async () => {
    const lab = labOf([await agentProcess(false), await agentProcess(false)], 4);
    lab.ipv6 = labOf([await agentProcess(false), await agentProcess(false)], 6);
    expect(() => checkAgents(lab)).not.toThrow();
  });

  it("fails with BENCH_AGENT_GONE when an agent of the IPv6 lab has exited", async () => {
    const lab = labOf([await agentProcess(false), await agentProcess(false)], 4);
    lab.ipv6 = labOf([await agentProcess(false), await agentProcess(true)], 6);
    expect(() => checkAgents(lab)).toThrow(expect.objectContaining({ code: "BENCH_AGENT_GONE" }));
  });
});
